"""`geoseg change`: what changed between class maps of the same place, block by block.

For each consecutive pair, the later map is read onto the earlier one's grid with nearest neighbour
(flights never align), and only pixels valid in both count. Classes are matched by id; their names come
from a bundle, else from the maps' ``GEOSEG_CLASSES`` tags, which must agree. A series of three or more
maps also gets the cover of each class at each date, over each map's own valid pixels.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geoseg.config import IGNORE_INDEX, ClassSpec
from geoseg.errors import InputError
from geoseg.io.classmap import hex_rgba, read_class_table
from geoseg.io.raster import GridSpec, atomic_path, cap_gdal_cache, ensure_writable, open_raster, verify_readable
from geoseg.io.vector import aoi_geometry, inside_window
from geoseg.polygons import check_class_map, class_pixel_counts, square_metres_factor

NO_CHANGE_CODE = 65535  # the change map's nodata: a pixel not valid in both maps
ROWS_PER_STRIP = 512
OUTPUT_NAMES = {"matrix_csv": "transitions.csv", "matrix_json": "transitions.json", "map": "change.tif",
                "plot": "change.png"}  # fmt: skip
SERIES_NAMES = {"cover_csv": "cover.csv", "cover_plot": "cover.png"}
UNCHANGED_COLOR = (220, 220, 220, 255)  # the change map's persistence pixels; changes take the new class's colour


@dataclass(frozen=True)
class ChangeResult:
    classes: list[ClassSpec]
    counts: np.ndarray  # (classes, classes): pixels going from row class to column class
    pixel_area_m2: float | None
    outputs: dict[str, Path]

    def summary(self) -> list[dict]:
        """Per class: cover before and after, gain, loss, net change and persistence, in pixels and m²."""
        rows = []
        total = max(int(self.counts.sum()), 1)
        for i, spec in enumerate(self.classes):
            before, after, kept = int(self.counts[i].sum()), int(self.counts[:, i].sum()), int(self.counts[i, i])
            rows.append({"class_id": spec.id, "name": spec.name, "before_px": before, "after_px": after,
                         "before_percent": 100 * before / total, "after_percent": 100 * after / total,
                         "gain_px": after - kept, "loss_px": before - kept, "net_px": after - before,
                         "persistence_px": kept,
                         "net_m2": (after - before) * self.pixel_area_m2 if self.pixel_area_m2 else None})  # fmt: skip
        return rows


@dataclass(frozen=True)
class SeriesResult:
    pairs: list[ChangeResult]  # consecutive pairs, in date order
    cover: list[dict]  # one row per date and class (see ``cover_rows``); empty for two maps
    outputs: dict[str, Path]


def pair_folder(out_dir: Path, index: int) -> Path:
    """Where the transitions from map ``index`` to map ``index + 1`` (0-based) of a series go: DIR/1-2, DIR/2-3…"""
    return out_dir / f"{index + 1}-{index + 2}"


def compare_series(maps: list[Path], out_dir: Path, classes: list[ClassSpec] | None = None, overwrite: bool = False,
                   aoi: Path | None = None, grid: Path | None = None) -> SeriesResult:  # fmt: skip
    """Transitions for each consecutive pair of ``maps`` (in date order) and the cover per class per date.

    Two maps write their pair's outputs straight into ``out_dir``; three or more write each pair into
    ``pair_folder(out_dir, k)`` and the cover table and chart into ``out_dir``. With ``aoi`` (a polygon
    file, any CRS), only pixels whose centre lies inside it count, in the transitions and the cover alike.
    With ``grid`` (a raster file), every pair is compared on its grid instead of the earlier map's.
    """
    cap_gdal_cache()  # a scan over whole maps would otherwise fill GDAL's cache (5 % of memory)
    maps = [Path(m) for m in maps]
    if len(maps) < 2:
        raise InputError("needs at least two class maps, in date order", maps[0] if maps else out_dir)
    series = len(maps) > 2
    outputs = {key: out_dir / name for key, name in SERIES_NAMES.items()} if series else {}
    for path in outputs.values():
        ensure_writable(path, overwrite)
    for index in range(len(maps) - 1):
        for name in OUTPUT_NAMES.values():
            ensure_writable((pair_folder(out_dir, index) if series else out_dir) / name, overwrite)
    for path in maps:  # every map checked (and read through once) before any output is written
        with open_raster(path) as ds:
            check_class_map(ds, path)
        verify_readable(path)
    specs = classes or _shared_class_table(maps)
    pairs = [_compare_pair(a, b, pair_folder(out_dir, k) if series else out_dir, specs, aoi, grid)
             for k, (a, b) in enumerate(itertools.pairwise(maps))]  # fmt: skip
    if not series:
        return SeriesResult(pairs, [], outputs)
    every_class = {spec.id: spec for pair in pairs for spec in pair.classes}
    cover = cover_rows(maps, [every_class[i] for i in sorted(every_class)], aoi)
    _write_cover(cover, outputs)
    return SeriesResult(pairs, cover, outputs)


def cover_rows(maps: list[Path], classes: list[ClassSpec], aoi: Path | None = None) -> list[dict]:
    """Per date and class: pixels, percent of that map's valid pixels (inside ``aoi`` if given), m² and ha
    (None where not projected)."""
    rows = []
    for date, path in enumerate(maps, start=1):
        counts, pixel_m2 = _class_counts(path, aoi)
        valid = max(int(counts.sum()), 1)
        for spec in classes:
            pixels = int(counts[spec.id])
            rows.append({"date": date, "map": str(path), "class_id": spec.id, "name": spec.name, "pixels": pixels,
                         "percent": 100 * pixels / valid, "m2": pixels * pixel_m2 if pixel_m2 else None,
                         "ha": pixels * pixel_m2 / 10_000 if pixel_m2 else None})  # fmt: skip
    return rows


def _class_counts(path: Path, aoi: Path | None) -> tuple[np.ndarray, float | None]:
    """Pixels per class id over the valid pixels (inside ``aoi``), streamed; and m² per pixel."""
    with open_raster(path) as ds:
        grid = GridSpec(ds.crs, ds.transform, ds.width, ds.height)
        counts = class_pixel_counts(ds, aoi_geometry(aoi, grid, path) if aoi is not None else None)
        to_m2 = square_metres_factor(ds.crs)
        pixel_m2 = abs(ds.transform.determinant) * to_m2 if to_m2 else None
    return counts, pixel_m2


def _compare_pair(before: Path, after: Path, out_dir: Path, specs: list[ClassSpec], aoi: Path | None,
                  grid: Path | None) -> ChangeResult:  # fmt: skip
    """The transition matrix of ``before`` → ``after`` and the change map, written into ``out_dir``
    (``compare_series`` has checked the maps and the outputs).

    Both maps are read onto ``grid``'s grid (a raster file: its CRS, transform and size), else onto
    ``before``'s, with nearest neighbour. With ``aoi``, only pixels inside it count (and the change map is
    nodata outside it).
    """
    outputs = {key: out_dir / name for key, name in OUTPUT_NAMES.items()}
    with open_raster(grid or before) as reference:
        target = GridSpec(reference.crs, reference.transform, reference.width, reference.height)
    if target.crs is None:
        raise InputError("has no CRS, so the maps cannot be placed on its grid", grid or before)
    to_m2 = square_metres_factor(target.crs)
    pixel_area = abs(target.transform.determinant)
    area = aoi_geometry(aoi, target, grid or before) if aoi is not None else None
    counts = _count_and_write(target, before, after, outputs["map"], specs, area)
    square = counts.reshape(256, 256)
    specs = _with_unlisted_ids(specs, square)
    ids = [s.id for s in specs]
    matrix = square[np.ix_(ids, ids)]
    result = ChangeResult(specs, matrix, pixel_area * to_m2 if to_m2 else None, outputs)
    _write_tables(result, before, after)
    _write_plot(result, outputs["plot"], before.name, after.name)
    return result


def _count_and_write(grid: GridSpec, before: Path, after: Path, target: Path, specs: list[ClassSpec],
                     area: BaseGeometry | None = None) -> np.ndarray:  # fmt: skip
    """Transition counts (256 × 256 ids, flat) over pixels valid in both, and the change map written strip by
    strip on ``grid``: code from_id × 256 + to_id, NO_CHANGE_CODE where either map is nodata."""
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "uint16",
               "nodata": NO_CHANGE_CODE, "crs": grid.crs, "transform": grid.transform, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}  # fmt: skip
    counts = np.zeros(256 * 256, dtype=np.int64)
    if not _overlap(before, after, grid):
        raise InputError(f"does not overlap {after.name} on the grid they are compared on", before)
    with (
        _on_grid(before, grid) as first,
        _on_grid(after, grid) as second,
        atomic_path(target) as tmp,
        rasterio.open(tmp, "w", **profile) as out,
    ):
        for window in _strips(grid.height, grid.width):
            a, b = first.read(1, window=window), second.read(1, window=window)
            valid = (a != IGNORE_INDEX) & (b != IGNORE_INDEX) & _not_nodata(a, first) & _not_nodata(b, second)
            if area is not None:
                valid &= inside_window(area, grid, window)
            code = a.astype(np.uint16) * 256 + b
            counts += np.bincount(code[valid], minlength=256 * 256)
            out.write(np.where(valid, code, NO_CHANGE_CODE).astype(np.uint16), 1, window=window)
        out.update_tags(GEOSEG_TRANSITIONS=json.dumps(_transition_names(specs)))
        out.write_colormap(1, _transition_colors(specs))
    return counts


def _overlap(before: Path, after: Path, grid: GridSpec) -> bool:
    """Whether the two maps' footprints meet each other and the grid (a bounds test before any output)."""
    from rasterio.warp import transform_bounds

    boxes = [shapely.box(*grid.bounds)]
    for path in (before, after):
        with open_raster(path) as ds:
            if ds.crs is None:
                raise InputError("has no CRS, so it cannot be placed on the other map's grid", path)
            bounds = ds.bounds if ds.crs == grid.crs else transform_bounds(ds.crs, grid.crs, *ds.bounds)
        boxes.append(shapely.box(*bounds))
    return shapely.intersection_all(boxes).area > 0


