"""Polygons and per-class areas from a class map, written or in memory (docs/formats.md, "Polygons and areas").

``vectorize_class_map`` polygonizes the class map *file* with GDAL (``rasterio.features.shapes``), strip by strip
of full rows (``geoseg.polygon_strips``), joining the regions that cross strip edges, so the result depends only
on the pixels, never on how the map was written (block size, internal tiling) or on the strips' height. What is
held in memory: one strip (at most ``_STRIP_PIXELS``), GDAL's polygons of that strip, the pieces of regions still
open at its lower edge, and the finished polygons kept for the output (built 50,000 at a time from one coordinate
array each). Nodata (255, or the file's nodata value) is masked out: it belongs to no polygon and joins no class
region.

Regions smaller than ``sieve`` pixels (default ``DEFAULT_SIEVE``, 9: less than a 3×3 square) are first merged
into their largest neighbour, as GDAL's sieve does, so a noisy map's speckles do not each become a polygon;
nodata neither grows nor absorbs anything. The class map file is not changed: each strip is sieved as it is read,
with ``sieve`` rows of context above and below, so whether a region is small is decided exactly. ``sieve=0``
gives one polygon per region of the class map. Small regions can also be dropped (``min_area`` in CRS units²,
``min_pixels`` in pixels): they leave a gap, never an overlap.

Simplification is shapely's coverage simplification (Visvalingam-Whyatt, shapely ≥ 2.1) over all polygons
at once, so a border two polygons share stays one border: no gaps or overlaps appear.

``class_map_polygons`` runs the same steps on an in-memory class map (``geoseg.vectorize``'s engine) and
returns the GeoDataFrame instead of writing it.

``class_areas`` streams the class map in strips of rows and counts pixels per class with ``np.bincount``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyogrio.errors
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geoseg.config import IGNORE_INDEX, ClassSpec
from geoseg.errors import Cancelled, ConfigError, InputError, OutputError
from geoseg.io.classmap import class_names
from geoseg.io.raster import GridSpec, atomic_path, corrupted, ensure_writable, open_raster
from geoseg.io.vector import inside_window
from geoseg.polygon_strips import PolygonizedStrip, joined_regions, polygonized, region_polygons
from geoseg.polygon_workers import pooled_strips, strip_edges, strip_rows

if TYPE_CHECKING:
    import geopandas as gpd

LAYER_NAME = "classes"
CLASS_MAP_DTYPES = ("uint8", "uint16")
_FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".parquet": "Parquet"}
_STRIP_PIXELS = 1 << 24  # class_areas and the sieve read strips of at most this many pixels (16 MiB of uint8)
DEFAULT_SIEVE = 9  # px: regions smaller than a 3×3 square are merged into a neighbour before polygonizing


@dataclass(frozen=True)
class VectorizeResult:
    """What ``vectorize_class_map`` wrote."""

    path: Path
    n_polygons: int
    counts: dict[int, int] = field(default_factory=dict)  # class id -> polygons written
    dropped: int = 0  # polygons removed by min_area / min_pixels
    merged_pixels: int = 0  # pixels of regions under the sieve size, polygonized as their neighbour's class
    simplified: bool = False  # False also when simplification was asked for but is unavailable


def vectorize_class_map(
    class_map: str | Path,
    out: str | Path,
    classes: Sequence[ClassSpec] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    connectivity: int = 4,
    overwrite: bool = False,
    min_pixels: int = 0,
    cancel: threading.Event | None = None,
    sieve: int = DEFAULT_SIEVE,
    workers: int = 1,
) -> VectorizeResult:
    """Polygonize a class map into ``out`` (.gpkg layer "classes", .geojson/.json, or .parquet).

    Regions of one class connected by ``connectivity`` (4: edges; 8: edges and corners) become one polygon
    each, holes included, after regions smaller than ``sieve`` pixels are merged into their largest
    neighbour (0: none). Regions smaller than ``min_area`` (CRS units²) or ``min_pixels`` pixels are
    dropped. ``simplify`` is the coverage simplification tolerance in CRS units (roughly the square root
    of the largest triangle area removed); 0 keeps the exact pixel outlines.

    Fields: ``class_id``, ``class_name`` (from ``classes``, else the class map's GEOSEG_CLASSES tag, else
    the id), ``area`` in CRS units² and, where the CRS is projected, ``area_m2``. The output has the class
    map's CRS, only valid geometries, and appears atomically; an existing file is replaced only with
    ``overwrite``. Setting ``cancel`` (from another thread) stops the work at its next batch of polygons
    with :class:`~geoseg.errors.Cancelled`, writing nothing.

    With ``workers`` > 1, a map of more than two strips is sieved and polygonized by that many processes, strip
    by strip (``geoseg.polygon_workers``); the polygons are the same. They are spawned, so a script that asks
    for them needs the ``if __name__ == "__main__":`` guard; the command line passes its ``--workers``.
    """
    class_map, out = Path(class_map), Path(out)
    driver = _output_driver(out)
    _check_options(connectivity, min_area, min_pixels, simplify, sieve)
    ensure_writable(out, overwrite)
    _ensure_folder_writable(out)

    with open_raster(class_map) as ds:
        check_class_map(ds, class_map)
    with open_raster(class_map) as ds:
        names = class_names(ds, classes)
        crs = ds.crs
        threshold = _area_threshold(min_area, min_pixels, abs(ds.transform.determinant))
        skip = nodata_ids(ds.nodata)

        def read(top: int, bottom: int) -> np.ndarray:
            try:
                return ds.read(1, window=Window(0, top, ds.width, bottom - top))
            except rasterio.errors.RasterioIOError as exc:
                raise corrupted(class_map, exc) from None

        strips = _FileStrips(class_map, read, ds.height, ds.width, sieve, connectivity, skip, cancel, workers)
        regions = joined_regions(strips, ds.height, ds.transform, connectivity)
        kept = _Kept(regions, threshold, connectivity, cancel)
        batches = _simplified(kept, simplify) if simplify > 0 else kept
        counts: Counter[int] = Counter()

        def frames() -> Iterator[gpd.GeoDataFrame]:
            """A frame per batch as the strips come in (none held back), or one empty frame."""
            empty = True
            for polygons, ids in batches:
                _stop_if(cancel)
                counts.update(ids.tolist())
                empty = False
                yield polygon_frame(polygons, ids.tolist(), names, crs)
            if empty:
                yield polygon_frame(np.empty(0, dtype=object), [], names, crs)

        _write(out, driver, frames(), multi=connectivity == 8)

    return VectorizeResult(out, sum(counts.values()), dict(sorted(counts.items())), kept.dropped,
                           merged_pixels=strips.merged, simplified=simplify > 0 and _can_simplify())  # fmt: skip


def class_map_polygons(
    class_map: np.ndarray,
    transform: Affine,
    crs: rasterio.crs.CRS | None,
    classes: Sequence[ClassSpec] | None = None,
    nodata: int | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    connectivity: int = 4,
    min_pixels: int = 0,
    sieve: int = DEFAULT_SIEVE,
) -> gpd.GeoDataFrame:
    """``vectorize_class_map`` for an in-memory (height, width) class map: the same polygons, as a GeoDataFrame.

    ``nodata`` is skipped besides 255; class names come from ``classes``, else are the ids.
    """
    _check_options(connectivity, min_area, min_pixels, simplify, sieve)
    names = {int(c.id): c.name for c in classes} if classes else {}
    threshold = _area_threshold(min_area, min_pixels, abs(transform.determinant))
    height, width = class_map.shape
    skip = nodata_ids(nodata)
    strips = _ClassStrips(lambda top, bottom: class_map[top:bottom], height, width, sieve, connectivity, skip)
    regions = region_polygons(strips, height, transform, connectivity, skip)
    kept = _Kept(regions, threshold, connectivity)
    batches = list(_simplified(kept, simplify) if simplify > 0 else kept)
    polygons = np.concatenate([b for b, _ in batches]) if batches else np.empty(0, dtype=object)
    ids = np.concatenate([v for _, v in batches]).tolist() if batches else []
    return polygon_frame(polygons, ids, names, crs)


class _ClassStrips:
    """The class map's strips of full rows, top to bottom, as (first row, rows): sieved when ``sieve`` > 0.

    Counts the pixels the sieve changed (``merged``) and stops at the next strip once ``cancel`` is set.
    """

    def __init__(self, read: Callable[[int, int], np.ndarray], height: int, width: int, sieve: int,
                 connectivity: int, skip: set[int], cancel: threading.Event | None = None) -> None:  # fmt: skip
        self.read, self.height, self.width = read, height, width
        self.sieve, self.connectivity, self.skip, self.cancel = sieve, connectivity, skip, cancel
        self.merged = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Each strip is sieved with ``sieve`` rows of context above and below (``polygon_workers.sieved_rows``).
        Which neighbour is the largest is judged within the strip and its context, so where a speckle touches
        two large regions it may join the other one than a sieve of the whole map would; the strips depend
        only on the map's width, never on how it was written or split."""
        for top, bottom in strip_edges(self.height, self.width, _STRIP_PIXELS):
            rows, changed = strip_rows(self.read, top, bottom, self.height, self.sieve, self.connectivity, self.skip)
            _stop_if(self.cancel)
            self.merged += changed
            yield top, rows


