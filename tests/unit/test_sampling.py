"""Window grids and training/validation window sampling."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX
from geoseg.data.datasets import LabeledOrtho
from geoseg.data.preprocess import Normalization
from geoseg.data.sampling import LabeledWindowSampler, MultiImageSampler, validation_windows
from geoseg.infer.windows import window_grid
from geoseg.io.raster import GridSpec
from geoseg.io.tiling import grid_offsets

TRANSFORM = from_origin(500_000.0, 4_000_000.0, 0.5, 0.5)
CRS_UTM = CRS.from_epsg(32633)


def _ortho(tmp_path: Path, labels: np.ndarray, name: str = "ortho.tif") -> LabeledOrtho:
    """A real RGB uint8 GeoTIFF of the labels' shape, wrapped as a LabeledOrtho."""
    h, w = labels.shape
    path = tmp_path / name
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8",
        "crs": CRS_UTM, "transform": TRANSFORM,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
    grid = GridSpec(CRS_UTM, TRANSFORM, w, h)
    norm = Normalization([(0.0, 255.0)] * 3, [0.5] * 3, [0.25] * 3)
    return LabeledOrtho(path, grid, labels, [1, 2, 3], norm)


def _inside(w: Window, height: int, width: int) -> bool:
    return w.row_off >= 0 and w.col_off >= 0 and w.row_off + w.height <= height and w.col_off + w.width <= width


# --- grid rule -----------------------------------------------------------------------------------


def test_grid_offsets_match_the_reference_example() -> None:
    assert grid_offsets(900, 250, 250) == [0, 250, 500, 650]
    assert len(window_grid(900, 900, 250, 0)) == 16


def test_raster_smaller_than_a_window_gets_one_window_at_zero() -> None:
    assert grid_offsets(100, 250, 250) == [0]
    assert grid_offsets(250, 250, 100) == [0]
    assert window_grid(100, 40, 250, 32) == [(0, 0)]


@pytest.mark.parametrize(
    ("length", "size", "stride"),
    [(900, 250, 250), (900, 250, 186), (1000, 256, 256), (257, 256, 192), (513, 64, 1), (5, 3, 2), (64, 64, 32)],
)
def test_grid_covers_every_pixel_and_stays_inside(length: int, size: int, stride: int) -> None:
    offsets = grid_offsets(length, size, stride)
    covered = np.zeros(length, dtype=int)
    for o in offsets:
        assert 0 <= o <= length - size
        covered[o : o + size] += 1
    assert (covered >= 1).all()
    assert offsets == sorted(set(offsets))
    assert offsets[-1] == length - size
    # spacing never exceeds the stride, so overlap is at least size - stride
    assert all(b - a <= stride for a, b in itertools.pairwise(offsets))


# --- training windows ----------------------------------------------------------------------------


def _strip_labels() -> tuple[np.ndarray, np.ndarray]:
    """320×320 labels with two classes in patches, unlabelled elsewhere, and a forbidden strip on the right."""
    labels = np.full((320, 320), IGNORE_INDEX, dtype=np.uint8)
    labels[20:120, 10:150] = 0
    labels[150:300, 100:300] = 1
    labels[200:220, 30:40] = 0
    forbidden = np.zeros(labels.shape, dtype=bool)
    forbidden[:, 250:] = True
    return labels, forbidden


def test_windows_avoid_forbidden_pixels_and_hold_labels(tmp_path: Path) -> None:
    labels, forbidden = _strip_labels()
    sampler = LabeledWindowSampler(_ortho(tmp_path, labels), 64, 300, forbidden=forbidden, seed=3)
    assert len(sampler) == 300 and sampler.n_candidates > 0
    windows = list(sampler.windows())
    assert len(windows) == 300
    for w in windows:
        assert (w.height, w.width) == (64, 64)
        assert _inside(w, 320, 320)
        assert not forbidden[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width].any()
        assert (labels[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] != IGNORE_INDEX).any()
    # windows really are spread out, not all the same candidate
    assert len({(w.row_off, w.col_off) for w in windows}) > 50


