"""Training on real rasters and labels from public projects (../shared/data), through the real libraries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import segmentation_models_pytorch as smp
import torch
from rasterio.windows import from_bounds

from geoseg.config import IGNORE_INDEX, TrainConfig, load_config
from geoseg.data.prepare import build_training_set, load_images
from geoseg.evaluate import evaluate
from geoseg.infer.whole import segment_file
from geoseg.io.raster import GridSpec, read_info
from geoseg.io.vector import rasterize_labels
from geoseg.model.bundle import load_bundle
from geoseg.train import SegmentationTask, train
from tests.conftest import shared_data, write_config

pytestmark = pytest.mark.slow

NB_CLASSES = "{1: forest, 2: water, 3: road, 4: building}"


def new_brunswick_config(tmp_path: Path, weights: Path, steps_per_epoch_samples: int = 48) -> Path:
    image = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    labels = shared_data("new_brunswick", "BakerLake_2017_clipped.gpkg")
    return write_config(
        tmp_path / "nb.yaml",
        f"""
data:
  images: [{image}]
  labels: {labels}
  label_field: Quatreclasses
  classes: {NB_CLASSES}
  validation: {{fraction: 0.3}}
model: {{encoder: tu-efficientnet_lite0, weights: {weights}}}
train: {{tile_size: 128, batch_size: 4, lr: 0.001, samples_per_epoch: {steps_per_epoch_samples}, seed: 0, refit: false}}
""",
    )


@pytest.fixture(scope="module")
def trained_new_brunswick(tmp_path_factory: pytest.TempPathFactory, lite0_weights: Path):
    tmp = tmp_path_factory.mktemp("nb")
    cfg = load_config(new_brunswick_config(tmp, lite0_weights, steps_per_epoch_samples=64))
    result = train(cfg, tmp / "bundle", max_steps=16, emit=lambda _: None, progress_bar=False)
    return tmp, result


def test_loss_decreases_and_validation_scores_every_class(trained_new_brunswick) -> None:
    _, result = trained_new_brunswick
    assert result.steps == 16
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4])
    assert result.scores is not None
    assert result.scores.support.sum() > 0
    assert 0.0 <= result.scores.miou <= 1.0


def test_bundle_round_trip_predicts_bit_identically(trained_new_brunswick) -> None:
    tmp, result = trained_new_brunswick
    bundle_dir = tmp / "bundle"
    by_smp = smp.from_pretrained(str(bundle_dir)).eval()
    by_geoseg = load_bundle(bundle_dir).model
    trained = result.model.eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = trained(x)
        assert torch.equal(by_smp(x), expected)
        assert torch.equal(by_geoseg(x), expected)


def test_bundle_records_what_inference_needs(trained_new_brunswick) -> None:
    tmp, _ = trained_new_brunswick
    meta = load_bundle(tmp / "bundle").meta
    assert [c.id for c in meta.classes] == [1, 2, 3, 4]
    assert [c.name for c in meta.classes] == ["forest", "water", "road", "building"]
    assert meta.bands == [1, 2, 3]
    assert meta.normalization.scale == [(0.0, 255.0)] * 3
    assert meta.normalization.mean == [0.485, 0.456, 0.406]  # ImageNet for a pretrained RGB encoder
    assert meta.tile_size == 128
    assert meta.resolution == pytest.approx(0.5)
    assert len(meta.train_stats["bands"]) == 3


def test_evaluate_on_tile_two_with_and_without_the_overlap(trained_new_brunswick) -> None:
    tmp, _ = trained_new_brunswick
    tile1 = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    tile2 = shared_data("new_brunswick", "23322E759967N_clipped_1m_2of2.tif")
    labels = shared_data("new_brunswick", "BakerLake_2017_clipped.gpkg")
    class_map = segment_file(load_bundle(tmp / "bundle"), tile2, tmp / "tile2_classes.tif")
    scores = evaluate(class_map, labels, label_field="Quatreclasses")
    grid = read_info(tile2).grid
    cfg = load_config(new_brunswick_config(tmp, Path("unused.pth")))
    truth = rasterize_labels(labels, "Quatreclasses", cfg.data.classes, grid)
    # Class 255 (train corridor) is in tile 2 but not in the config: never scored.
    assert [c.id for c in scores.classes] == [1, 2, 3, 4]
    assert scores.pixels == int((truth != IGNORE_INDEX).sum())

    # The same scores with the area that tile 1 also covers left out (tile 1 was the training image).
    with rasterio.open(class_map) as ds:
        predicted = ds.read(1)
        overlap = from_bounds(*read_info(tile1).grid.bounds, transform=ds.transform).round_offsets().round_lengths()
    outside = predicted.copy()
    r0, c0 = max(overlap.row_off, 0), max(overlap.col_off, 0)
    outside[r0 : overlap.row_off + overlap.height, c0 : overlap.col_off + overlap.width] = IGNORE_INDEX
    excluded = int((predicted != IGNORE_INDEX).sum() - (outside != IGNORE_INDEX).sum())
    assert 7000 < excluded < 9500  # the README gives 8,272 px of overlap
    outside_map = tmp / "tile2_outside_overlap.tif"
    with rasterio.open(class_map) as src:
        profile = src.profile
    with rasterio.open(outside_map, "w", **profile) as dst:
        dst.write(outside, 1)
    outside_scores = evaluate(outside_map, labels, label_field="Quatreclasses")
    assert outside_scores.pixels < scores.pixels
    print(f"tile1→tile2 mIoU {scores.miou:.3f}; overlap excluded {outside_scores.miou:.3f}")


def test_sparse_labels_never_count_unlabelled_pixels(tmp_path: Path, lite0_weights: Path) -> None:
    image = shared_data("lausanne_trees", "strip_mosaic_25tiles.tif")
    labels = shared_data("lausanne_trees", "strip_mosaic_tree_labels_255unlabeled.tif")
    config = write_config(
        tmp_path / "trees.yaml",
        f"""