def _shared_class_table(maps: list[Path]) -> list[ClassSpec]:
    """The union of the maps' class tables, refused where two maps name one id differently."""
    merged: dict[int, ClassSpec] = {}
    first_named: dict[int, Path] = {}
    for path in maps:
        for spec in read_class_table(path) or []:
            known = merged.get(spec.id)
            if known is not None and known.name != spec.name:
                raise InputError(
                    f"names class {spec.id} {known.name!r} but {path.name} names it {spec.name!r}: the maps' "
                    "class tables disagree; pass --model with the bundle whose classes both use",
                    first_named[spec.id],
                )
            if known is None:
                merged[spec.id], first_named[spec.id] = spec, path
    return list(merged.values())


def _with_unlisted_ids(specs: list[ClassSpec], square: np.ndarray) -> list[ClassSpec]:
    """Ids found in the maps but in no table still count, named by their id."""
    listed = {s.id for s in specs}
    present = sorted(set(np.flatnonzero(square.sum(axis=1))) | set(np.flatnonzero(square.sum(axis=0))))
    extra = [ClassSpec(str(i), int(i), str(i), "#808080") for i in present if i not in listed]
    return sorted([*specs, *extra], key=lambda s: s.id)


def _transition_colors(specs: list[ClassSpec]) -> dict[int, tuple[int, int, int, int]]:
    """Persistence in light grey; a change in the colour of the class the pixel became."""
    colors = {}
    for a in specs:
        for b in specs:
            colors[a.id * 256 + b.id] = UNCHANGED_COLOR if a.id == b.id else hex_rgba(b.color)
    return colors


