"""`geoseg infer`'s bad-input contract (DESIGN §3, issue 3 "Bad input"), checked by running the real command.

Every case makes one thing wrong in an otherwise valid run and expects exit code 2, exactly one line on
stderr (no traceback) that names the offending file or option and says what to do, and nothing written:
no output, no output folder, no temporary file; an output that was already there is unchanged byte for
byte. A fault found only while reading blocks (a truncated mosaic) and an interrupted run (SIGINT) may
leave the output folder, but never a class map, polygons, areas or a `.partial` file in it.
Each case is a subprocess (several seconds of imports), so the bundles are built once per module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from tests.conftest import make_random_bundle, noise_mosaic, shared_data, signal_once_ready
from tests.integration.test_cli_errors import CLI_TIMEOUT_S, assert_refused, cli_env, run_cli, snapshot

NB_IMAGE = ("new_brunswick", "23322E759967N_clipped_1m_2of2.tif")  # 3-band uint8, 326 × 482, EPSG:2953
ATLANTA = ("spacenet_atlanta", "sample_geotiff.tif")  # 1-band uint16
OUT = Path("out") / "run"  # relative to the run's cwd (tmp_path); its parent must not appear either
OUTPUT_PATTERNS = ("*_classes.tif", "*_confidence.tif", "*_polygons.gpkg", "*_areas.json", "*.partial")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        "rgb128": make_random_bundle(root / "rgb128", [1, 2, 3], tile=128, overlap=16),
        "rgb256": make_random_bundle(root / "rgb256", [1, 2, 3], tile=256, overlap=32),
    }


def infer_refused(
    tmp_path: Path, mosaic: Path, bundle: Path, names: str | Path, fix: tuple[str, ...], *extra: str | Path
) -> str:
    before = snapshot(tmp_path)
    result = infer(tmp_path, mosaic, bundle, *extra)
    return assert_refused(result, names, fix, before, snapshot(tmp_path))


def infer(cwd: Path, mosaic: Path, bundle: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli(cwd, "infer", mosaic, "--model", bundle, "--out-dir", OUT, "--progress", "none", *extra)


def finished_looking(folder: Path) -> list[str]:
    """Outputs (or temporary files) in ``folder``; hidden ones included."""
    return sorted(p.name for pattern in OUTPUT_PATTERNS for p in folder.glob(pattern)) if folder.exists() else []


def one_line_exit_2(result: subprocess.CompletedProcess[str], names: str | Path, fix: str) -> None:
    context = f"exit {result.returncode}\n--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout[-2000:]}"
    assert result.returncode == 2, context
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: "), context
    assert str(names) in lines[0] and fix.lower() in lines[0].lower(), context


# --- the mosaic and the bundle ---------------------------------------------------------------------


def test_bundle_bands_do_not_fit_the_mosaic(tmp_path: Path, bundles: dict[str, Path]) -> None:
    mosaic = shared_data(*ATLANTA)
    line = infer_refused(tmp_path, mosaic, bundles["rgb128"], bundles["rgb128"], ("1 band",))
    assert mosaic.name in line and "[1, 2, 3]" in line


def test_unreadable_mosaic(tmp_path: Path, bundles: dict[str, Path]) -> None:
    mosaic = tmp_path / "random.tif"
    mosaic.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    infer_refused(tmp_path, mosaic, bundles["rgb128"], mosaic, ("complete GeoTIFF",))


def test_truncated_mosaic_fails_while_reading_and_leaves_no_output(tmp_path: Path, bundles: dict[str, Path]) -> None:
    """The header is intact, so the fault shows only when blocks are read, after some were written."""
    data = shared_data(*NB_IMAGE).read_bytes()
    mosaic = tmp_path / "truncated.tif"
    mosaic.write_bytes(data[: int(len(data) * 0.6)])
    result = infer(tmp_path, mosaic, bundles["rgb128"], "--block-size", "128")
    one_line_exit_2(result, mosaic, "re-copy")
    assert "see previous exception" not in result.stderr.lower(), "the message should carry GDAL's own reason"
    assert finished_looking(tmp_path / OUT) == [], result.stderr
    assert not (tmp_path / OUT).exists() or not any((tmp_path / OUT).iterdir()), result.stderr


def test_missing_bundle(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    infer_refused(tmp_path, shared_data(*NB_IMAGE), missing, missing, ("geoseg train",))


def test_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    folder = tmp_path / "not_a_bundle"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model\n")
    infer_refused(tmp_path, shared_data(*NB_IMAGE), folder, folder, ("geoseg.json",))


# --- options ---------------------------------------------------------------------------------------


def test_aoi_that_does_not_overlap(tmp_path: Path, bundles: dict[str, Path]) -> None:
    """A ~1 km square in northern Italy (EPSG:4326) against a New Brunswick mosaic (EPSG:2953)."""
    aoi = tmp_path / "far_aoi.geojson"
    ring = [[10.0, 45.0], [10.01, 45.0], [10.01, 45.01], [10.0, 45.01], [10.0, 45.0]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    infer_refused(tmp_path, shared_data(*NB_IMAGE), bundles["rgb128"], aoi, ("overlap",), "--aoi", aoi)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible, so --device cuda is valid here")
def test_cuda_without_gpu(tmp_path: Path, bundles: dict[str, Path]) -> None:
    infer_refused(
        tmp_path, shared_data(*NB_IMAGE), bundles["rgb128"], "--device", ("--device cpu",), "--device", "cuda"
    )


@pytest.mark.parametrize(("value", "fix"), [("nonsense", "tcp://host:8786"), ("tcp://127.0.0.1:1", "dask scheduler")])
def test_scheduler_that_is_no_name_or_answers_nothing(tmp_path: Path, bundles: dict[str, Path], value: str,
                                                      fix: str) -> None:  # fmt: skip
    """A typo gave Dask's traceback; a dead address left an empty --out-dir behind."""
    infer_refused(tmp_path, shared_data(*NB_IMAGE), bundles["rgb128"], value, (fix,), "--scheduler", value)


