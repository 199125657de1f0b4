"""Training with few labels on real rasters: the pixel-classifier yardstick beside the U-Net, and
semi-supervised training on the unlabelled pixels (new_brunswick's labels cover about a third of tile 1)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.config import IGNORE_INDEX, load_config
from geoseg.data.prepare import build_training_set, load_images
from geoseg.data.unlabelled import build_unlabelled_set
from geoseg.io.raster import read_info, read_window
from geoseg.model.bundle import load_bundle
from geoseg.train import train
from tests.conftest import shared_data, write_config

pytestmark = pytest.mark.slow

NB_TILE = ("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
NB_LABELS = ("new_brunswick", "BakerLake_2017_clipped.gpkg")
SMALL_TRAINING = "tile_size: 64, batch_size: 2, samples_per_epoch: 8, refit: false, tta: false"


def _nb_config(tmp_path: Path, weights: Path, train_keys: str, data_keys: str = "") -> Path:
    return write_config(
        tmp_path / "nb.yaml",
        f"""
data:
  images: [{shared_data(*NB_TILE)}]
  labels: {shared_data(*NB_LABELS)}
  label_field: Quatreclasses
  classes: {{1: forest, 2: water, 3: road, 4: building}}
  validation: {{fraction: 0.3}}
{data_keys}
model: {{encoder: tu-efficientnet_lite0, weights: {weights}}}
train: {{{SMALL_TRAINING}, {train_keys}}}
""",
    )


def test_every_training_scores_a_pixel_classifier_on_the_same_validation_pixels(
    tmp_path: Path, lite0_weights: Path
) -> None:
    cfg = load_config(_nb_config(tmp_path, lite0_weights, "steps: 4"))
    lines: list[str] = []
    train(cfg, tmp_path / "bundle", emit=lines.append, progress_bar=False)
    metrics = load_bundle(tmp_path / "bundle").meta.metrics
    baseline = metrics["baseline"]
    # the same pixels: every labelled validation pixel of the tile (it has no nodata), once, for both models
    images = load_images(cfg)
    expected = int(((images[0].labels != IGNORE_INDEX) & images[0].validation).sum())
    assert metrics["pixels"] == baseline["pixels"] == expected > 10_000
    assert [c["support"] for c in metrics["per_class"]] == [c["support"] for c in baseline["per_class"]]
    assert [c["name"] for c in baseline["per_class"]] == ["forest", "water", "road", "building"]
    assert all(c["iou"] is None or 0.0 <= c["iou"] <= 1.0 for c in baseline["per_class"])
    support = np.array([c["support"] for c in baseline["per_class"]])
    best_constant = support.max() / support.sum() / (support > 0).sum()  # mIoU of answering one class everywhere
    assert baseline["miou"] > best_constant + 0.05  # a classifier of the tile's colours and textures
    assert 0 < baseline["train_pixels"] <= baseline["labelled_pixels"]
    summary = next(line for line in lines if line.startswith("validation mIoU: U-Net"))
    assert f"U-Net {metrics['miou']:.3f}, pixel classifier {baseline['miou']:.3f}" in summary


def _pool(tmp_path: Path, weights: Path, extra: Path) -> tuple:
    cfg = load_config(_nb_config(tmp_path, weights, "semi_supervised: true", f"  unlabelled: [{extra}]"))
    images = load_images(cfg)
    ts = build_training_set(cfg, images, pretrained=True)
    pool = build_unlabelled_set(cfg, images, ts.bands, ts.normalization)
    return images, pool


def test_unlabelled_windows_stay_out_of_validation_and_mask_labels_and_nodata(
    tmp_path: Path, lite0_weights: Path
) -> None:
    collar = shared_data("landsat_collar", "RGB.byte.tif")  # a rotated footprint in a nodata=0 collar
    images, pool = _pool(tmp_path, lite0_weights, collar)
    assert pool is not None and len(pool.images) == 2
    tile, extra = pool.images
    sampler = pool.sampler.samplers[0]
    sampler.length = 200
    for window in sampler.windows():
        rows, cols = window.toslices()
        assert not images[0].validation[rows, cols].any()
    labelled = images[0].labels != IGNORE_INDEX
    assert (tile.labels[labelled] == IGNORE_INDEX).all() and (tile.labels[~labelled & ~images[0].validation] == 0).all()
    with rasterio.open(collar) as ds:
        _, valid = read_window(ds, [1, 2, 3], rasterio.windows.Window(0, 0, ds.width, ds.height))
    assert 0.2 < (~valid).mean() < 0.8
    assert np.array_equal(extra.labels == 0, valid)
    corner, centre = rasterio.windows.Window(0, 0, 64, 64), rasterio.windows.Window(360, 330, 64, 64)
    assert not valid[corner.toslices()].any() and valid[centre.toslices()].all()
    assert (extra.read(corner)["mask"].numpy() == IGNORE_INDEX).all()  # the collar: never a pseudo-label
    assert (extra.read(centre)["mask"].numpy() == 0).all()


def test_semi_supervised_training_learns_from_the_pool_and_records_it(tmp_path: Path, lite0_weights: Path) -> None:
    collar = shared_data("landsat_collar", "RGB.byte.tif")
    config = _nb_config(tmp_path, lite0_weights, "steps: 4, baseline: false, semi_supervised: {batch_size: 2}",
                        f"  unlabelled: [{collar}]")  # fmt: skip
    lines: list[str] = []
    result = train(load_config(config), tmp_path / "bundle", emit=lines.append, progress_bar=False)
    assert all(np.isfinite(result.losses))
    assert any(line.startswith("semi-supervised: ") and "in 2 mosaic(s), 2 window(s) a step" in line for line in lines)
    meta = load_bundle(result.bundle).meta
    assert meta.extra["recipe"]["semi_supervised"]["enabled"] is True
    assert "baseline" not in meta.metrics
    with (tmp_path / "bundle.train" / "logs" / "metrics.csv").open() as f:
        shares = [float(row["train/pseudo_label_share_step"]) for row in csv.DictReader(f)
                  if row.get("train/pseudo_label_share_step")]  # fmt: skip
    assert len(shares) == 4 and all(0.0 <= s <= 1.0 for s in shares)


def test_semi_supervised_with_dense_labels_says_it_is_off_and_trains(tmp_path: Path, lite0_weights: Path) -> None:
    image = shared_data("building_tiles", "tiled_image_1.tif")
    labels = shared_data("building_tiles", "tiled_label_1.tif")  # every pixel 0 or 1
    config = write_config(tmp_path / "b.yaml", f"""