def test_draws_are_reproducible_and_change_between_epochs(tmp_path: Path) -> None:
    labels, forbidden = _strip_labels()
    ds = _ortho(tmp_path, labels)
    a = LabeledWindowSampler(ds, 64, 50, forbidden=forbidden, seed=7)
    b = LabeledWindowSampler(ds, 64, 50, forbidden=forbidden, seed=7)
    a0, a1 = list(a.windows()), list(a.windows())
    b0, b1 = list(b.windows()), list(b.windows())
    assert a0 == b0 and a1 == b1
    assert a0 != a1
    other_seed = list(LabeledWindowSampler(ds, 64, 50, forbidden=forbidden, seed=8).windows())
    assert other_seed != a0


def test_iteration_yields_geo_slices_of_the_drawn_windows(tmp_path: Path) -> None:
    labels, forbidden = _strip_labels()
    ds = _ortho(tmp_path, labels)
    windows = list(LabeledWindowSampler(ds, 64, 10, forbidden=forbidden, seed=1).windows())
    slices = list(LabeledWindowSampler(ds, 64, 10, forbidden=forbidden, seed=1))
    assert [ds.pixel_window(x.start, x.stop, y.start, y.stop) for x, y in slices] == windows


def test_no_candidate_when_everything_labelled_is_forbidden(tmp_path: Path) -> None:
    labels, _ = _strip_labels()
    forbidden = labels != IGNORE_INDEX
    sampler = LabeledWindowSampler(_ortho(tmp_path, labels), 64, 10, forbidden=forbidden)
    assert sampler.n_candidates == 0 and len(sampler) == 0
    assert list(sampler.windows()) == []


def test_rare_class_sampling_raises_the_rare_share(tmp_path: Path) -> None:
    labels = np.zeros((256, 512), dtype=np.uint8)
    labels[100:151, 300:351] = 1  # 2,601 px: about 2% of the image
    rare_fraction = (labels == 1).mean()
    assert 0.015 < rare_fraction < 0.025
    ds = _ortho(tmp_path, labels)
    uniform = LabeledWindowSampler(ds, 64, 400, seed=0).class_frequencies()
    weighted = LabeledWindowSampler(ds, 64, 400, rare_classes=True, seed=0).class_frequencies()
    uniform_share = uniform[1] / uniform.sum()
    weighted_share = weighted[1] / weighted.sum()
    assert uniform_share < 0.06
    assert weighted_share > 0.2
    assert weighted_share > 4 * uniform_share


def test_scale_jitter_varies_window_size(tmp_path: Path) -> None:
    labels, forbidden = _strip_labels()
    sampler = LabeledWindowSampler(_ortho(tmp_path, labels), 64, 300, forbidden=forbidden, scale_jitter=0.3, seed=2)
    windows = list(sampler.windows())
    sides = {w.height for w in windows}
    assert all(w.height == w.width for w in windows)
    assert len(sides) > 5
    assert min(sides) < 64 < max(sides)
    assert all(round(64 * 0.7) <= s <= round(64 * 1.3) for s in sides)
    for w in windows:
        assert _inside(w, 320, 320)
        assert not forbidden[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width].any()
        assert (labels[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] != IGNORE_INDEX).any()


@pytest.mark.parametrize("jitter", [0.0, 0.3])
def test_image_smaller_than_the_tile_gives_padded_windows_at_zero(tmp_path: Path, jitter: float) -> None:
    labels = np.full((40, 50), IGNORE_INDEX, dtype=np.uint8)
    labels[10:30, 5:45] = 1
    ds = _ortho(tmp_path, labels)
    windows = list(LabeledWindowSampler(ds, 64, 50, scale_jitter=jitter, seed=0).windows())
    assert windows and all((w.row_off, w.col_off) == (0, 0) for w in windows)
    if not jitter:
        assert all((w.height, w.width) == (64, 64) for w in windows)
    sample = ds.read(windows[0])
    side = windows[0].height
    assert sample["image"].shape == (3, side, side)
    mask = sample["mask"].numpy()
    assert (mask[40:, :] == IGNORE_INDEX).all() and (mask[:, 50:] == IGNORE_INDEX).all()
    assert (mask[10:30, 5:45] == 1).all()


