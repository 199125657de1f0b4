"""The per-pixel arithmetic moved next to the network gives the numbers of the numpy code it replaced.

Issue 13 moved the blend weighting and the fixed-point rounding into torch (on the device that runs the
network) and made normalization run in place. Class maps must not change by a bit: these tests redo each
step the old way, out of place in numpy, on a real orthomosaic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.infer.assemble import FIXED_POINT, fixed_point_weights
from geoseg.infer.windows import blend_weights, window_grid
from geoseg.io.raster import read_window
from geoseg.model.bundle import load_bundle
from geoseg.model.forward import batch_probabilities, batch_weighted
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