data: {{images: [{image}], labels: {labels}, classes: {{0: background, 1: building}}}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{{SMALL_TRAINING}, steps: 2, baseline: false, semi_supervised: true}}
""")  # fmt: skip
    lines: list[str] = []
    train(load_config(config), tmp_path / "bundle", emit=lines.append, progress_bar=False)
    assert any(line.startswith("semi-supervised: off, no 64px window holds an unlabelled pixel") for line in lines)
    assert (tmp_path / "bundle" / "geoseg.json").exists()


def test_an_unlabelled_mosaic_of_another_data_type_is_one_line_before_anything_is_written(
    tmp_path: Path, lite0_weights: Path
) -> None:
    uint16 = shared_data("spacenet_atlanta", "sample_geotiff.tif")
    assert read_info(uint16).dtype == "uint16"
    config = _nb_config(tmp_path, lite0_weights, "semi_supervised: true", f"  bands: [1]\n  unlabelled: [{uint16}]")
    run = subprocess.run([sys.executable, "-m", "geoseg", "train", str(config), "--out", str(tmp_path / "model")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 2, run.stderr
    message = run.stderr.strip().splitlines()
    assert len(message) == 1 and str(uint16) in message[0] and "data type uint16" in message[0], run.stderr
    assert not (tmp_path / "model").exists() and not (tmp_path / "model.train").exists()
