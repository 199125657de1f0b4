"""Labels onto an image's grid: vector polygons rasterized, label rasters mapped and resampled.

Label rasters on another grid (CRS, resolution or alignment) are resampled with nearest neighbour
onto the image grid, so label values are never blended. Label values not listed in the config's
classes, and any nodata value the label file declares that is not a class, become IGNORE_INDEX.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg.config import IGNORE_INDEX, ClassSpec
from geoseg.errors import InputError
from geoseg.io.raster import GridSpec, nearest_on_grid, open_raster
from geoseg.io.vector import is_vector, rasterize_labels

UNMAPPED = np.iinfo(np.int64).min


def labels_on_grid(
    path: Path, field: str | None, classes: Sequence[ClassSpec], grid: GridSpec, background: str | None = None
) -> np.ndarray:
    """Class indices (0..K-1) on ``grid``, IGNORE_INDEX where unlabelled or not a listed class."""
    if is_vector(path):
        return rasterize_labels(path, field, classes, grid, background)
    return _raster_labels(path, classes, grid)


def _raster_labels(path: Path, classes: Sequence[ClassSpec], grid: GridSpec) -> np.ndarray:
    with open_raster(path) as ds:
        if ds.crs is None:
            raise InputError("label raster has no CRS; assign the image's CRS to it", path)
        values = ds.read(1)
        src_grid = GridSpec(ds.crs, ds.transform, ds.width, ds.height)
    lookup = _value_lookup(classes)
    indices = np.full(values.shape, IGNORE_INDEX, dtype=np.uint8)
    for value, index in lookup.items():
        indices[values == value] = index
    if src_grid.same_grid(grid):
        return indices
    return nearest_on_grid(indices, src_grid, grid, IGNORE_INDEX)


def _value_lookup(classes: Sequence[ClassSpec]) -> dict[int, int]:
    lookup = {}
    for index, spec in enumerate(classes):
        try:
            lookup[int(spec.value)] = index
        except ValueError:
            raise InputError(f"class value {spec.value!r} is not a number, but label rasters hold numbers") from None
    return lookup