data:
  images: [{image}]
  labels: {labels}
  classes: {{0: non-tree, 1: tree}}
  validation: {{fraction: 0.25}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 128, batch_size: 4, samples_per_epoch: 64}}
""",
    )
    cfg = load_config(config)
    images = load_images(cfg)
    truth = images[0].labels
    assert (truth == IGNORE_INDEX).mean() > 0.8  # the labels really are sparse
    ts = build_training_set(cfg, images, pretrained=True)
    sampler = ts.train_sampler.samplers[0]
    region = images[0].validation
    for window in sampler.windows():
        r0, c0 = max(window.row_off, 0), max(window.col_off, 0)
        r1, c1 = window.row_off + window.height, window.col_off + window.width
        assert (truth[r0:r1, c0:c1][~region[r0:r1, c0:c1]] != IGNORE_INDEX).any(), "an unlabelled window was drawn"
        assert not region[r0:r1, c0:c1].any(), "a training window touched the validation region"

    result = train(cfg, tmp_path / "bundle", max_steps=3, emit=lambda _: None, progress_bar=False)
    assert result.scores is not None
    # Validation scored every labelled validation pixel exactly once, and nothing else.
    assert result.scores.confusion.sum() == int(((truth != IGNORE_INDEX) & region).sum())

    # The loss reads labelled pixels only: changing logits where the label is 255 changes nothing.
    task = SegmentationTask(result.model, 2, TrainConfig(loss="ce+dice"), total_steps=10)
    target = torch.from_numpy(truth[:128, :128].astype(np.int64))[None]
    logits = torch.randn(1, 2, 128, 128, generator=torch.Generator().manual_seed(0))
    changed = logits.clone()
    changed[:, :, target[0] == IGNORE_INDEX] += 5.0
    assert torch.allclose(task._loss(logits, target), task._loss(changed, target))


def test_single_band_uint16_with_polygon_labels(tmp_path: Path, lite0_weights: Path) -> None:
    image = shared_data("spacenet_atlanta", "sample_geotiff.tif")
    footprints = shared_data("spacenet_atlanta", "geotiff_labels.geojson")
    expected_mask = shared_data("spacenet_atlanta", "sample_fp_mask_from_geojson.tif")
    config = write_config(
        tmp_path / "atlanta.yaml",
        f"""
data:
  images: [{image}]
  labels: {footprints}
  label_field: building
  classes: {{"no": background, "yes": building}}
  background: "no"
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 256, batch_size: 2, samples_per_epoch: 8}}
""",
    )
    cfg = load_config(config)
    grid = read_info(image).grid
    burnt = rasterize_labels(footprints, "building", cfg.data.classes, grid, background="no")
    assert int((burnt == 1).sum()) == 33_818
    with rasterio.open(expected_mask) as ds:
        assert np.array_equal(burnt == 1, ds.read(1) == 255)

    result = train(cfg, tmp_path / "bundle", max_steps=2, emit=lambda _: None, progress_bar=False)
    assert all(np.isfinite(result.losses))
    meta = load_bundle(result.bundle).meta
    assert meta.bands == [1]
    ((lo, hi),) = meta.normalization.scale
    assert 0 < lo < hi < 65535 and hi - lo < 5000  # a percentile stretch of the 11-bit data, not 0..65535
    assert meta.train_stats["dtype"] == "uint16"


def test_grid_spec_matches_rasterio(tmp_path: Path) -> None:
    image = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    with rasterio.open(image) as ds:
        assert GridSpec(ds.crs, ds.transform, ds.width, ds.height).bounds == pytest.approx(tuple(ds.bounds))