def test_unknown_precision(tmp_path: Path, bundles: dict[str, Path]) -> None:
    line = infer_refused(
        tmp_path, shared_data(*NB_IMAGE), bundles["rgb128"], "--precision", ("fp32",), "--precision", "nonsense"
    )
    assert "nonsense" in line


@pytest.mark.parametrize("option, value", [("--tile", "10"), ("--overlap", "-1"), ("--scheduler", None)])
def test_option_refused_by_the_parser(tmp_path: Path, bundles: dict[str, Path], option: str, value: str | None) -> None:
    """Out of range, or missing its value: click's usage errors follow the same one-line contract."""
    extra = [option] if value is None else [option, value]
    infer_refused(tmp_path, shared_data(*NB_IMAGE), bundles["rgb128"], option, ("--help",), *extra)


@pytest.mark.parametrize(
    ("extra", "names", "fix"),
    [
        (["--tile", "100000"], "--tile", "32-4096 px"),  # 28 GiB of windows before
        (["--tile", "33", "--overlap", "32"], "--overlap", "at most 3/4 of the tile (24)"),  # 77 k windows
        (["--overlap", "100"], "--overlap", "at most 3/4 of the tile (96)"),
    ],
)
def test_absurd_window_grids_are_refused(tmp_path: Path, bundles: dict[str, Path], extra: list[str], names: str,
                                         fix: str) -> None:  # fmt: skip
    infer_refused(tmp_path, shared_data(*NB_IMAGE), bundles["rgb128"], names, (fix,), *extra)


@pytest.mark.parametrize("extra", [["--overlap", "128"], ["--tile", "96", "--overlap", "200"]])
def test_overlap_not_below_tile(tmp_path: Path, bundles: dict[str, Path], extra: list[str]) -> None:
    """The bundle's tile is 128; an overlap of a whole tile or more would never advance."""
    infer_refused(tmp_path, shared_data(*NB_IMAGE), bundles["rgb128"], "--overlap", ("less than the tile",), *extra)


# --- outputs ---------------------------------------------------------------------------------------


