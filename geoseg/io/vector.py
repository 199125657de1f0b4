"""Vector inputs: label polygons and regions, reprojected and burnt onto an image's pixel grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from rasterio import features
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry.base import BaseGeometry

from geoseg.config import IGNORE_INDEX, ClassSpec, normalize_label_value
from geoseg.errors import InputError
from geoseg.io.raster import GridSpec

VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet"}


def is_vector(path: Path) -> bool:
    return path.suffix.lower() in VECTOR_SUFFIXES


def read_vector(path: str | Path) -> gpd.GeoDataFrame:
    """Read a vector file, refusing files without a CRS or without features."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found; check the path", path)
    try:
        frame = gpd.read_file(path) if path.suffix.lower() != ".parquet" else gpd.read_parquet(path)
    except Exception as exc:  # pyogrio raises several unrelated types for unreadable files
        raise InputError(f"not a readable vector file ({str(exc).splitlines()[0]})", path) from None
    if frame.crs is None:
        raise InputError("has no CRS; set one (e.g. ogr2ogr -a_srs EPSG:XXXX) so it can be placed", path)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise InputError("holds no geometries", path)
    return frame


def rasterize_labels(
    path: str | Path,
    field: str | None,
    classes: Sequence[ClassSpec],
    grid: GridSpec,
    background: str | None = None,
    field_setting: str = "data.label_field",
) -> np.ndarray:
    """Burn label polygons onto ``grid`` as class indices (0..K-1), IGNORE_INDEX elsewhere.

    Pixels are labelled when their centre falls inside a polygon (GDAL's default rule); values of
    ``field`` not listed in ``classes`` stay ignored, as does every pixel no polygon covers unless
    ``background`` names the class value those pixels take (e.g. "no building"). Where
    polygons overlap, the later feature wins, as in GDAL. ``field_setting`` is how the caller's user sets
    ``field`` (a config key or a command-line option), for the message when it is missing.
    """
    path = Path(path)
    frame = read_vector(path)
    if field is None:
        raise InputError(f"vector labels need {field_setting} naming the class attribute", path)
    if field not in frame.columns:
        columns = [c for c in frame.columns if c != frame.geometry.name]
        raise InputError(f"has no attribute {field!r}; its attributes are {columns}", path)
    frame = frame.to_crs(grid.crs)
    index_of = {c.value: i for i, c in enumerate(classes)}
    values = frame[field].map(lambda v: index_of.get(normalize_label_value(v), IGNORE_INDEX))
    shapes = [(geom, int(v)) for geom, v in zip(frame.geometry, values, strict=True) if v != IGNORE_INDEX]
    fill = index_of[background] if background is not None else IGNORE_INDEX
    labels = np.full((grid.height, grid.width), fill, dtype=np.uint8)
    if shapes:
        features.rasterize(shapes, out=labels, transform=grid.transform, all_touched=False)
    return labels


def rasterize_region(geometries: Sequence[BaseGeometry], grid: GridSpec) -> np.ndarray:
    """Boolean mask of the pixels whose centre lies inside any of ``geometries`` (in grid's CRS)."""
    if not geometries:
        return np.zeros((grid.height, grid.width), dtype=bool)
    burnt = features.rasterize(
        [(g, 1) for g in geometries],
        out_shape=(grid.height, grid.width),
        transform=grid.transform,
        fill=0,
        dtype="uint8",
    )
    return burnt.astype(bool)


def read_region(path: str | Path, grid: GridSpec) -> np.ndarray:
    """A region file (any CRS) as a boolean mask on ``grid``."""
    frame = read_vector(path).to_crs(grid.crs)
    return rasterize_region(list(frame.geometry), grid)


def aoi_geometry(path: Path, grid: GridSpec, raster: Path) -> BaseGeometry:
    """An area-of-interest file's union in ``grid``'s CRS; refused when it does not overlap ``raster``."""
    frame = read_vector(path).to_crs(grid.crs)
    area = shapely.union_all(frame.geometry.make_valid().values)
    if not area.intersects(shapely.box(*grid.bounds)):
        raise InputError(f"does not overlap {raster.name} (after reprojection to {grid.crs})", path)
    return area


def inside_window(area: BaseGeometry, grid: GridSpec, window: Window) -> np.ndarray:
    """Which pixels of ``window`` (of ``grid``) have their centre inside ``area``: one window at a time."""
    shape = (int(window.height), int(window.width))
    return features.geometry_mask([area], out_shape=shape, transform=window_transform(window, grid.transform),
                                  invert=True)  # fmt: skip
