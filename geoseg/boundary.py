"""Boundary shape: how much of each class's edge bulges out (convex) or curves in (concave).

Each class's outlines (pixel edges, holes included) are walked with the class on the left and sampled every
pixel of arc length, and the samples are averaged over 21 px of arc (a moving mean that flattens the pixel
staircase: a straight diagonal edge reads as straight). At each sample the turning angle between the chord
from ``WINDOW_PX`` (10) samples back and the chord to 10 samples ahead says the local shape: a left turn of
more than ``STRAIGHT_DEG`` (5°) is convex (the class bulges out), a right turn of more than that is concave
(the class curves in around its neighbour), anything between is straight. Measured on digital discs: the
whole outline reads convex up to a radius of 40 px, 79 % at 80 px, 1 % at 150 px; straight edges at any
slope read 92-96 % straight (the rest is where they meet the map's border). Edge along the map's border or
along nodata (the survey's limit, or a zone's) is not a class boundary and is left out. Lengths are in
metres (the map needs a projected CRS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape
from shapely.geometry.polygon import orient

from geoseg.config import IGNORE_INDEX

WINDOW_PX = 10
STRAIGHT_DEG = 5.0


@dataclass(frozen=True)
class EdgeShape:
    """A class's boundary length (m) by local shape."""

    convex: float
    concave: float
    straight: float

    @property
    def total(self) -> float:
        return self.convex + self.concave + self.straight

    def shares(self) -> dict[str, float]:
        """Convex and concave shares of the boundary length (NaN for a class with no boundary)."""
        total = self.total
        return {"convex_edge_share": self.convex / total if total else math.nan,
                "concave_edge_share": self.concave / total if total else math.nan}  # fmt: skip


@dataclass(frozen=True)
class EdgeSamples:
    """Boundary samples of one class, in pixel coordinates (column, row), with their turning angles (°)."""

    points: np.ndarray  # (n, 2)
    turning_deg: np.ndarray  # (n,) positive: convex for the class


def boundary_samples(ids: np.ndarray, class_id: int) -> EdgeSamples:
    """Sample the outlines of ``class_id`` in ``ids`` (rows × columns) every pixel, with their turning angles."""
    height, width = ids.shape
    mask = ids == class_id
    points, angles = [], []
    for geometry, _ in rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=Affine.identity()):
        # y up (y = -row), so that shapely's orientation (exterior anticlockwise) keeps the class on the left
        polygon = orient(shapely.affinity.scale(shape(geometry), 1.0, -1.0, origin=(0, 0)), sign=1.0)
        for ring in [polygon.exterior, *polygon.interiors]:
            ring_points, ring_angles = _ring_turning(ring)
            keep = ~_on_border(ring_points, width, height) & ~_touches_nodata(ring_points, ids == IGNORE_INDEX)
            points.append(ring_points[keep])
            angles.append(ring_angles[keep])
    if not points:
        return EdgeSamples(np.empty((0, 2)), np.empty(0))
    return EdgeSamples(np.concatenate(points), np.concatenate(angles))


def edge_shape(ids: np.ndarray, class_id: int, pixel_m: float) -> EdgeShape:
    """``class_id``'s boundary length (m) by shape; ``pixel_m`` is the pixel side in metres."""
    angles = boundary_samples(ids, class_id).turning_deg
    convex = int(np.count_nonzero(angles > STRAIGHT_DEG))
    concave = int(np.count_nonzero(angles < -STRAIGHT_DEG))
    return EdgeShape(convex * pixel_m, concave * pixel_m, (len(angles) - convex - concave) * pixel_m)


def _ring_turning(ring: shapely.LinearRing) -> tuple[np.ndarray, np.ndarray]:
    """Points every pixel along a closed ring (column, row) and the turning angle at each (°, left positive)."""
    length = ring.length
    n = max(round(length), 3)
    along = shapely.line_interpolate_point(ring, np.arange(n) * (length / n))
    xy = shapely.get_coordinates(along)
    smooth = _circular_mean(xy, 2 * WINDOW_PX + 1) if n > 2 * WINDOW_PX + 1 else xy
    back = smooth - np.roll(smooth, WINDOW_PX, axis=0)
    ahead = np.roll(smooth, -WINDOW_PX, axis=0) - smooth
    cross = back[:, 0] * ahead[:, 1] - back[:, 1] * ahead[:, 0]
    dot = (back * ahead).sum(axis=1)
    if n > 2 * WINDOW_PX + 1:
        turning = np.degrees(np.arctan2(cross, dot))
    else:  # a ring too small to look 10 px each way: one full turn, shared (an island convex, a hole concave)
        turning = np.full(n, (360.0 if shapely.is_ccw(ring) else -360.0) / n)
    return np.column_stack([xy[:, 0], -xy[:, 1]]), turning


def _circular_mean(xy: np.ndarray, size: int) -> np.ndarray:
    """A moving average along a closed ring: it flattens the pixel staircase before turning is measured."""
    padded = np.concatenate([xy[-(size // 2) :], xy, xy[: size // 2]])
    kernel = np.ones(size) / size
    return np.column_stack([np.convolve(padded[:, k], kernel, mode="valid") for k in (0, 1)])


def _touches_nodata(points: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """Samples on an edge shared with a nodata pixel: the survey's (or a zone's) limit, not a class boundary."""
    if not nodata.any():
        return np.zeros(len(points), dtype=bool)
    height, width = nodata.shape
    touching = np.zeros(len(points), dtype=bool)
    for d_row in (-1e-6, 1e-6):
        for d_col in (-1e-6, 1e-6):
            rows = np.clip(np.floor(points[:, 1] + d_row).astype(int), 0, height - 1)
            cols = np.clip(np.floor(points[:, 0] + d_col).astype(int), 0, width - 1)
            touching |= nodata[rows, cols]
    return touching


def _on_border(points: np.ndarray, width: int, height: int) -> np.ndarray:
    col, row = points[:, 0], points[:, 1]
    return np.isclose(col, 0) | np.isclose(col, width) | np.isclose(row, 0) | np.isclose(row, height)


def write_edges_png(ids: np.ndarray, colors: dict[int, str], path: Path) -> Path:
    """The map in its class colours, each class's boundary samples coloured by turning (red convex, blue concave)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from geoseg.io.raster import atomic_path

    present = [int(i) for i in np.unique(ids) if i != IGNORE_INDEX]
    lookup = np.full(256, len(present), dtype=np.int64)
    lookup[present] = np.arange(len(present))
    palette = ListedColormap([colors.get(i, "#808080") for i in present] + ["#ffffff"])
    figure, axes = plt.subplots(figsize=(8, 8 * ids.shape[0] / max(ids.shape[1], 1)))
    axes.imshow(lookup[ids], cmap=palette, vmin=0, vmax=len(present), interpolation="nearest")
    for class_id in present:
        samples = boundary_samples(ids, class_id)
        convex = samples.turning_deg > STRAIGHT_DEG
        concave = samples.turning_deg < -STRAIGHT_DEG
        for chosen, color in ((convex, "#d7191c"), (concave, "#2c7bb6")):
            axes.scatter(samples.points[chosen, 0] - 0.5, samples.points[chosen, 1] - 0.5, s=1, c=color, linewidths=0)
    axes.set_axis_off()
    axes.set_title("class edges: red convex, blue concave (for the class on each side)")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=150)
    plt.close(figure)
    return path
