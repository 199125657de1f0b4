"""Writing class maps as DESIGN §3 describes: uint8, nodata 255, the input's exact grid, colours, names."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.io
from rasterio.enums import Resampling

from geoseg.config import IGNORE_INDEX, ClassSpec
from geoseg.io.raster import GridSpec, atomic_path, ensure_writable

CLASSES_TAG = "GEOSEG_CLASSES"


def class_map_profile(grid: GridSpec) -> dict:
    return {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "uint8",
        "crs": grid.crs, "transform": grid.transform, "nodata": IGNORE_INDEX, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip


@contextlib.contextmanager
def open_class_map(
    path: Path, grid: GridSpec, specs: Sequence[ClassSpec], tags: dict[str, str] | None = None
) -> Iterator[rasterio.io.DatasetWriter]:
    """A class map to fill block by block; it appears at ``path``, finished, only if the block completes.

    On completion the colour table, class names and internal overviews (mode) are added.
    """
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **class_map_profile(grid)) as dst:
        yield dst
        dst.write_colormap(1, {c.id: _rgba(c.color) for c in specs})
        dst.update_tags(**{CLASSES_TAG: json.dumps([{"id": c.id, "name": c.name, "color": c.color} for c in specs])})
        dst.update_tags(1, **{f"CLASS_{c.id}": c.name for c in specs})
        if tags:
            dst.update_tags(**tags)
        _overviews(dst, grid, Resampling.mode)


@contextlib.contextmanager
def open_confidence_map(path: Path, grid: GridSpec) -> Iterator[rasterio.io.DatasetWriter]:
    """Confidence in percent (uint8 0-100, nodata 255) on the same grid, finished atomically."""
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **class_map_profile(grid)) as dst:
        yield dst
        dst.update_tags(1, DESCRIPTION="blended probability of the chosen class, percent")
        _overviews(dst, grid, Resampling.average)


def confidence_percent(confidence: np.ndarray, classes: np.ndarray) -> np.ndarray:
    out = np.clip(np.rint(confidence * 100), 0, 100).astype(np.uint8)
    out[classes == IGNORE_INDEX] = IGNORE_INDEX
    return out


def write_class_map(
    path: Path, classes: np.ndarray, grid: GridSpec, specs: Sequence[ClassSpec], overwrite: bool
) -> Path:
    """Write an in-memory class map atomically, with colour table, class names and overviews."""
    ensure_writable(path, overwrite)
    with open_class_map(path, grid, specs) as dst:
        dst.write(classes, 1)
    return path


def _overviews(dst: rasterio.io.DatasetWriter, grid: GridSpec, resampling: Resampling) -> None:
    factors = [f for f in (2, 4, 8, 16, 32, 64, 128) if min(grid.width, grid.height) // f >= 64]
    if factors:
        dst.build_overviews(factors, resampling)


def _rgba(color: str) -> tuple[int, int, int, int]:
    color = color.lstrip("#")
    return (int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16), 255)
