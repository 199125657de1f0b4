"""LabeledOrtho: windows read straight from the file, normalized, with the right ignore mask."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX, AugmentConfig, QualityMaskConfig
from geoseg.data.datasets import ImageCollection, LabeledOrtho
from geoseg.data.preprocess import Normalization
from geoseg.io.raster import GridSpec

H, W = 60, 80
TRANSFORM = from_origin(600_000.0, 4_250_000.0, 0.25, 0.25)
CRS_UTM = CRS.from_epsg(32612)
NORM = Normalization([(0.0, 255.0)] * 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (3, H, W), dtype=np.uint8)
    image[:, :5, :5] = 0  # nodata corner
    labels = (image[0] > 127).astype(np.uint8)  # the label is readable from the red band
    labels[:, 70:] = IGNORE_INDEX
    path = tmp_path / "ortho.tif"
    profile = {
        "driver": "GTiff", "width": W, "height": H, "count": 3, "dtype": "uint8",
        "crs": CRS_UTM, "transform": TRANSFORM, "nodata": 0,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return path, image, labels


def _ds(path: Path, labels: np.ndarray, **kwargs) -> LabeledOrtho:
    return LabeledOrtho(path, GridSpec(CRS_UTM, TRANSFORM, W, H), labels, [1, 2, 3], NORM, **kwargs)


def test_read_normalizes_pixels_and_masks_nodata(files) -> None:
    path, image, labels = files
    sample = _ds(path, labels).read(Window(0, 0, 32, 32))
    assert sample["image"].dtype == torch.float32 and sample["mask"].dtype == torch.uint8
    np.testing.assert_allclose(sample["image"].numpy()[:, 5:, 5:], NORM.apply(image[:, 5:32, 5:32]), rtol=1e-6)
    assert (sample["image"].numpy()[:, :5, :5] == 0).all()  # nodata: the neutral 0 inference feeds too
    mask = sample["mask"].numpy()
    assert (mask[:5, :5] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(mask[5:, 5:], labels[5:32, 5:32])


def test_window_past_the_edge_is_padded_and_ignored(files) -> None:
    path, _, labels = files
    sample = _ds(path, labels).read(Window(60, 40, 32, 32))
    mask = sample["mask"].numpy()
    assert sample["image"].shape == (3, 32, 32)
    assert (mask[20:, :] == IGNORE_INDEX).all() and (mask[:, 20:] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(mask[:20, :10], labels[40:60, 60:70])


def test_geo_queries_round_trip_to_pixel_windows(files) -> None:
    path, image, labels = files
    ds = _ds(path, labels)
    window = Window(11, 7, 24, 24)
    x, y = ds.geo_slice(window)
    assert ds.pixel_window(x.start, x.stop, y.start, y.stop) == window
    sample = ds[x, y]  # the way torchgeo samplers query
    np.testing.assert_allclose(sample["image"].numpy(), NORM.apply(image[:, 7:31, 11:35]), rtol=1e-6)
    collection = ImageCollection([ds, ds])
    assert len(collection) == 2
    torch.testing.assert_close(collection[1, (x, y)]["mask"], sample["mask"])


def test_augmentation_keeps_image_and_mask_aligned(files) -> None:
    path, _, labels = files
    aug = AugmentConfig(flips=True, rot90=True, brightness=0.0, contrast=0.0, color=0.0, blur=0.0, noise=0.0)
    ds = _ds(path, labels, augment=aug, seed=3)
    std = torch.tensor(NORM.std)[:, None, None]
    mean = torch.tensor(NORM.mean)[:, None, None]
    originals = set()
    for _ in range(12):
        sample = ds.read(Window(10, 10, 40, 40))
        red = (sample["image"] * std + mean)[0] * 255
        mask = sample["mask"]
        labelled = mask != IGNORE_INDEX
        assert torch.equal(mask[labelled], (red[labelled] > 127.5).long())
        originals.add(tuple(mask.flatten().tolist()))
    assert len(originals) > 1  # the augmentation does change the sample


def test_photometric_augmentation_changes_the_image_only(files) -> None:
    """Colour, blur and noise jitter the pixels within the scaled 0..1 range and never move the labels."""
    path, _, labels = files
    photometric = AugmentConfig(flips=False, rot90=False, brightness=0.1, contrast=0.1, color=0.2, blur=2.0, noise=0.1)
    plain = _ds(path, labels).read(Window(10, 10, 40, 40))
    ds = _ds(path, labels, augment=photometric, seed=1)
    std = torch.tensor(NORM.std)[:, None, None]
    mean = torch.tensor(NORM.mean)[:, None, None]
    changed = 0
    for _ in range(12):
        sample = ds.read(Window(10, 10, 40, 40))
        assert torch.equal(sample["mask"], plain["mask"])
        scaled = sample["image"] * std + mean
        assert scaled.min() >= -1e-5 and scaled.max() <= 1 + 1e-5
        changed += not torch.allclose(sample["image"], plain["image"])
    assert changed == 12


def test_out_size_resizes_image_and_mask(files) -> None:
    path, _, labels = files
    sample = _ds(path, labels, out_size=32).read(Window(0, 0, 48, 48))
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].shape == (32, 32)
    assert set(sample["mask"].unique().tolist()) <= {0, 1, IGNORE_INDEX}


def test_quality_mask_ignores_flagged_pixels(tmp_path: Path, files) -> None:
    _, image, labels = files
    image = image.copy()
    image[:, 20:50, 20:50] = 255  # blown out
    path = tmp_path / "bright.tif"
    with rasterio.open(files[0]) as src:
        profile = src.profile
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    window = Window(0, 0, 60, 60)
    plain = _ds(path, labels).read(window)["mask"].numpy()
    masked = _ds(path, labels, quality=QualityMaskConfig(enabled=True)).read(window)["mask"].numpy()
    assert (masked[20:50, 20:50] == IGNORE_INDEX).all()
    assert (plain[20:50, 20:50] != IGNORE_INDEX).any()


def test_pickles_without_its_open_file(files) -> None:
    path, _, labels = files
    ds = _ds(path, labels)
    ds.read(Window(0, 0, 8, 8))
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers receive a copy
    assert clone._reader is None
    torch.testing.assert_close(clone.read(Window(0, 0, 8, 8))["image"], ds.read(Window(0, 0, 8, 8))["image"])


@pytest.mark.parametrize("window", [Window(0, 0, 32, 32), Window(60, 40, 32, 32), Window(20, 10, 32, 32)])
def test_training_and_inference_feed_the_network_the_same_window(files, window: Window) -> None:
    """Nodata and the area past the edge reach the network the same way when training and segmenting."""
    from geoseg.infer.engine import slice_padded
    from geoseg.io.raster import open_raster, read_window

    path, _, labels = files
    trained = _ds(path, labels).read(window)["image"].numpy()
    with open_raster(path) as ds:
        raw, valid = read_window(ds, [1, 2, 3], window)
        whole, whole_valid = read_window(ds, [1, 2, 3], Window(0, 0, W, H))
    np.testing.assert_array_equal(trained, NORM.apply(raw, valid))
    # inference cuts its windows out of a normalized block, not the file: the same values again
    block_raw, block_valid = slice_padded(whole, whole_valid, window)
    np.testing.assert_array_equal(trained, NORM.apply(block_raw, block_valid))
