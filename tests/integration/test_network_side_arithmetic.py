"""The per-pixel arithmetic moved next to the network gives the numbers of the numpy code it replaced.

Issue 13 moved the blend weighting and the fixed-point rounding into torch (on the device that runs the
network), made normalization run in place, and sends 8- and 16-bit windows to the network in their own
dtype, normalized there by a lookup. Class maps must not change by a bit: these tests redo each step the
old way, in numpy on the host, on real rasters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.data.histogram import Histogram, MatchCurve
from geoseg.drift.remedies import HistogramMatchedNormalization
from geoseg.infer.assemble import FIXED_POINT, fixed_point_weights
from geoseg.infer.run import InferOptions, segment_mosaic
from geoseg.infer.windows import blend_weights, window_grid
from geoseg.io.raster import read_window
from geoseg.model.bundle import load_bundle
from geoseg.model.forward import RawBatch, batch_probabilities, batch_weighted
from geoseg.progress import Progress, ProgressMode
from tests.conftest import make_random_bundle, shared_data

TILE = 128


def _fotomap() -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(shared_data("uav_fotomap", "dummy_fotomap_small.tif")) as ds:
        return read_window(ds, [1, 2, 3], Window(0, 0, ds.width, ds.height))


def _old_normalization(normalization, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lo, span, mean, std = normalization.columns()
    scaled = np.clip((raw.astype(np.float32) - lo) / span, 0.0, 1.0)
    scaled = np.where(valid[None], scaled, mean)
    return ((scaled - mean) / std).astype(np.float32)


def test_in_place_normalization_gives_the_same_bits(tmp_path: Path) -> None:
    raw, valid = _fotomap()
    valid[:40, :40] = False  # some nodata, so the band-mean rule runs too
    normalization = load_bundle(make_random_bundle(tmp_path / "bundle", [1, 2, 3], tile=TILE)).meta.normalization
    new = normalization.apply(raw, valid)
    assert new.dtype == np.float32
    assert np.array_equal(new.view(np.uint32), _old_normalization(normalization, raw, valid).view(np.uint32))
    assert np.array_equal(raw, _fotomap()[0])  # the caller's pixels are left alone


def test_weighting_where_the_network_runs_gives_the_numpy_integers(tmp_path: Path) -> None:
    raw, valid = _fotomap()
    bundle = load_bundle(make_random_bundle(tmp_path / "bundle", [1, 2, 3], tile=TILE, overlap=32))
    image = bundle.meta.normalization.apply(raw, valid)
    origins = window_grid(*image.shape[1:], TILE, 32)[:6]
    windows = [image[:, r : r + TILE, c : c + TILE] for r, c in origins]
    for batch in (windows[:4], windows[4:]):  # a full batch and a zero-padded one
        probabilities = batch_probabilities(bundle.model, batch, 4)
        weighted = probabilities.astype(np.float32, copy=False) * blend_weights(TILE)
        weighted *= FIXED_POINT
        expected = np.rint(weighted).astype(np.int32)
        got = batch_weighted(bundle.model, batch, 4, fixed_point_weights(TILE), np.dtype(np.int32))
        assert got.dtype == np.int32 and got.shape == expected.shape
        assert len(np.unique(expected)) > 1000  # real, varied probabilities, not a constant map
        assert np.array_equal(got, expected)


def _spacenet() -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(shared_data("spacenet_atlanta", "sample_geotiff.tif")) as ds:
        return read_window(ds, [1], Window(0, 0, ds.width, ds.height))


def _histogram_matched(normalization, raw: np.ndarray) -> HistogramMatchedNormalization:
    """The mosaic's histogram of each band matched onto a darker one, as ``--remedy histogram`` does."""
    curves = []
    for band in raw:
        mosaic = Histogram.of_values(band.ravel(), integer=True)
        darker = Histogram.of_values((band // 2).ravel(), integer=True)
        curves.append(MatchCurve.between(mosaic, darker))
    return HistogramMatchedNormalization(
        list(normalization.scale), list(normalization.mean), list(normalization.std), tuple(curves)
    )


def _raw_and_normalized_batches(normalization, raw: np.ndarray, valid: np.ndarray):
    image = normalization.apply(raw, valid)
    table = normalization.value_table(raw.dtype)
    origins = window_grid(*raw.shape[1:], TILE, 32)[:6]
    cuts = [(slice(r, r + TILE), slice(c, c + TILE)) for r, c in origins]
    raw_windows = RawBatch([raw[:, y, x] for y, x in cuts], [valid[y, x] for y, x in cuts], table)
    return raw_windows, [image[:, y, x] for y, x in cuts]


@pytest.mark.parametrize("raster", ["uav_fotomap uint8 RGB", "spacenet uint16 pan"])
@pytest.mark.parametrize("remedy", ["none", "histogram"])
def test_windows_normalized_where_the_network_runs_give_the_host_numbers(
    tmp_path: Path, raster: str, remedy: str
) -> None:
    raw, valid = _fotomap() if raster.startswith("uav") else _spacenet()
    valid[:40, :40] = False
    bands = list(range(1, raw.shape[0] + 1))
    scale = (0.0, 255.0) if raw.dtype == np.uint8 else (float(raw[:, valid].min()), float(raw[:, valid].max()))
    bundle = load_bundle(make_random_bundle(tmp_path / "bundle", bands, tile=TILE, overlap=32, scale=scale))
    normalization = bundle.meta.normalization
    if remedy == "histogram":
        normalization = _histogram_matched(normalization, raw)
    raw_windows, normalized = _raw_and_normalized_batches(normalization, raw, valid)
    host = np.stack(raw_windows.normalized())
    assert np.array_equal(host.view(np.uint32), np.stack(normalized).view(np.uint32))
    assert len(np.unique(host)) > 50 and (host[0, :, :40, :40] == 0).all()  # the first window is the corner
    for part in (slice(0, 4), slice(4, 6)):  # a full batch and a zero-padded one
        on_device = RawBatch(raw_windows.windows[part], raw_windows.valid[part], raw_windows.table)
        weights = fixed_point_weights(TILE)
        got = batch_weighted(bundle.model, on_device, 4, weights, np.dtype(np.int32))
        assert np.array_equal(got, batch_weighted(bundle.model, normalized[part], 4, weights, np.dtype(np.int32)))


def test_an_8_bit_mosaic_gives_the_class_map_of_its_float_copy(tmp_path: Path) -> None:
    """uint8 windows are normalized where the network runs; float32 ones on the host, as before: the same
    mosaic in both dtypes must give the same class map, bit for bit, across blocks and workers."""
    source = shared_data("uav_fotomap", "dummy_fotomap_small.tif")
    as_float = tmp_path / "fotomap_float32.tif"
    with rasterio.open(source) as ds:
        profile = ds.profile | {"dtype": "float32"}
        with rasterio.open(as_float, "w", **profile) as out:
            out.write(ds.read().astype(np.float32))
            if ds.nodata is None:
                out.write_mask(ds.dataset_mask())
    bundle = make_random_bundle(tmp_path / "bundle", [1, 2, 3], tile=TILE, overlap=32)
    quiet = Progress(ProgressMode.none)
    maps = []
    for mosaic, options in [
        (source, InferOptions(scheduler="sync", block_size=256, precision="fp32", tta=False)),
        (as_float, InferOptions(scheduler="threads", workers=2, block_size=384, precision="fp32", tta=False)),
    ]:
        out = tmp_path / f"classes_of_{mosaic.stem}.tif"
        segment_mosaic(mosaic, bundle, out, options, progress=quiet)
        with rasterio.open(out) as ds:
            maps.append(ds.read(1))
    assert len(np.unique(maps[0])) > 1
    assert np.array_equal(maps[0], maps[1])
