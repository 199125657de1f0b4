"""The NaN rule: NaN and ±inf in any band read are nodata, whether or not the file tags a nodata value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.data.preprocess import compute_band_stats
from geoseg.io.raster import open_raster, read_window


def float_raster(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": "float32", "crs": CRS.from_epsg(32612), "transform": from_origin(500_000, 4_000_000, 1, 1),
               "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(data.astype(np.float32))
    return path


def test_non_finite_pixels_read_as_nodata_with_zero_data(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(10, 20, (2, 30, 40)).astype(np.float32)
    data[0, 5:10, 5:10] = np.nan  # one band only
    data[1, 20, 30] = np.inf
    data[:, 25, 2] = -np.inf
    path = float_raster(tmp_path / "nan.tif", data)
    with open_raster(path) as ds:
        raw, valid = read_window(ds, [1, 2], Window(-4, -4, 48, 38))  # past every edge
    inner_valid, inner_raw = valid[4:34, 4:44], raw[:, 4:34, 4:44]
    expected = np.isfinite(data).all(axis=0)
    np.testing.assert_array_equal(inner_valid, expected)
    assert np.isfinite(raw).all() and (inner_raw[~np.isfinite(data)] == 0).all()
    np.testing.assert_array_equal(inner_raw[:, expected], data[:, expected])
    assert not valid[:4].any() and not valid[:, :4].any()


def test_band_statistics_skip_non_finite_pixels(tmp_path: Path) -> None:
    data = np.full((1, 20, 20), 5.0, dtype=np.float32)
    data[0, :10] = 7.0
    data[0, 0, :5] = np.nan
    data[0, 1, :5] = np.inf
    (stats,) = compute_band_stats([float_raster(tmp_path / "s.tif", data)], [1])
    assert stats.count == 400 - 10
    assert stats.max == 7.0 and stats.min == 5.0 and np.isfinite(stats.mean) and np.isfinite(stats.std)
