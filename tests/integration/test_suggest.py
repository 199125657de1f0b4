"""`geoseg suggest` on real shared rasters: windows free of labels, nodata and masked pixels, ranked by the
documented score (mean of 1 - the chosen class's blended probability), reproducible with a seed; bad input
gets one line and exit code 2, with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely
from rasterio.windows import Window

import geoseg
from geoseg.errors import InputError
from geoseg.infer.run import InferOptions, segment_mosaic
from geoseg.io.raster import read_info, read_window
from geoseg.io.vector import read_region
from tests.conftest import make_random_bundle, shared_data
from tests.integration.test_cli_errors import cli_env

ROOT = Path(__file__).resolve().parents[2]
LANDSAT = ("landsat_collar", "RGB.byte.tif")  # a nodata collar round a rotated footprint
NB_TILE = ("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
NB_LABELS = ("new_brunswick", "BakerLake_2017_clipped.gpkg")
BUILDINGS = ("building_tiles", "tiled_image_1.tif")
BUILDING_LABELS = ("building_tiles", "tiled_label_1.tif")  # 0/1, tagged nodata=0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_bundle(tmp_path_factory.mktemp("suggest") / "bundle", [1, 2, 3], n_classes=4, tile=64,
                              overlap=8)  # fmt: skip


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_windows_hold_no_nodata_and_are_ranked_by_their_mean_uncertainty(tmp_path: Path, bundle: Path) -> None:
    mosaic = shared_data(*LANDSAT)
    model = geoseg.load_model(bundle, device="cpu")
    frame = geoseg.suggest(mosaic, model, 8, size=64, seed=1)
    assert list(frame["rank"]) == list(range(1, 9))
    scores = list(frame["score"])
    assert scores == sorted(scores, reverse=True)
    # the score, recomputed from the confidence map `geoseg infer --confidence` writes
    confidence_path = tmp_path / "confidence.tif"
    segment_mosaic(mosaic, bundle, tmp_path / "classes.tif", InferOptions(device="cpu", confidence=True),
                   confidence_path=confidence_path)  # fmt: skip
    with rasterio.open(mosaic) as ds, rasterio.open(confidence_path) as conf:
        all_confidence = conf.read(1)
        _, valid = read_window(ds, [1, 2, 3], Window(0, 0, ds.width, ds.height))
    for r, c, score in zip(frame["row"], frame["col"], frame["score"], strict=True):
        assert valid[r : r + 64, c : c + 64].all(), "a window holds nodata"
        percent = all_confidence[r : r + 64, c : c + 64].astype(float)
        assert score == pytest.approx((1 - percent / 100).mean(), abs=1e-9)
    assert (~valid).mean() > 0.2  # the collar is there to be avoided
    # rank 1 is the best of every qualifying window on the same (seeded) grid of candidates
    top, left = int(frame["row"].min() % 32), int(frame["col"].min() % 32)
    best = max(
        (1 - all_confidence[r : r + 64, c : c + 64] / 100).mean()
        for r in range(top, valid.shape[0] - 63, 32)
        for c in range(left, valid.shape[1] - 63, 32)
        if valid[r : r + 64, c : c + 64].all()
    )
    assert scores[0] == pytest.approx(best, abs=1e-9)
    boxes = list(frame.geometry)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_windows_keep_off_labelled_and_masked_pixels(tmp_path: Path, bundle: Path) -> None:
    mosaic, labels = shared_data(*NB_TILE), shared_data(*NB_LABELS)
    grid = read_info(mosaic).grid
    left, bottom, right, top = grid.bounds
    masked_area = shapely.box(left, bottom, (left + right) / 2, top)  # the west half: say, blurred
    gpd.GeoDataFrame(geometry=[masked_area], crs=grid.crs).to_file(tmp_path / "mask.gpkg")
    model = geoseg.load_model(bundle, device="cpu")
    frame = geoseg.suggest(mosaic, model, 5, labels=[labels], mask=tmp_path / "mask.gpkg", size=24, seed=0)
    labelled = read_region(labels, grid)
    assert 0.2 < labelled.mean() < 0.5
    assert len(frame) >= 1
    for r, c in zip(frame["row"], frame["col"], strict=True):
        assert not labelled[r : r + 24, c : c + 24].any(), "a window holds labelled pixels"
    assert not frame.geometry.intersection(masked_area).area.any(), "a window reaches into the mask"


def test_label_raster_values_say_which_pixels_are_labelled(bundle: Path) -> None:
    """building_tiles tags 0 as nodata though it means background: by default only roofs count as labelled,
    and with --label-values 0,1 the whole tile is labelled, leaving nothing to suggest."""
    mosaic, labels = shared_data(*BUILDINGS), shared_data(*BUILDING_LABELS)
    model = geoseg.load_model(bundle, device="cpu")
    frame = geoseg.suggest(mosaic, model, 4, labels=[labels], size=32, strategy="random")
    with rasterio.open(labels) as ds:
        roofs = ds.read(1) == 1
    assert roofs.mean() > 0.01
    for r, c in zip(frame["row"], frame["col"], strict=True):
        assert not roofs[r : r + 32, c : c + 32].any()
    assert frame["score"].isna().all()  # random: the model did not run
    with pytest.raises(InputError, match="no window that is free of labels"):
        geoseg.suggest(mosaic, model, 4, labels=[labels], label_values=[0, 1], size=32, strategy="random")


def test_the_same_seed_gives_the_same_windows_and_the_output_is_a_geopackage(tmp_path: Path, bundle: Path) -> None:
    mosaic = shared_data(*NB_TILE)
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.gpkg"
        done = _run("suggest", mosaic, "--model", bundle, "-n", 4, "--size", "16m", "--seed", seed, "-o", out,
                    "--progress", "json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "4 windows of 32 px" in done.stdout  # 16 m at 0.5 m a pixel
        assert json.loads(done.stderr.strip().splitlines()[-1])["stage"] == "rank windows"
        runs.append(gpd.read_file(out, layer="to_label"))
    a, b, c = runs
    assert a.crs == read_info(mosaic).grid.crs
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert all(x.equals(y) for x, y in zip(a.geometry, b.geometry, strict=True))
    assert (a["row"] % 16).iloc[0] != (c["row"] % 16).iloc[0] or (a["col"] % 16).iloc[0] != (c["col"] % 16).iloc[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no model", "not found"),
        ("class map", "is a geoseg class or confidence map"),
        ("n zero", "-n must be at least 1"),
        ("too big", "smaller than one 2048 px window"),
        ("bad size", "--size must be pixels"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2_and_writes_nothing(
    tmp_path: Path, bundle: Path, case: str, expected: str
) -> None:
    mosaic = shared_data(*NB_TILE)
    args: list[str | Path] = [mosaic, "--model", bundle]
    if case == "no model":
        args = [mosaic, "--model", tmp_path / "missing_model"]
    elif case == "class map":
        segment_mosaic(mosaic, bundle, tmp_path / "classes.tif", InferOptions(device="cpu"))
        args = [tmp_path / "classes.tif", "--model", bundle]
    elif case == "n zero":
        args += ["-n", "0"]
    elif case == "too big":
        args += ["--size", "2048"]
    elif case == "bad size":
        args += ["--size", "ten metres"]
    out = tmp_path / "out" / "to_label.gpkg"
    out.parent.mkdir()
    done = _run("suggest", *args, "-o", out, "--progress", "none")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert list(out.parent.iterdir()) == []
