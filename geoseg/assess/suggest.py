"""`geoseg suggest`: the windows of a mosaic where labelling next would help the model most.

The model segments the mosaic as `geoseg infer --confidence` does (blended windows, TTA when the bundle's
recipe uses it); the windows are then ranked and spread out by ``window_choice``'s documented rule, away
from labelled, nodata and masked pixels, and written as polygons with their rank and score.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.windows import Window

from geoseg.assess.window_choice import (
    STRATEGIES,
    CellGrid,
    CellStats,
    Choice,
    cell_grid,
    choose_windows,
    window_scores,
)
from geoseg.config import IGNORE_INDEX
from geoseg.errors import InputError
from geoseg.infer.run import InferOptions, default_workers, segment_mosaic
from geoseg.io.classmap import CLASSES_TAG
from geoseg.io.raster import (
    GridSpec,
    RasterInfo,
    atomic_path,
    check_bands,
    check_not_mirrored,
    nearest_on_grid,
    open_raster,
    read_info,
    read_window,
)
from geoseg.io.vector import is_vector, read_region
from geoseg.model.bundle import read_bundle_meta
from geoseg.progress import Progress

LAYER = "to_label"


@dataclass(frozen=True)
class SuggestOptions:
    count: int = 20
    size: str | None = None  # "256", "256px" or "40m"; None: the bundle's tile size
    labels: Sequence[Path] = ()
    label_values: Sequence[int] | None = None  # label-raster values that are labels; None: all but nodata/255
    mask: Path | None = None  # raster (non-zero excluded, as `geoseg quality-mask` writes) or polygons
    strategy: str = "uncertainty"
    seed: int = 0
    tta: bool | None = None
    device: str = "auto"
    workers: int = field(default_factory=default_workers)


@dataclass(frozen=True)
class Suggestions:
    frame: gpd.GeoDataFrame  # rank, score, strategy, geometry (the mosaic's CRS)
    window: int  # side in px
    candidates: int  # qualifying windows the choice was made from
    spacing: int  # the smallest spacing used (px)


def suggest(mosaic: Path, model: Path, options: SuggestOptions, progress: Progress | None = None) -> Suggestions:
    """Rank and choose the windows to label (see ``window_choice`` for the rule); writes nothing."""
    reporter = progress or Progress()
    info = checked_mosaic(mosaic)
    check_options(options)
    meta = read_bundle_meta(model)
    check_bands(info, meta.bands, source="the model's bands")
    window = window_pixels(options.size, meta.tile_size, info.grid)
    rng = np.random.default_rng(options.seed)
    grid = cell_grid(info.grid.height, info.grid.width, window, rng)
    if grid is None:
        raise InputError(f"is {info.grid.width} × {info.grid.height} px, smaller than one {window} px window; "
                         "pass a smaller --size", mosaic)  # fmt: skip
    excluded = excluded_pixels(options, info.grid)
    with tempfile.TemporaryDirectory(prefix="geoseg-suggest-") as scratch:
        confidence = None
        if options.strategy == "uncertainty":
            confidence = Path(scratch) / "confidence.tif"
            infer = InferOptions(device=options.device, tta=options.tta, workers=options.workers, confidence=True)
            segment_mosaic(mosaic, model, Path(scratch) / "classes.tif", infer, confidence_path=confidence,
                           progress=reporter)  # fmt: skip
        stats = cell_stats(info, meta.bands, grid, excluded, confidence, reporter)
    scores = window_scores(stats, grid.side)
    chosen = choose_windows(scores, grid, options.count, options.strategy, rng)
    if not chosen:
        raise InputError("has no window that is free of labels, nodata and masked pixels; pass a smaller "
                         "--size, or fewer --labels", mosaic)  # fmt: skip
    return Suggestions(
        frame=suggestion_frame(chosen, grid, info.grid, options.strategy),
        window=window,
        candidates=int(np.isfinite(scores).sum()),
        spacing=min(c.spacing for c in chosen),
    )


def checked_mosaic(mosaic: Path) -> RasterInfo:
    info = read_info(mosaic)
    check_not_mirrored(info)
    with open_raster(mosaic) as ds:
        tags = ds.tags()
        description = ds.tags(1).get("DESCRIPTION", "")
    if CLASSES_TAG in tags or description.startswith("blended probability"):
        raise InputError("is a geoseg class or confidence map; pass the orthomosaic the model segments", mosaic)
    return info


def check_options(options: SuggestOptions) -> None:
    if options.count < 1:
        raise InputError(f"-n must be at least 1 (got {options.count}): the number of windows to suggest")
    if options.strategy not in STRATEGIES:
        raise InputError(f"--strategy must be one of {', '.join(STRATEGIES)} (got {options.strategy!r})")


def window_pixels(size: str | None, tile_size: int, grid: GridSpec) -> int:
    """A window side in whole, even pixels: ``size`` as "256"/"256px" or metres ("40m"), else ``tile_size``."""
    if size is None:
        pixels = float(tile_size)
    else:
        text = size.strip().lower()
        try:
            metres = text.endswith("m")
            pixels = float(text[:-1]) / metres_per_pixel(grid) if metres else float(text.removesuffix("px"))
        except ValueError:
            raise InputError(f"--size must be pixels (256 or 256px) or metres (40m), not {size!r}") from None
    side = 2 * math.ceil(round(pixels, 6) / 2)
    if side < 8:
        raise InputError(f"--size {size} is {pixels:.1f} px; a window needs at least 8 px")
    return side


METRES_PER_DEGREE = 111_320.0  # along a meridian, and along the equator (WGS84, to 0.5 %)


def metres_per_pixel(grid: GridSpec) -> float:
    """The pixel's side in metres: the CRS's linear unit, or for a geographic CRS the mean of its width and
    height at the raster's central latitude (a window's size, not an area, so 0.5 % is plenty)."""
    if grid.crs is None:
        raise InputError("--size in metres needs a CRS on the mosaic; give --size in px")
    if not grid.crs.is_geographic:
        return grid.res[0] * grid.crs.linear_units_factor[1]
    _, bottom, _, top = grid.bounds
    across = grid.res[0] * METRES_PER_DEGREE * math.cos(math.radians((bottom + top) / 2))
    down = grid.res[1] * METRES_PER_DEGREE
    return (across + down) / 2


def excluded_pixels(options: SuggestOptions, grid: GridSpec) -> np.ndarray:
    """Pixels no window may hold: labelled (``--labels``) as 1, masked (``--mask``) as 2, else 0."""
    excluded = np.zeros((grid.height, grid.width), dtype=np.uint8)
    for path in options.labels:
        excluded[labelled_pixels(path, grid, options.label_values)] = 1
    if options.mask is not None:
        excluded[masked_pixels(options.mask, grid)] = 2
    return excluded


def labelled_pixels(path: Path, grid: GridSpec, values: Sequence[int] | None) -> np.ndarray:
    """Where ``path`` labels the grid: inside any feature of a vector file (lines too); in a label raster, every
    value in ``values``, or without them every value but the file's nodata and 255."""
    if is_vector(path):
        return read_region(path, grid)
    if values is not None:
        return np.isin(resampled_band(path, grid, drop_nodata=False), list(values))
    return resampled_band(path, grid, drop_nodata=True) != NOT_ON_GRID


