"""Every output is checked before the work starts: no command prints its results and then dies writing them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.conftest import make_random_bundle, shared_data, write_config
from tests.integration.test_cli_errors import assert_refused, run_cli, snapshot

NB_TILE = ("new_brunswick", "23322E759967N_clipped_1m_2of2.tif")


@pytest.fixture
def class_map(tmp_path: Path) -> Path:
    path = tmp_path / "classes.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32616", transform=from_origin(600_000, 4_000_064, 1, 1)) as out:  # fmt: skip
        out.write(np.random.default_rng(0).integers(0, 3, (1, 64, 64), dtype=np.uint8))
    return path


def command(name: str, target: Path, class_map: Path, tmp_path: Path) -> list:
    if name == "evaluate --json":
        return ["evaluate", class_map, class_map, "--json", target]
    if name == "vectorize -o":
        return ["vectorize", class_map, "-o", target, "--progress", "none"]
    if name == "quality-mask --out":
        return ["quality-mask", shared_data(*NB_TILE), "--out", target, "--progress", "none"]
    if name in ("drift --json", "drift --plot"):
        bundle = make_random_bundle(tmp_path / "bundle", [1, 2, 3], n_classes=2, tile=128, overlap=16)
        return ["drift", shared_data(*NB_TILE), "--model", bundle, "--no-model", name.split()[1], target]
    config = write_config(tmp_path / "train.yaml", f"""
data: {{images: [{shared_data(*NB_TILE)}], labels: {class_map}, classes: {{0: a, 1: b, 2: c}}}}
model: {{encoder: tu-efficientnet_lite0, weights: null}}
""")  # fmt: skip
    return ["train", config, "--out", target, "--progress", "none"]


@pytest.mark.parametrize("where", ["a folder", "under a file"])
@pytest.mark.parametrize(
    "name", ["evaluate --json", "vectorize -o", "quality-mask --out", "drift --json", "drift --plot", "train --out"]
)
def test_outputs_that_cannot_be_written_are_refused_first(tmp_path: Path, class_map: Path, name: str,
                                                          where: str) -> None:  # fmt: skip
    suffix = {"vectorize -o": ".gpkg", "quality-mask --out": ".tif", "drift --plot": ".png", "train --out": ""}
    name_of_output = "output" + suffix.get(name, ".json")
    if where == "a folder":
        if name == "train --out":
            pytest.skip("a bundle is a folder: train --out names one")
        target = tmp_path / name_of_output
        target.mkdir()
    else:
        (tmp_path / "a_file").write_text("not a folder\n")
        target = tmp_path / "a_file" / name_of_output
    args = command(name, target, class_map, tmp_path)
    before = snapshot(tmp_path)
    result = run_cli(tmp_path, *args)
    hint = "name the file" if where == "a folder" else "is a file, not a folder"
    assert_refused(result, target.name, (hint,), before, snapshot(tmp_path))
    assert result.stdout == ""  # no table or verdict printed before the refusal
