"""Window grids and blend weights for overlapping-window inference."""

from __future__ import annotations

from functools import cache

import numpy as np

from geoseg.io.tiling import grid_offsets

BLEND_FLOOR = 0.05  # keeps raster-edge pixels, seen by one window only, weighted above zero


def window_grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(row, col) origins of ``tile``-sized windows covering the raster, ``overlap`` px apart at least.

    The last window in a row or column is shifted back to end at the raster's edge; a raster smaller
    than a tile gets a single window at 0, padded past the edge.
    """
    stride = max(1, tile - overlap)
    return [(r, c) for r in grid_offsets(height, tile, stride) for c in grid_offsets(width, tile, stride)]


@cache
def blend_weights(tile: int) -> np.ndarray:
    """Separable Hann window with a positive floor: windows fade out towards their borders."""
    ramp = np.hanning(tile + 2)[1:-1]
    weights = np.outer(ramp, ramp).astype(np.float32)
    return np.maximum(weights, BLEND_FLOOR).astype(np.float32)
