"""`geoseg infer` on real and generated mosaics: exact grid, nodata, AOI, and invariance to blocks and schedulers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio import features
from rasterio.enums import ColorInterp

from geoseg.demo_data import make_survey
from geoseg.infer.run import InferOptions, segment_mosaic
from geoseg.progress import Progress, ProgressMode
from tests.conftest import make_random_bundle, shared_data

QUIET = Progress(ProgressMode.none)


def infer_cli(mosaic: Path, bundle: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir", str(out)]
    return subprocess.run([*command, "--progress", "none", *extra], capture_output=True, text=True, check=False)


def read_classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def assert_same_grid(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert x.crs == y.crs
        assert x.transform == y.transform
        assert (x.width, x.height) == (y.width, y.height)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory):
    return make_survey(tmp_path_factory.mktemp("survey"), size=1280, seed=7)


@pytest.fixture(scope="module")
def rgb_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_bundle(tmp_path_factory.mktemp("b") / "rgb", [1, 2, 3], n_classes=4, tile=256, overlap=32)


@pytest.mark.slow
def test_class_map_is_identical_for_block_sizes_and_schedulers(tmp_path: Path, survey, rgb_bundle: Path) -> None:
    runs = {
        "4096 sync": InferOptions(block_size=4096, scheduler="sync"),
        "1024 sync": InferOptions(block_size=1024, scheduler="sync"),
        "1024 threads": InferOptions(block_size=1024, scheduler="threads", workers=2),
        "1024 distributed": InferOptions(block_size=1024, scheduler="local", workers=2),
    }
    maps = {}
    for name, options in runs.items():
        out = tmp_path / f"{name.replace(' ', '_')}.tif"
        segment_mosaic(survey.image, rgb_bundle, out, options, progress=QUIET)
        maps[name] = read_classes(out)
    reference = maps["4096 sync"]
    assert len(np.unique(reference[reference != 255])) > 1  # a seeded model that predicts more than one class
    for name, classes in maps.items():
        assert np.array_equal(classes, reference), name


def test_cli_writes_the_three_outputs_on_the_input_grid(tmp_path: Path, survey, rgb_bundle: Path) -> None:
    run = infer_cli(survey.image, rgb_bundle, tmp_path, "--confidence")
    assert run.returncode == 0, run.stderr
    assert "Loading weights" not in run.stdout  # huggingface_hub's print, kept off the results
    stem = survey.image.stem
    classes = tmp_path / f"{stem}_classes.tif"
    assert_same_grid(classes, survey.image)
    assert_same_grid(tmp_path / f"{stem}_confidence.tif", survey.image)
    with rasterio.open(classes) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert ds.profile["tiled"] and ds.compression is not None and ds.overviews(1)
        assert ds.colormap(1)[1][:3] != (0, 0, 0)
        names = [c["name"] for c in json.loads(ds.tags()["GEOSEG_CLASSES"])]
        assert names == ["class 1", "class 2", "class 3", "class 4"]
        predicted = ds.read(1)
    with rasterio.open(survey.image) as src:
        valid = src.dataset_mask() > 0
    assert (predicted[~valid] == 255).all() and (predicted[valid] != 255).all()
    polygons = gpd.read_file(tmp_path / f"{stem}_polygons.gpkg")
    assert polygons.crs == rasterio.open(survey.image).crs
    assert {"class_id", "class_name", "area"} <= set(polygons.columns)
    areas = json.loads((tmp_path / f"{stem}_areas.json").read_text())
    assert sum(c["pixels"] for c in areas["classes"]) == int(valid.sum())
    assert sum(c["percent"] for c in areas["classes"]) == pytest.approx(100.0)


def test_single_band_uint16_keeps_grid_and_nodata(tmp_path: Path) -> None:
    image = shared_data("spacenet_atlanta", "sample_geotiff.tif")
    bundle = make_random_bundle(tmp_path / "pan", [1], n_classes=2, tile=256, overlap=32, scale=(100.0, 1500.0))
    out = tmp_path / "pan_classes.tif"
    segment_mosaic(image, bundle, out, InferOptions(), progress=QUIET)
    assert_same_grid(out, image)
    with rasterio.open(image) as src:
        valid = src.dataset_mask() > 0
    predicted = read_classes(out)
    assert np.array_equal(predicted == 255, ~valid)


def test_alpha_zero_becomes_nodata(tmp_path: Path) -> None:
    source = shared_data("uav_fotomap", "dummy_fotomap_small.tif")
    # This RGBA orthophoto's alpha is 255 everywhere; give it the ragged transparent edge real
    # orthophotos have, as a photogrammetry tool would write it.
    image = tmp_path / "uav_rgba.tif"
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    rows, cols = np.indices(data.shape[1:])
    data[3][cols < 150 + 40 * np.sin(rows / 60.0)] = 0
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    bundle = make_random_bundle(tmp_path / "rgb", [1, 2, 3], n_classes=3, tile=256, overlap=32)
    out = tmp_path / "uav_classes.tif"
    segment_mosaic(image, bundle, out, InferOptions(block_size=512), progress=QUIET)
    assert_same_grid(out, source)
    predicted = read_classes(out)
    assert (data[3] == 0).mean() > 0.05
    assert np.array_equal(predicted == 255, data[3] == 0)


def test_landsat_collar_becomes_nodata(tmp_path: Path) -> None:
    image = shared_data("landsat_collar", "RGB.byte.tif")
    bundle = make_random_bundle(tmp_path / "rgb", [1, 2, 3], n_classes=3, tile=256, overlap=32)
    out = tmp_path / "landsat_classes.tif"
    segment_mosaic(image, bundle, out, InferOptions(block_size=512, scheduler="threads", workers=2), progress=QUIET)
    assert_same_grid(out, image)
    with rasterio.open(image) as src:
        collar = src.dataset_mask() == 0
    predicted = read_classes(out)
    assert collar.mean() > 0.1
    assert np.array_equal(predicted == 255, collar)


def test_aoi_in_another_crs_limits_processing(tmp_path: Path) -> None:
    image = shared_data("uav_fotomap", "dummy_fotomap_small.tif")
    aoi_3857 = shared_data("uav_fotomap", "dummy_fotomap_area_3857.gpkg")
    aoi_native = shared_data("uav_fotomap", "dummy_fotomap_area.gpkg")
    bundle = make_random_bundle(tmp_path / "rgb", [1, 2, 3], n_classes=3, tile=256, overlap=32)
    out = tmp_path / "aoi_classes.tif"
    segment_mosaic(image, bundle, out, InferOptions(block_size=512, aoi=aoi_3857), progress=QUIET)
    with rasterio.open(image) as src:
        valid = src.dataset_mask() > 0
        inside = features.geometry_mask(
            gpd.read_file(aoi_native).to_crs(src.crs).geometry, out_shape=src.shape, transform=src.transform,
            invert=True,
        )  # fmt: skip
    predicted = read_classes(out) != 255
    expected = inside & valid
    assert 0.05 < expected.mean() < 0.95  # the AOI really cuts the mosaic
    # The same area given in EPSG:32633 and EPSG:3857 differs only by reprojection along its border.
    disagreement = (predicted != expected).sum() / expected.sum()
    assert disagreement < 0.01
    assert not predicted[~valid].any()


def test_raster_smaller_than_a_tile_is_padded(tmp_path: Path) -> None:
    image = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")  # 280 x 341
    bundle = make_random_bundle(tmp_path / "rgb", [1, 2, 3], n_classes=3, tile=512, overlap=64)
    out = tmp_path / "small_classes.tif"
    segment_mosaic(image, bundle, out, InferOptions(), progress=QUIET)
    assert_same_grid(out, image)
    assert (read_classes(out) != 255).all()
