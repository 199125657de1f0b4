"""Truncated and bit-flipped GeoTIFFs: one line and exit 2 in every command that reads them, no output.

`vectorize` on a class map with damaged tiles wrote an empty GeoPackage with exit 0 before (GDAL's
polygonize skips tiles it cannot read); `evaluate` and `quality-mask` stopped in a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.integration.test_cli_errors import assert_refused, run_cli, snapshot

PROFILE = {"driver": "GTiff", "width": 512, "height": 512, "dtype": "uint8", "crs": "EPSG:32616",
           "transform": from_origin(600_000, 4_000_512, 1, 1), "tiled": True, "blockxsize": 64, "blockysize": 64,
           "compress": "deflate"}  # fmt: skip


def damaged(path: Path, how: str) -> Path:
    """``path`` cut at 60 % of its bytes, or with bytes flipped in the middle of its compressed tiles."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: int(len(data) * 0.6)]
    else:
        for i in range(len(data) // 2, len(data) // 2 + 2000, 7):
            data[i] ^= 0xFF
    target = path.with_name(f"{how}_{path.name}")
    target.write_bytes(bytes(data))
    return target


@pytest.fixture
def class_map(tmp_path: Path) -> Path:
    blocks = np.random.default_rng(0).integers(0, 3, (64, 64), dtype=np.uint8)
    path = tmp_path / "inputs" / "classes.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", count=1, nodata=255, **PROFILE) as out:
        out.write(np.kron(blocks, np.ones((8, 8), dtype=np.uint8)), 1)
    return path


@pytest.fixture
def mosaic(tmp_path: Path) -> Path:
    path = tmp_path / "inputs" / "mosaic.tif"
    path.parent.mkdir(exist_ok=True)
    with rasterio.open(path, "w", count=3, **PROFILE) as out:
        out.write(np.random.default_rng(1).integers(0, 256, (3, 512, 512), dtype=np.uint8))
    return path


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
@pytest.mark.parametrize("command", ["vectorize", "evaluate prediction", "evaluate labels", "quality-mask"])
def test_damaged_inputs_are_one_line(tmp_path: Path, class_map: Path, mosaic: Path, command: str, how: str) -> None:
    if command == "quality-mask":
        bad = damaged(mosaic, how)
        args = ["quality-mask", bad, "--out", tmp_path / "quality.tif", "--progress", "none"]
    elif command == "vectorize":
        bad = damaged(class_map, how)
        args = ["vectorize", bad, "-o", tmp_path / "polygons.gpkg", "--progress", "none"]
    elif command == "evaluate prediction":
        bad = damaged(class_map, how)
        args = ["evaluate", bad, class_map, "--json", tmp_path / "scores.json"]
    else:
        bad = damaged(class_map, how)
        args = ["evaluate", class_map, bad, "--json", tmp_path / "scores.json"]
    before = snapshot(tmp_path)
    result = run_cli(tmp_path, *args)
    assert_refused(result, bad.name, ("re-copy", "re-export"), before, snapshot(tmp_path))


def test_a_later_run_removes_what_a_killed_run_left(tmp_path: Path, class_map: Path) -> None:
    """SIGKILL cannot be caught: its temporary files stay until the next run that writes the same output."""
    out = tmp_path / "polygons.gpkg"
    stale = tmp_path / ".polygons.gpkg.k1ll3d.partial"
    stale.write_bytes(b"half a GeoPackage")
    other = tmp_path / ".other.gpkg.abc.partial"  # another output's: not ours to remove
    other.write_bytes(b"someone else's")
    result = run_cli(tmp_path, "vectorize", class_map, "-o", out, "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0 and not stale.exists() and other.exists()
