"""The class-map format, written and read here only (README: "Segmenting a mosaic").

A class map is a one-band uint8 GeoTIFF on the input's exact grid: class ids 0-254, nodata 255, a
colour table, the class table as JSON in the dataset tag ``GEOSEG_CLASSES`` (``[{id, name, color}]``)
and each name again in the band's ``CLASS_<id>`` tags, tiled 256 px, deflate, internal overviews
(mode). The confidence map beside it shares the profile (percent 0-100, nodata 255).

Two readers: ``read_class_table`` is strict (evaluate, change: a damaged table is an error), and
``class_names`` is lenient (vectorize: a damaged table falls back to the band tags). The QGIS plugin
mirrors the reader in ``qgis_plugin/geoseg_qgis/styling.py``, as it cannot import geoseg.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.io
from rasterio.enums import Resampling

from geoseg.config import DEFAULT_COLORS, IGNORE_INDEX, ClassSpec
from geoseg.errors import InputError
from geoseg.io.raster import GridSpec, atomic_path, ensure_writable, open_raster

MAX_CLASS_ID = 254

CLASSES_TAG = "GEOSEG_CLASSES"


def class_map_profile(grid: GridSpec) -> dict:
    return {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "uint8",
        "crs": grid.crs, "transform": grid.transform, "nodata": IGNORE_INDEX, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate", "num_threads": gdal_threads(),
    }  # fmt: skip


def gdal_threads() -> str:
    """Threads GDAL may use to compress tiles and compute overviews: the user's ``GDAL_NUM_THREADS``, else all
    cores. The class map's single writer otherwise compresses every tile on one core while the blocks wait."""
    return os.environ.get("GDAL_NUM_THREADS", "ALL_CPUS")


@contextlib.contextmanager
def open_class_map(
    path: Path, grid: GridSpec, specs: Sequence[ClassSpec], tags: dict[str, str] | None = None
) -> Iterator[rasterio.io.DatasetWriter]:
    """A class map to fill block by block; it appears at ``path``, finished, only if the block completes.

    On completion the colour table, class names and internal overviews (mode) are added.
    """
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **class_map_profile(grid)) as dst:
        yield dst
        dst.write_colormap(1, {c.id: hex_rgba(c.color) for c in specs})
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
    """The blended probability of the chosen class in percent (uint8 0-100), and the class map's nodata where
    it has no class; there ``confidence`` is 0 (a block's) or NaN (``geoseg.segment``'s)."""
    out = np.clip(np.rint(np.nan_to_num(confidence, nan=0.0) * 100), 0, 100).astype(np.uint8)
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
        with rasterio.Env(GDAL_NUM_THREADS=gdal_threads()):
            dst.build_overviews(factors, resampling)


def hex_rgba(color: str) -> tuple[int, int, int, int]:
    """'#rrggbb' as an opaque RGBA tuple."""
    color = color.lstrip("#")
    return (int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16), 255)


def valid_class_ids(ids: Sequence[int]) -> bool:
    """Unique ids within 0-254 (255 is nodata)."""
    return len(set(ids)) == len(ids) and all(0 <= i <= MAX_CLASS_ID for i in ids)


def read_class_table(path: str | Path) -> list[ClassSpec] | None:
    """The class table a geoseg class map carries in its ``GEOSEG_CLASSES`` tag, or None without one.

    Raises:
        InputError: the tag is there but is not a JSON list of ``{id, name, color}`` with valid ids.
    """
    path = Path(path)
    with open_raster(path) as ds:
        raw = ds.tags().get(CLASSES_TAG)
    if raw is None:
        return None
    classes: list[ClassSpec] | None
    try:
        entries = json.loads(raw)
        classes = [
            ClassSpec(
                value=str(int(entry["id"])),
                id=int(entry["id"]),
                name=str(entry.get("name", entry["id"])),
                color=str(entry.get("color") or DEFAULT_COLORS[index % len(DEFAULT_COLORS)]),
            )
            for index, entry in enumerate(entries)
        ]
    except (ValueError, TypeError, KeyError, AttributeError):
        classes = None
    if classes is None or not valid_class_ids([c.id for c in classes]):
        raise InputError(
            f"its {CLASSES_TAG} tag is not a JSON list of {{id, name, color}} with unique ids 0-254; "
            "remove or fix the tag",
            path,
        )
    return classes or None


def class_names(ds: rasterio.DatasetReader, classes: Sequence[ClassSpec] | None = None) -> dict[int, str]:
    """Class id -> name: from ``classes`` when given, else the class table, else (no table, an empty or a
    damaged one) the band's ``CLASS_<id>`` tags. The QGIS plugin's reader (styling.py) follows the same rule."""
    if classes:
        return {int(c.id): c.name for c in classes}
    try:
        table = {int(c["id"]): str(c["name"]) for c in json.loads(ds.tags().get(CLASSES_TAG, "[]"))}
        if table:
            return table
    except (ValueError, TypeError, KeyError, AttributeError):
        pass  # a damaged tag: fall back to the band's CLASS_<id> tags
    names = {}
    for key, name in ds.tags(1).items():
        if key.startswith("CLASS_") and key[6:].isdigit():
            names[int(key[6:])] = name
    return names
