"""Float mosaics with NaN holes and no nodata tag: infer, the API and training treat NaN as nodata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.demo_data import make_survey
from tests.conftest import make_random_bundle, write_config

NODATA = -9999.0


def float_copy(source: Path, target: Path, hole: float | None, nodata: float | None, one_band: bool = False) -> Path:
    """The survey as float32 with a 40×40 hole filled with ``hole`` in every band, tagged ``nodata``;
    ``one_band`` also puts ``hole`` in band 2 alone at pixel (50, 60)."""
    with rasterio.open(source) as ds:
        data = ds.read().astype(np.float32)
        profile = ds.profile | {"dtype": "float32", "nodata": nodata}
    if hole is not None:
        data[:, 200:240, 300:340] = hole
        if one_band:
            data[1, 50, 60] = hole
    with rasterio.open(target, "w", **profile) as out:
        out.write(data)
    return target


def classes_of(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory):
    return make_survey(tmp_path_factory.mktemp("survey"), size=512, seed=11)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_bundle(tmp_path_factory.mktemp("b") / "m", [1, 2, 3], n_classes=4, tile=128, overlap=16)


def infer(mosaic: Path, bundle: Path, out: Path) -> Path:
    command = [sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir", str(out),
               "--no-polygons", "--progress", "none", "--precision", "fp32"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return out / f"{mosaic.stem}_classes.tif"


def test_nan_holes_segment_exactly_as_tagged_nodata(tmp_path: Path, survey, bundle: Path) -> None:
    mosaics = {"nan": float_copy(survey.image, tmp_path / "nan.tif", np.nan, None),
               "inf": float_copy(survey.image, tmp_path / "inf.tif", np.inf, None),
               "tagged": float_copy(survey.image, tmp_path / "tagged.tif", NODATA, NODATA),
               "one_band": float_copy(survey.image, tmp_path / "one.tif", np.nan, None, one_band=True)}  # fmt: skip
    maps = {name: classes_of(infer(path, bundle, tmp_path / name)) for name, path in mosaics.items()}
    hole = np.zeros(maps["nan"].shape, dtype=bool)
    hole[200:240, 300:340] = True
    assert (maps["nan"][hole] == 255).all()
    assert len(np.unique(maps["nan"][~hole])) > 1
    # the same network input everywhere, so the same map, not only far from the hole
    np.testing.assert_array_equal(maps["nan"], maps["tagged"])
    np.testing.assert_array_equal(maps["inf"], maps["tagged"])
    # NaN in one band makes the pixel nodata (GDAL's nodata value needs every band); beyond the reach of
    # the windows that hold it (tile 128 + overlap 16), nothing changes
    one = maps["one_band"]
    assert one[50, 60] == 255
    reach = np.ones(one.shape, dtype=bool)
    reach[max(50 - 144, 0) : 50 + 145, max(60 - 144, 0) : 60 + 145] = False
    np.testing.assert_array_equal(one[reach], maps["nan"][reach])


def test_an_all_nan_mosaic_gives_an_all_nodata_map(tmp_path: Path, survey, bundle: Path) -> None:
    with rasterio.open(survey.image) as ds:
        profile = ds.profile | {"dtype": "float32", "nodata": None}
        shape = (ds.count, ds.height, ds.width)
    mosaic = tmp_path / "all_nan.tif"
    with rasterio.open(mosaic, "w", **profile) as out:
        out.write(np.full(shape, np.nan, dtype=np.float32))
    assert (classes_of(infer(mosaic, bundle, tmp_path / "out")) == 255).all()
    areas = json.loads((tmp_path / "out" / "all_nan_areas.json").read_text())
    assert areas["valid_pixels"] == 0 and all(row["pixels"] == 0 for row in areas["classes"])


def test_the_api_applies_the_same_rule(tmp_path: Path, survey, bundle: Path) -> None:
    import rioxarray

    import geoseg

    untagged = float_copy(survey.image, tmp_path / "nan.tif", np.nan, None)
    expected = classes_of(infer(untagged, bundle, tmp_path / "cli"))
    da = rioxarray.open_rasterio(untagged, chunks={"x": 256, "y": 256}, mask_and_scale=False)
    got = geoseg.segment(da, geoseg.load_model(bundle, device="cpu"), precision="fp32").values
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_training_on_a_mosaic_with_nan_holes_writes_finite_weights_and_stats(tmp_path: Path, survey,
                                                                             lite0_weights: Path) -> None:  # fmt: skip
    from safetensors.numpy import load_file

    mosaic = float_copy(survey.image, tmp_path / "nan.tif", np.nan, None)
    with rasterio.open(mosaic) as ds:  # NaN over labelled ground too
        data = ds.read()
        data[:, 300:330, 10:60] = np.nan
        profile = ds.profile
    with rasterio.open(mosaic, "w", **profile) as out:
        out.write(data)
    config = write_config(tmp_path / "train.yaml", f"""
data:
  images: [{mosaic}]
  labels: {survey.labels}
  classes: {{1: bare soil, 2: cyanobacteria, 3: lichen, 4: moss}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 128, batch_size: 2, steps: 4, tta: false}}
""")  # fmt: skip
    command = [sys.executable, "-m", "geoseg", "train", str(config), "--out", str(tmp_path / "model"),
               "--progress", "none"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    meta = json.loads((tmp_path / "model" / "geoseg.json").read_text())
    stats = meta["train_stats"]["bands"]
    assert all(np.isfinite([b["mean"], b["std"], b["min"], b["max"], b["p2"], b["p98"]]).all() for b in stats)
    for key in ("scale", "mean", "std"):
        assert np.isfinite(np.asarray(meta["input"][key], dtype=float)).all(), key
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values())