def test_output_folder_under_a_regular_file(tmp_path: Path, bundles: dict[str, Path]) -> None:
    """Root may write anywhere, so the folder is made unwritable by putting a file where its parent goes."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    out = blocker / "results"
    before = snapshot(tmp_path)
    result = run_cli(
        tmp_path, "infer", shared_data(*NB_IMAGE), "--model", bundles["rgb128"], "--out-dir", out, "--progress", "none"
    )
    assert_refused(result, out, ("--out-dir",), before, snapshot(tmp_path))


@pytest.mark.parametrize("suffix", ["_classes.tif", "_polygons.gpkg", "_areas.json"])
def test_existing_output_without_overwrite(tmp_path: Path, bundles: dict[str, Path], suffix: str) -> None:
    mosaic = shared_data(*NB_IMAGE)
    existing = OUT / f"{mosaic.stem}{suffix}"
    (tmp_path / existing).parent.mkdir(parents=True)
    (tmp_path / existing).write_bytes(b"an earlier result\n")
    infer_refused(tmp_path, mosaic, bundles["rgb128"], existing, ("--overwrite",))
    assert (tmp_path / existing).read_bytes() == b"an earlier result\n"


def test_existing_outputs_replaced_with_overwrite(tmp_path: Path, bundles: dict[str, Path]) -> None:
    mosaic = shared_data(*NB_IMAGE)
    out = tmp_path / OUT
    out.mkdir(parents=True)
    paths = [out / f"{mosaic.stem}{suffix}" for suffix in ("_classes.tif", "_polygons.gpkg", "_areas.json")]
    for path in paths:
        path.write_bytes(b"an earlier result\n")
    result = infer(tmp_path, mosaic, bundles["rgb128"], "--overwrite")
    assert result.returncode == 0, result.stderr
    assert all(p.read_bytes() != b"an earlier result\n" for p in paths)
    with rasterio.open(paths[0]) as classes, rasterio.open(mosaic) as src:
        assert (classes.width, classes.height, classes.crs) == (src.width, src.height, src.crs)
    assert json.loads(paths[2].read_text())["classes"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temporary file left


# --- interruption ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_sigint_leaves_no_finished_looking_output(tmp_path: Path, bundles: dict[str, Path], sent: int) -> None:
    """SIGINT, or SIGTERM as timeout and SLURM send, once the first block is written: exit 130, and no
    output or temporary file in the folder."""
    from geoseg.demo_data import make_survey

    mosaic = make_survey(tmp_path / "survey", size=2048).image  # 16 blocks of 512 px, about a second each
    command = [sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundles["rgb256"])]
    command += ["--out-dir", str(OUT), "--block-size", "512", "--scheduler", "sync", "--progress", "json"]
    code, seen, rest = signal_once_ready(command, tmp_path, "segment", 1, sent, env=cli_env(), timeout_s=CLI_TIMEOUT_S)
    total = json.loads(seen[-1])["total"]
    stderr = "".join(seen) + rest
    assert code == 130, f"exit {code}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr.splitlines()[-1], stderr
    done = [json.loads(line)["done"] for line in stderr.splitlines() if line.startswith('{"stage": "segment"')]
    assert max(done) < total, f"the run finished the class map before the signal landed:\n{stderr}"
    assert finished_looking(tmp_path / OUT) == [], stderr


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_polygons_are_made_keeps_the_class_map_and_nothing_half_written(
    tmp_path: Path, bundles: dict[str, Path], sent: int
) -> None:
    """The class map is finished when polygons start (a noisy 1536 px map, coverage-simplified: seconds of
    work). A signal then: exit 130, the class map kept whole, no polygons, areas or temporary file."""
    mosaic = noise_mosaic(tmp_path / "noise.tif", 1536)
    command = [sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundles["rgb128"]),
               "--out-dir", str(OUT), "--simplify", "0.2", "--progress", "json"]  # fmt: skip
    code, seen, rest = signal_once_ready(command, tmp_path, "polygons", 0, sent, env=cli_env(), timeout_s=CLI_TIMEOUT_S)
    stderr = "".join(seen) + rest
    assert code == 130, f"exit {code}\n{stderr}"
    assert "Traceback" not in stderr and "interrupted" in stderr.splitlines()[-1], stderr
    assert '{"stage": "polygons", "done": 1' not in stderr, f"the polygons finished before the signal:\n{stderr}"
    assert finished_looking(tmp_path / OUT) == ["noise_classes.tif"], stderr
    with rasterio.open(tmp_path / OUT / "noise_classes.tif") as ds:
        assert (ds.width, ds.height) == (1536, 1536) and ds.read(1).max() < 255