def test_image_narrower_than_the_tile_keeps_windows_inside_the_long_side(tmp_path: Path) -> None:
    labels = np.full((40, 400), IGNORE_INDEX, dtype=np.uint8)
    labels[:, 100:300] = 0
    windows = list(LabeledWindowSampler(_ortho(tmp_path, labels), 64, 200, seed=0).windows())
    assert all(w.row_off == 0 for w in windows)
    assert all(_inside(w, 64, 400) for w in windows)
    assert len({w.col_off for w in windows}) > 5


def test_multi_image_sampler_keys_point_at_their_image(tmp_path: Path) -> None:
    labels, forbidden = _strip_labels()
    small = np.zeros((100, 100), dtype=np.uint8)
    ds_a, ds_b = _ortho(tmp_path, labels, "a.tif"), _ortho(tmp_path, small, "b.tif")

    def samplers() -> list[LabeledWindowSampler]:
        return [LabeledWindowSampler(ds_a, 64, 1, forbidden=forbidden), LabeledWindowSampler(ds_b, 64, 1)]

    multi = MultiImageSampler(samplers(), 40, seed=0)
    keys = list(multi)
    assert len(keys) == len(multi) == 40
    assert {i for i, _ in keys} == {0, 1}
    datasets = [ds_a, ds_b]
    for i, (x, y) in keys:
        w = datasets[i].pixel_window(x.start, x.stop, y.start, y.stop)
        h, wd = datasets[i].labels.shape
        assert _inside(w, h, wd)
    assert list(MultiImageSampler(samplers(), 40, seed=0)) == keys  # reproducible
    assert list(multi) != keys  # the next epoch draws anew


# --- validation windows --------------------------------------------------------------------------


def _ownership(pairs: list[tuple[Window, Window]], shape: tuple[int, int]) -> np.ndarray:
    owned = np.zeros(shape, dtype=int)
    for window, part in pairs:
        # the owned part lies inside its window
        assert window.row_off <= part.row_off and part.row_off + part.height <= window.row_off + window.height
        assert window.col_off <= part.col_off and part.col_off + part.width <= window.col_off + window.width
        r0, c0 = max(part.row_off, 0), max(part.col_off, 0)
        owned[r0 : part.row_off + part.height, c0 : part.col_off + part.width] += 1
    return owned


@pytest.mark.parametrize(
    ("shape", "size", "region_cols"),
    [((300, 330), 64, slice(250, None)), ((300, 330), 100, slice(0, 330)), ((50, 40), 64, slice(10, 30))],
)
def test_validation_windows_own_every_labelled_region_pixel_once(
    shape: tuple[int, int], size: int, region_cols: slice
) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, shape).astype(np.uint8)
    labels[rng.random(shape) < 0.4] = IGNORE_INDEX
    labels[:, :5] = IGNORE_INDEX
    region = np.zeros(shape, dtype=bool)
    region[:, region_cols] = True
    pairs = validation_windows(region, labels, size)
    assert pairs
    for window, _ in pairs:
        assert (window.height, window.width) == (size, size)
        if min(shape) >= size:
            assert window.row_off >= 0 and window.col_off >= 0
            assert window.row_off + size <= shape[0] and window.col_off + size <= shape[1]
    owned = _ownership(pairs, shape)
    target = region & (labels != IGNORE_INDEX)
    assert (owned[target] == 1).all()
    assert owned.max() == 1  # owned parts never overlap


def test_validation_windows_empty_region() -> None:
    labels = np.zeros((100, 100), dtype=np.uint8)
    assert validation_windows(np.zeros((100, 100), dtype=bool), labels, 64) == []
    region = np.ones((100, 100), dtype=bool)
    assert validation_windows(region, np.full((100, 100), IGNORE_INDEX, dtype=np.uint8), 64) == []