def _transition_names(specs: list[ClassSpec]) -> dict[str, str]:
    return {str(a.id * 256 + b.id): f"{a.name} → {b.name}" for a in specs for b in specs}


@contextlib.contextmanager
def _on_grid(path: Path, grid: GridSpec) -> Iterator:
    """``path`` as read on ``grid``: the file itself when its grid is that one, else warped (nearest)."""
    with open_raster(path) as ds:
        if (ds.crs, ds.transform, ds.width, ds.height) == (grid.crs, grid.transform, grid.width, grid.height):
            yield ds
            return
        with WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=Resampling.nearest, nodata=IGNORE_INDEX) as vrt:  # fmt: skip
            yield vrt


def _not_nodata(values: np.ndarray, ds) -> np.ndarray:
    return values != ds.nodata if ds.nodata is not None and ds.nodata != IGNORE_INDEX else np.ones(values.shape, bool)


def _strips(height: int, width: int) -> Iterator[Window]:
    for row in range(0, height, ROWS_PER_STRIP):
        yield Window(0, row, width, min(ROWS_PER_STRIP, height - row))


def _write_tables(result: ChangeResult, before: Path, after: Path) -> None:
    ha = result.pixel_area_m2 / 10_000 if result.pixel_area_m2 else None
    with atomic_path(result.outputs["matrix_csv"]) as tmp, tmp.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["from_id", "from", "to_id", "to", "pixels", "m2", "ha"])
        for i, a in enumerate(result.classes):
            for j, b in enumerate(result.classes):
                n = int(result.counts[i, j])
                writer.writerow([a.id, a.name, b.id, b.name, n, n * result.pixel_area_m2 if ha else "",
                                 n * ha if ha else ""])  # fmt: skip
    document = {"before": str(before), "after": str(after), "pixel_area_m2": result.pixel_area_m2,
                "classes": [{"id": c.id, "name": c.name} for c in result.classes],
                "pixels": result.counts.tolist(), "per_class": result.summary()}  # fmt: skip
    with atomic_path(result.outputs["matrix_json"]) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")