class _FileStrips:
    """A class map file's strips, polygonized: by worker processes when there are more than two strips and
    more than one worker, else in this process (``_ClassStrips``). Counts the pixels the sieve changed."""

    def __init__(self, path: Path, read: Callable[[int, int], np.ndarray], height: int, width: int, sieve: int,
                 connectivity: int, skip: set[int], cancel: threading.Event | None,
                 workers: int) -> None:  # fmt: skip
        self.path, self.height, self.sieve, self.connectivity, self.skip = path, height, sieve, connectivity, skip
        self.cancel = cancel
        self.edges = strip_edges(height, width, _STRIP_PIXELS)
        self.workers = min(workers, len(self.edges))
        self.serial = _ClassStrips(read, height, width, sieve, connectivity, skip, cancel)
        self.merged = 0

    def __iter__(self) -> Iterator[PolygonizedStrip]:
        if len(self.edges) <= 2 or self.workers <= 1:
            for top, rows in self.serial:
                yield polygonized(top, rows, self.connectivity, self.skip)
            self.merged = self.serial.merged
            return
        for strip in pooled_strips(str(self.path), self.edges, self.height, self.sieve, self.connectivity,
                                   self.skip, self.workers, self.cancel):  # fmt: skip
            self.merged += strip.merged
            yield strip