def masked_pixels(path: Path, grid: GridSpec) -> np.ndarray:
    """Polygons: inside them. A raster: every pixel it does not mark 0 (`geoseg quality-mask`: 0 is ok), its
    nodata and the pixels it does not reach included."""
    if is_vector(path):
        return read_region(path, grid)
    return resampled_band(path, grid, drop_nodata=True) != 0


NOT_ON_GRID = -1


def resampled_band(path: Path, grid: GridSpec, drop_nodata: bool) -> np.ndarray:
    """Band 1 of a one-band raster on ``grid`` (nearest neighbour) as int32; NOT_ON_GRID where it does not
    reach and, with ``drop_nodata``, where it holds its nodata value or 255."""
    info = read_info(path)
    if info.count != 1:
        raise InputError(f"has {info.count} bands; labels and masks have one", path)
    if info.grid.crs is None:
        raise InputError("has no CRS; assign the mosaic's CRS to it", path)
    with open_raster(path) as ds:
        values = ds.read(1).astype(np.int32)
    if drop_nodata:
        values[values == IGNORE_INDEX] = NOT_ON_GRID
        if info.nodata is not None and math.isfinite(info.nodata):
            values[values == int(info.nodata)] = NOT_ON_GRID
    if info.grid.same_grid(grid):
        return values
    return nearest_on_grid(values, info.grid, grid, NOT_ON_GRID)


def cell_stats(info: RasterInfo, bands: Sequence[int], grid: CellGrid, excluded: np.ndarray,
               confidence: Path | None, reporter: Progress) -> CellStats:  # fmt: skip
    """Read the mosaic (and the confidence map) one strip of cells at a time."""
    stats = CellStats.empty(grid)
    width = grid.cols * grid.side
    with open_raster(info.path) as ds, rasterio.open(confidence) if confidence else nullcontext() as conf:
        for row in range(grid.rows):
            top = grid.top + row * grid.side
            strip = Window(grid.left, top, width, grid.side)
            _, valid = read_window(ds, bands, strip)
            rows, cols = slice(top, top + grid.side), slice(grid.left, grid.left + width)
            usable = valid & (excluded[rows, cols] != 2)
            uncertainty = None
            if conf is not None:
                percent = conf.read(1, window=strip)
                usable &= percent != IGNORE_INDEX
                uncertainty = np.where(usable, 1.0 - percent.astype(np.float32) / 100.0, 0.0)
            stats.fill_row(row, usable, excluded[rows, cols] == 1, uncertainty)
            reporter.update("rank windows", row + 1, grid.rows)
    return stats


def suggestion_frame(chosen: list[Choice], grid: CellGrid, raster: GridSpec, strategy: str) -> gpd.GeoDataFrame:
    transform = raster.transform
    boxes = []
    for choice in chosen:
        corners = [transform @ (choice.col + dc, choice.row + dr) for dr, dc in ((0, 0), (0, grid.window),
                   (grid.window, grid.window), (grid.window, 0))]  # fmt: skip
        boxes.append(shapely.Polygon(corners))
    return gpd.GeoDataFrame(
        {
            "rank": np.arange(1, len(chosen) + 1, dtype=np.int32),
            "score": np.array([c.score for c in chosen], dtype=np.float64),
            "strategy": [strategy] * len(chosen),
            "row": np.array([c.row for c in chosen], dtype=np.int32),
            "col": np.array([c.col for c in chosen], dtype=np.int32),
        },
        geometry=boxes,
        crs=raster.crs,
    )


def write_suggestions(suggestions: Suggestions, out: Path) -> Path:
    """The windows as a GeoPackage layer ``to_label``, written atomically (``ensure_writable`` first)."""
    with atomic_path(out) as tmp:
        staged = tmp.with_name(tmp.name + ".gpkg")  # the driver wants its extension
        suggestions.frame.to_file(staged, driver="GPKG", layer=LAYER, engine="pyogrio")
        staged.replace(tmp)
    return out
