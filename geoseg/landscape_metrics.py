"""`geoseg landscape`: FRAGSTATS-style metrics of a class map, computed by pylandstats and named by class.

geoseg reads the map, checks it, and hands pylandstats the array with the pixel size in metres and 255 as
nodata; pylandstats computes every metric (nothing here re-implements one). Class rows add geoseg's own
boundary shape, the convex and concave shares of each class's edge length (``geoseg/boundary.py``). With
zones (a polygon file and its id field), each zone's pixels (pixel centre inside the zone) are measured as a
landscape of their own. The whole map is read into memory: one byte per pixel, plus pylandstats' own working
arrays.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg.boundary import edge_shape, write_edges_png
from geoseg.config import IGNORE_INDEX, ClassSpec
from geoseg.errors import InputError
from geoseg.io.classmap import class_names, read_class_table
from geoseg.io.raster import GridSpec, atomic_path, ensure_writable, open_raster, verify_readable
from geoseg.io.vector import aoi_geometry, rasterize_region, read_vector
from geoseg.polygons import check_class_map, nodata_ids, square_metres_factor

LEVELS = ("class", "landscape", "patch")
# pylandstats' names; units as pylandstats gives them for a pixel size in metres
CLASS_METRICS = ("proportion_of_landscape", "number_of_patches", "area_mn", "edge_density",
                 "landscape_shape_index", "largest_patch_index")  # fmt: skip
LANDSCAPE_METRICS = ("number_of_patches", "area_mn", "edge_density", "landscape_shape_index",
                     "largest_patch_index", "shannon_diversity_index")  # fmt: skip
PATCH_METRICS = ("area", "perimeter", "perimeter_area_ratio", "shape_index", "fractal_dimension")
UNITS = {"proportion_of_landscape": "%", "number_of_patches": "count", "area_mn": "ha", "edge_density": "m/ha",
         "landscape_shape_index": "", "largest_patch_index": "%", "shannon_diversity_index": "",
         "area": "ha", "perimeter": "m", "perimeter_area_ratio": "m/m²", "shape_index": "",
         "fractal_dimension": "", "convex_edge_share": "", "concave_edge_share": ""}  # fmt: skip


def landscape_metrics(
    class_map: str | Path,
    level: str = "class",
    classes: Sequence[ClassSpec] | None = None,
    zones: str | Path | None = None,
    zone_field: str | None = None,
    aoi: str | Path | None = None,
) -> list[dict]:
    """Metrics of ``class_map`` at ``level`` (class, landscape or patch), one dict per row.

    Rows hold ``zone`` (the zone's ``zone_field`` value, or None for the whole map), ``class_id`` and
    ``class`` (None at landscape level), ``patch`` (patch level only) and the metrics (NaN where
    pylandstats gives none). With ``aoi`` (polygons, any CRS) the pixels outside it are outside the
    landscape. Raises InputError for a map that is not a class map, has no projected CRS, or has no valid
    pixel (in the whole map, or in every zone).
    """
    if level not in LEVELS:
        raise InputError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    class_map = Path(class_map)
    with open_raster(class_map) as ds:
        check_class_map(ds, class_map)
        to_m2 = square_metres_factor(ds.crs)
        if to_m2 is None:
            raise InputError("has no projected CRS, so patch areas and edges have no metres; warp it to a projected "
                             "CRS (gdalwarp -t_srs EPSG:…) first", class_map)  # fmt: skip
        names = class_names(ds, classes)
        grid = GridSpec(ds.crs, ds.transform, ds.width, ds.height)
        res = (abs(ds.transform.a) * math.sqrt(to_m2), abs(ds.transform.e) * math.sqrt(to_m2))
    verify_readable(class_map)
    values = _class_ids(class_map)
    if aoi is not None:  # outside the area of interest is outside the landscape
        inside = rasterize_region([aoi_geometry(Path(aoi), grid, class_map)], grid)
        values = np.where(inside, values, IGNORE_INDEX).astype(np.uint8)
    if zones is None:
        parts: list[tuple[object, np.ndarray]] = [(None, values)]
    else:
        parts = _zone_parts(Path(zones), zone_field, grid, values)
    rows = []
    for zone, part in parts:
        if (part != IGNORE_INDEX).any():
            rows += [{"zone": zone, **row} for row in array_metrics(part, res, level, names)]
    if not rows:
        where = "in any zone" if zones is not None else "anywhere"
        raise InputError(f"has no valid (classified) pixel {where}; nothing to measure", class_map)
    return rows


def _zone_parts(zones: Path, field: str | None, grid: GridSpec, values: np.ndarray) -> list[tuple[object, np.ndarray]]:
    if field is None:
        raise InputError("--by needs --zone-field naming the attribute that identifies each zone", zones)
    frame = read_vector(zones)
    if field not in frame.columns:
        columns = [c for c in frame.columns if c != frame.geometry.name]
        raise InputError(f"has no attribute {field!r}; its attributes are {columns}", zones)
    frame = frame.to_crs(grid.crs)
    parts = []
    for zone, group in frame.groupby(field, sort=True):
        inside = rasterize_region(list(group.geometry), grid)
        parts.append((_plain(zone), np.where(inside, values, IGNORE_INDEX).astype(np.uint8)))
    return parts


def array_metrics(values: np.ndarray, res: tuple[float, float], level: str, names: dict[int, str]) -> list[dict]:
    """The rows of ``landscape_metrics`` for one (rows, columns) uint8 array; ``res`` the pixel size in metres."""
    import pylandstats

    landscape = pylandstats.Landscape(values, res=res, nodata=IGNORE_INDEX)
    if level == "landscape":
        frame = landscape.compute_landscape_metrics_df(metrics=list(LANDSCAPE_METRICS))
        return [{"class_id": None, "class": None, **{m: float(frame[m].iloc[0]) for m in LANDSCAPE_METRICS}}]
    if level == "class":
        frame = landscape.compute_class_metrics_df(metrics=list(CLASS_METRICS))
        pixel_m = math.sqrt(res[0] * res[1])
        return [{"class_id": int(class_id), "class": names.get(int(class_id), str(class_id)),
                 **{m: float(row[m]) for m in CLASS_METRICS},
                 **edge_shape(values, int(class_id), pixel_m).shares()}
                for class_id, row in frame.iterrows()]  # fmt: skip
    frame = landscape.compute_patch_metrics_df(metrics=list(PATCH_METRICS))
    return [{"class_id": int(row["class_val"]), "class": names.get(int(row["class_val"]), str(row["class_val"])),
             "patch": int(patch), **{m: float(row[m]) for m in PATCH_METRICS}}
            for patch, row in frame.iterrows()]  # fmt: skip


def _plain(value: object) -> object:
    """A zone id as JSON and CSV take it (numpy scalars become Python ones)."""
    return value.item() if isinstance(value, np.generic) else value


def check_output(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() not in (".csv", ".json"):
        raise InputError("is not a .csv or .json file name; the metrics are written as CSV or JSON", out)
    ensure_writable(out, overwrite)


def write_metrics(rows: list[dict], out: Path, overwrite: bool) -> Path:
    """``rows`` as CSV (empty cell for NaN) or JSON (null for NaN), by ``out``'s suffix, written atomically."""
    check_output(out, overwrite)
    suffix = out.suffix.lower()
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    with atomic_path(out) as tmp:
        if suffix == ".json":
            tmp.write_text(json.dumps({"units": UNITS, "rows": clean}, indent=2) + "\n")
        else:
            with tmp.open("w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=list(clean[0]))
                writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in clean)
    return out


def write_edges_figure(class_map: str | Path, out: Path, classes: Sequence[ClassSpec] | None, overwrite: bool) -> Path:
    """A PNG of the map in its class colours with each class's edges coloured by shape (``geoseg/boundary.py``)."""
    class_map = Path(class_map)
    ensure_writable(out, overwrite)
    specs = list(classes or read_class_table(class_map) or [])
    return write_edges_png(_class_ids(class_map), {c.id: c.color for c in specs}, out)


def _class_ids(class_map: Path) -> np.ndarray:
    """The whole map's class ids, every value that is not a class (``nodata_ids``) as 255."""
    with open_raster(class_map) as ds:
        values = ds.read(1)
        skip = nodata_ids(ds.nodata)
    return np.where(np.isin(values, list(skip)), IGNORE_INDEX, values).astype(np.uint8)
