"""Orthomosaics arrive as GeoTIFF, Cloud-Optimized GeoTIFF or VRT: all read the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from geoseg.data.preprocess import compute_band_stats
from geoseg.io.raster import open_raster, read_info, read_window


@pytest.fixture
def geotiff(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (3, 300, 200), dtype=np.uint8)
    data[:, :20, :] = 0
    path = tmp_path / "ortho.tif"
    profile = {"driver": "GTiff", "width": 200, "height": 300, "count": 3, "dtype": "uint8", "nodata": 0,
               "crs": "EPSG:32633", "transform": from_origin(500000, 5000000, 0.05, 0.05)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("driver", ["COG", "VRT"])
def test_cog_and_vrt_read_like_the_geotiff(geotiff: Path, tmp_path: Path, driver: str) -> None:
    other = tmp_path / f"ortho.{driver.lower()}.{'vrt' if driver == 'VRT' else 'tif'}"
    rasterio.shutil.copy(geotiff, other, driver=driver)
    base, info = read_info(geotiff), read_info(other)
    assert info.grid.same_grid(base.grid) and info.nodata == 0 and info.count == 3
    window = rasterio.windows.Window(-10, 280, 64, 64)  # reaches past the left and bottom edges
    with open_raster(geotiff) as a, open_raster(other) as b:
        data_a, valid_a = read_window(a, [1, 2, 3], window)
        data_b, valid_b = read_window(b, [1, 2, 3], window)
    assert np.array_equal(data_a, data_b) and np.array_equal(valid_a, valid_b)
    stats_a = compute_band_stats([geotiff], [1, 2, 3])
    stats_b = compute_band_stats([other], [1, 2, 3])
    assert [s.mean for s in stats_a] == [s.mean for s in stats_b]
    assert stats_b[0].count == 200 * 280  # the nodata rows are not counted
