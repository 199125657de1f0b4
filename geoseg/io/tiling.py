"""The grid rule that validation and inference tile rasters with (no torch, no torchgeo: workers import it).

Windows of ``size`` at offsets 0, stride, 2·stride, … with the last one shifted back so it ends at the
raster's edge; a raster smaller than a window gets one window at offset 0, padded past the edge. Every
pixel is covered, and no window reads past the edge unless the raster is smaller than the window.
"""

from __future__ import annotations


def grid_offsets(length: int, size: int, stride: int) -> list[int]:
    """Window offsets along one axis (pixels) under the grid rule of this module's docstring."""
    if length <= size:
        return [0]
    offsets = list(range(0, length - size, stride))
    offsets.append(length - size)
    return offsets