def _stop_if(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("polygons stopped: the run is being interrupted")


class _Kept:
    """The regions' polygons that stay, a batch at a time: those under the area threshold dropped (and counted),
    the others repaired."""

    def __init__(self, regions: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float, connectivity: int,
                 cancel: threading.Event | None = None) -> None:  # fmt: skip
        self.regions, self.threshold, self.connectivity, self.cancel = regions, threshold, connectivity, cancel
        self.dropped = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch, values in self.regions:
            _stop_if(self.cancel)
            keep = shapely.area(batch) >= self.threshold
            self.dropped += int(np.count_nonzero(~keep))
            polygons = _valid(batch[keep], pixel_regions=self.connectivity == 4)
            polygonal = ~shapely.is_empty(polygons)  # a repair that left nothing (never seen from pixel outlines)
            if polygonal.any():
                yield polygons[polygonal], values[keep][polygonal]


def _simplified(kept: Iterable[tuple[np.ndarray, np.ndarray]], tolerance: float) -> Iterator[tuple]:
    """All polygons at once, coverage-simplified (so shared borders stay shared), as one batch."""
    batches = list(kept)
    if not batches:
        return
    polygons = np.concatenate([b for b, _ in batches])
    ids = np.concatenate([v for _, v in batches])
    polygons = _valid(_coverage_simplify(polygons, tolerance))
    polygonal = ~shapely.is_empty(polygons)
    yield polygons[polygonal], ids[polygonal]


def class_areas(class_map: str | Path, classes: Sequence[ClassSpec] | None = None) -> dict:
    """Per-class pixel count, area and share of the valid area, JSON-ready.

    Streams the map in strips of full rows (at most 16 Mpx each). ``area`` is in CRS units²; ``area_m2``
    and ``area_ha`` are given where the CRS is projected, else null. ``percent`` is of the valid
    (non-nodata) pixels. Classes named in ``classes`` (or the map's tag) are listed even with no pixels.
    """
    class_map = Path(class_map)
    with open_raster(class_map) as ds:
        check_class_map(ds, class_map)
    with open_raster(class_map) as ds:
        names = class_names(ds, classes)
        skip = nodata_ids(ds.nodata)
        try:  # the strips cover every tile, so a damaged one fails here, in one line
            counts = class_pixel_counts(ds)
        except rasterio.errors.RasterioIOError as exc:
            raise corrupted(class_map, exc) from None
        crs = ds.crs
        pixel_area = abs(ds.transform.determinant)
    to_m2 = square_metres_factor(crs)
    valid = int(counts.sum())
    ids = sorted(set(names) - skip | {int(i) for i in np.flatnonzero(counts)})
    rows = []
    for class_id in ids:
        pixels = int(counts[class_id]) if class_id < counts.size else 0
        area = pixels * pixel_area
        rows.append(
            {
                "class_id": class_id,
                "name": names.get(class_id, str(class_id)),
                "pixels": pixels,
                "area": area,
                "area_m2": area * to_m2 if to_m2 else None,
                "area_ha": area * to_m2 / 10_000 if to_m2 else None,
                "percent": 100.0 * pixels / valid if valid else 0.0,
            }
        )
    return {
        "class_map": str(class_map),
        "crs": crs.to_string() if crs else None,
        "crs_units": _linear_units(crs),
        "pixel_area": pixel_area,
        "pixel_area_m2": pixel_area * to_m2 if to_m2 else None,
        "valid_pixels": valid,
        "valid_area": valid * pixel_area,
        "valid_area_m2": valid * pixel_area * to_m2 if to_m2 else None,
        "classes": rows,
    }


def class_pixel_counts(ds: rasterio.DatasetReader, area: BaseGeometry | None = None) -> np.ndarray:
    """Pixels per class id of an open class map, streamed in strips of full rows (at most 16 Mpx each);
    nodata values count 0. With ``area`` (in the map's CRS), only pixels whose centre lies inside it count."""
    counts = np.zeros(256 if ds.dtypes[0] == "uint8" else 65536, dtype=np.int64)
    grid = GridSpec(ds.crs, ds.transform, ds.width, ds.height)
    seen: list[int] = []  # the values met so far
    for window in _strips(ds.width, ds.height):
        values = ds.read(1, window=window)
        if area is not None:
            values = values[inside_window(area, grid, window)]
        seen = _add_counts(counts, values, seen)
    for value in nodata_ids(ds.nodata):
        if value < counts.size:
            counts[value] = 0
    return counts


# --- helpers -------------------------------------------------------------------------------------------


def _output_driver(out: Path) -> str:
    driver = _FORMATS.get(out.suffix.lower())
    if driver is None:
        known = ", ".join(_FORMATS)
        raise OutputError(f"unknown polygon format {out.suffix or '(no suffix)'!r}; use one of {known}", out)
    if driver == "Parquet" and importlib.util.find_spec("pyarrow") is None:
        raise OutputError("writing GeoParquet needs the pyarrow package; install it or write .gpkg", out)
    return driver


def _ensure_folder_writable(out: Path) -> None:
    """Fail before any work when the output's folder cannot be created or written."""
    folder = out.parent.absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create the output folder: {existing} is a file, not a folder", out)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"folder {existing} is not writable; choose another output folder", out)


def check_class_map(ds: rasterio.DatasetReader, path: Path) -> None:
    if ds.count != 1:
        raise InputError(f"is not a class map: it has {ds.count} bands (an image?), expected one band of class ids",
                         path)  # fmt: skip
    if ds.dtypes[0] not in CLASS_MAP_DTYPES:
        raise InputError(f"is not a class map: band 1 is {ds.dtypes[0]}, expected uint8 class ids", path)
    if ds.crs is None:
        raise InputError("has no CRS, so its polygons would have no place on the map; assign one "
                         "(gdal_edit.py -a_srs EPSG:…) and run again", path)  # fmt: skip


def nodata_ids(nodata: float | None) -> set[int]:
    """The values of a class map that are not classes: 255 (ids are 0-254), and the map's own nodata value."""
    skip = {IGNORE_INDEX}
    if nodata is not None and float(nodata).is_integer():
        skip.add(int(nodata))
    return skip


def _check_options(connectivity: int, min_area: float, min_pixels: int, simplify: float, sieve: int = 0) -> None:
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, not {connectivity}")
    if min_area < 0 or min_pixels < 0 or simplify < 0 or sieve < 0:
        raise ConfigError("sieve, min area, min pixels and simplification tolerance must be 0 or more")


def _area_threshold(min_area: float, min_pixels: int, pixel_area: float) -> float:
    # Pixel areas are exact multiples of pixel_area; a hair of slack keeps "≥ N px" exact in floating point.
    return max(min_area, min_pixels * pixel_area) * (1 - 1e-9)


_FEW_VALUES = 24  # up to this many distinct values, counting each by comparison beats np.bincount


def _add_counts(counts: np.ndarray, values: np.ndarray, seen: list[int]) -> list[int]:
    """Add ``values``' count of each value to ``counts``; return the values met so far.

    A class map holds a few values, and comparing a strip with each of them costs 2 ms per 16 Mpx where
    ``np.bincount`` (which widens every pixel to 64 bits first) costs 60 ms. When the values already met do
    not account for every pixel, the strip is counted in full and the new values join them. The first strip
    starts from the values of every 64th pixel.
    """
    if not seen:
        seen = np.unique(values.ravel()[::64]).tolist()
    if 0 < len(seen) <= _FEW_VALUES:
        each = [np.count_nonzero(values == value) for value in seen]
        if sum(each) == values.size:
            counts[seen] += each
            return seen
    full = np.bincount(values.ravel(), minlength=counts.size)
    counts += full
    return sorted(set(seen) | set(np.flatnonzero(full).tolist()))


def _strips(width: int, height: int) -> Iterator[Window]:
    for top, bottom in strip_edges(height, width, _STRIP_PIXELS):
        yield Window(0, top, width, bottom - top)


def _valid(polygons: np.ndarray, pixel_regions: bool = False) -> np.ndarray:
    """Repair invalid geometries, keeping only their polygonal parts.

    ``pixel_regions``: the polygons are GDAL's outlines of 4-connected regions. Such a region's interior is
    connected and its holes are other regions, so the only way it can be invalid is a ring that touches itself
    at a corner. Only polygons with a ring that is not simple then get the full validity check, which on
    polygons with thousands of holes costs several times more (bench/RESULTS.md, issue 13).
    """
    if not len(polygons):
        return polygons
    if pixel_regions:
        rings, owners = shapely.get_rings(polygons, return_index=True)
        suspect = np.zeros(len(polygons), dtype=bool)
        np.logical_or.at(suspect, owners, ~shapely.is_simple(rings))
        candidates = np.flatnonzero(suspect)
        bad = candidates[~shapely.is_valid(polygons[candidates])]
    else:
        bad = np.flatnonzero(~shapely.is_valid(polygons))
    for i in bad:
        fixed = shapely.make_valid(polygons[i])
        if fixed.geom_type not in ("Polygon", "MultiPolygon"):
            parts = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
            fixed = shapely.union_all(parts) if parts else shapely.Polygon()
        polygons[i] = fixed
    return polygons


def _can_simplify() -> bool:
    return hasattr(shapely, "coverage_simplify")


def _coverage_simplify(polygons: np.ndarray, tolerance: float) -> np.ndarray:
    if not _can_simplify():
        warnings.warn(
            f"simplification skipped: it needs shapely ≥ 2.1 (coverage_simplify) to keep shared borders shared, "
            f"this is shapely {shapely.__version__}; polygons keep their exact pixel outlines",
            RuntimeWarning,
            stacklevel=4,
        )
        return polygons
    return shapely.coverage_simplify(polygons, tolerance)


def _linear_units(crs: rasterio.crs.CRS | None) -> str | None:
    if crs is None:
        return None
    if not crs.is_projected:
        return "degree" if crs.is_geographic else None
    try:
        return crs.linear_units_factor[0]
    except rasterio.errors.CRSError:
        return None


def square_metres_factor(crs: rasterio.crs.CRS | None) -> float | None:
    """m² per CRS unit² for a projected CRS; None for a geographic or missing one."""
    if crs is None or not crs.is_projected:
        return None
    try:
        return crs.linear_units_factor[1] ** 2
    except rasterio.errors.CRSError:
        return None


def polygon_frame(
    polygons: np.ndarray, ids: list[int], names: dict[int, str], crs: rasterio.crs.CRS | None
) -> gpd.GeoDataFrame:
    """The polygon layer of docs/formats.md ("Polygons"): class_id, class_name, area (CRS units²), area_m2 where
    projected."""
    import geopandas as gpd

    areas = shapely.area(polygons) if len(polygons) else np.empty(0)
    columns = {
        "class_id": np.asarray(ids, dtype=np.int32),
        "class_name": [names.get(i, str(i)) for i in ids],
        "area": np.asarray(areas, dtype=np.float64),
    }
    to_m2 = square_metres_factor(crs)
    if to_m2 is not None:
        columns["area_m2"] = columns["area"] * to_m2
    return gpd.GeoDataFrame(columns, geometry=list(polygons), crs=crs.to_wkt() if crs else None)


def _write(out: Path, driver: str, frames: Iterable[gpd.GeoDataFrame], multi: bool) -> None:
    """Write ``frames`` (at least one) as one layer, atomically. A GeoPackage takes them one by one, so no more
    than a frame is held; the other formats are written in one go. ``multi``: a MultiPolygon layer (regions
    joined at corners can be multipart), else a Polygon layer."""
    import pandas as pd

    staged: Path | None = None
    geometry_type = "MultiPolygon" if multi else "Polygon"
    try:
        with atomic_path(out) as tmp:
            # The drivers create the file themselves (and GPKG wants its own extension): write beside the
            # temporary name, then move onto it; atomic_path renames it to ``out`` once complete.
            staged = tmp.with_name(tmp.name + out.suffix)
            if driver == "GPKG":
                for n, frame in enumerate(frames):
                    frame.to_file(staged, driver=driver, engine="pyogrio", layer=LAYER_NAME, append=n > 0,
                                  geometry_type=geometry_type, promote_to_multi=multi)  # fmt: skip
            else:
                frame = pd.concat(list(frames), ignore_index=True)
                if driver == "Parquet":
                    frame.to_parquet(staged)
                else:
                    extra = {"geometry_type": geometry_type} if not len(frame) else {}
                    frame.to_file(staged, driver=driver, engine="pyogrio", **extra)
            os.replace(staged, tmp)
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"cannot write polygons ({message})", out) from None
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)


__all__ = [
    "DEFAULT_SIEVE",
    "LAYER_NAME",
    "VectorizeResult",
    "class_areas",
    "class_map_polygons",
    "polygon_frame",
    "vectorize_class_map",
]