def _write_plot(result: ChangeResult, path: Path, before: str, after: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in result.classes]
    rows = result.summary()
    figure, (bars, heat) = plt.subplots(1, 2, figsize=(12, 5))
    x = np.arange(len(names))
    bars.bar(x - 0.2, [r["before_percent"] for r in rows], 0.4, label=before)
    bars.bar(x + 0.2, [r["after_percent"] for r in rows], 0.4, label=after)
    bars.set_xticks(x, names, rotation=30, ha="right")
    bars.set_ylabel("cover, % of pixels valid in both")
    bars.legend()
    shares = result.counts / max(int(result.counts.sum()), 1) * 100
    image = heat.imshow(shares, cmap="viridis")
    heat.set_xticks(x, names, rotation=30, ha="right")
    heat.set_yticks(x, names)
    heat.set_xlabel(f"to ({after})")
    heat.set_ylabel(f"from ({before})")
    figure.colorbar(image, ax=heat, label="% of pixels")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def _write_cover(rows: list[dict], outputs: dict[str, Path]) -> None:
    with atomic_path(outputs["cover_csv"]) as tmp, tmp.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["date", "map", "class_id", "name", "pixels", "percent", "m2", "ha"])
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = sorted({r["date"] for r in rows})
    labels = {r["date"]: Path(r["map"]).stem for r in rows}
    figure, axes = plt.subplots(figsize=(max(6, 1.5 * len(dates)), 4.5))
    for class_id in sorted({r["class_id"] for r in rows}):
        mine = [r for r in rows if r["class_id"] == class_id]
        axes.plot([r["date"] for r in mine], [r["percent"] for r in mine], marker="o", label=mine[0]["name"])
    axes.set_xticks(dates, [f"{d}: {labels[d]}" for d in dates], rotation=20, ha="right")
    axes.set_ylabel("cover, % of the map's valid pixels")
    axes.legend()
    figure.tight_layout()
    with atomic_path(outputs["cover_plot"]) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
