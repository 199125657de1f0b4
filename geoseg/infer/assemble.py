"""Blocks that own their windows: each window of the raster-wide grid runs exactly once.

A block runs the windows whose origin lies in it and returns their blended contributions over the
area they cover, which reaches past the block's right and bottom edges into its neighbours. The
:class:`Assembler` adds every contribution into the blocks it overlaps and finishes a block (argmax)
once all blocks that reach into it have reported.

Why the result is exact whatever the block size, worker count or arrival order: contributions are
integers, and integer sums do not depend on the order of addition. Each is probability × blend weight
(two float32 numbers) computed exactly in float64 and scaled by 2**40. That is lossless for every
product above 2**-40, so the sums are the exact sums of the products, and argmax over them is
argmax over the true blended values. Ties go to the first class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX
from geoseg.infer.engine import BlockResult, InferenceSpec, Reader, forward_windows
from geoseg.infer.windows import blend_weights, window_grid
from geoseg.io.raster import block_windows

FIXED_POINT = 2.0**40  # a pixel covered by up to 2**22 windows still fits in int64


@dataclass(frozen=True)
class Contribution:
    core: Window  # the block that ran these windows
    valid: np.ndarray  # bool (core h, core w): the mosaic's validity over the block
    row: int  # where ``sums`` starts in the raster
    col: int
    sums: np.ndarray  # int64 (classes + 1, h, w): weighted probabilities, then the weights themselves


def aligned_block_size(block_size: int, tile: int, overlap: int) -> int:
    """``block_size`` rounded up to a whole number of window strides.

    Window origins then fall on block edges, so the windows a block owns reach only ``overlap`` pixels
    into the next blocks. Those spills wait in memory for a row of blocks; aligned, they cost
    width × overlap instead of up to width × tile, which keeps memory flat as mosaics grow.
    """
    stride = max(1, tile - overlap)
    return max(1, -(-block_size // stride)) * stride


def owned_origins(core: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> list[tuple[int, int]]:
    r0, c0 = int(core.row_off), int(core.col_off)
    r1, c1 = r0 + int(core.height), c0 + int(core.width)
    return [(r, c) for r, c in window_grid(*raster_shape, tile, overlap) if r0 <= r < r1 and c0 <= c < c1]


def reach(core: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> Window | None:
    """The raster area the block's own windows cover (None if it owns none)."""
    origins = owned_origins(core, raster_shape, tile, overlap)
    if not origins:
        return None
    height, width = raster_shape
    r0, c0 = min(r for r, _ in origins), min(c for _, c in origins)
    r1 = min(max(r for r, _ in origins) + tile, height)
    c1 = min(max(c for _, c in origins) + tile, width)
    return Window(c0, r0, c1 - c0, r1 - r0)


@torch.inference_mode()
def block_contribution(
    model: torch.nn.Module,
    read: Reader,
    core: Window,
    raster_shape: tuple[int, int],
    spec: InferenceSpec,
    region: Callable[[Window], np.ndarray] | None = None,
) -> Contribution:
    """The block's own windows, blended. ``region(window)`` (e.g. an AOI) limits where output is wanted:
    windows without a valid pixel inside it are skipped, and the block's pixels outside it are nodata.
    The model still sees the real pixels around the region, so its edge gets no artificial border.
    """
    tile = spec.tile
    origins = owned_origins(core, raster_shape, tile, spec.overlap)
    area = reach(core, raster_shape, tile, spec.overlap)
    n = len(spec.class_ids)
    if area is None:
        _, valid = read(core)
        if region is not None:
            valid &= region(core)
        return Contribution(core, valid, int(core.row_off), int(core.col_off), np.zeros((n + 1, 0, 0), np.int64))
    top, left = int(core.row_off), int(core.col_off)
    bottom = max(max(r for r, _ in origins) + tile, top + int(core.height))
    right = max(max(c for _, c in origins) + tile, left + int(core.width))
    span = Window(left, top, right - left, bottom - top)
    raw, valid = read(span)
    image = spec.normalization.apply(raw)
    image[:, ~valid] = 0.0
    wanted = valid & region(span) if region is not None else valid
    runnable = [(r, c) for r, c in origins if wanted[r - top : r - top + tile, c - left : c - left + tile].any()]
    a_row, a_col = int(area.row_off), int(area.col_off)
    sums = np.zeros((n + 1, int(area.height), int(area.width)), dtype=np.int64)
    blend = blend_weights(tile).astype(np.float64)
    weights = np.rint(blend * FIXED_POINT).astype(np.int64)
    for chunk, probs in forward_windows(model, image, top, left, runnable, spec):
        for (r, c), p in zip(chunk, probs, strict=True):
            h = min(tile, a_row + sums.shape[1] - r)
            w = min(tile, a_col + sums.shape[2] - c)
            target = sums[:, r - a_row : r - a_row + h, c - a_col : c - a_col + w]
            target[:n] += np.rint(p[:, :h, :w].astype(np.float64) * blend[:h, :w] * FIXED_POINT).astype(np.int64)
            target[n] += weights[:h, :w]
    core_valid = wanted[: int(core.height), : int(core.width)]
    return Contribution(core, core_valid, a_row, a_col, sums)


class Assembler:
    """Adds contributions into blocks and hands back each block as soon as it is complete."""

    def __init__(self, raster_shape: tuple[int, int], block_size: int, spec: InferenceSpec, confidence: bool) -> None:
        self.shape = raster_shape
        self.block_size = aligned_block_size(block_size, spec.tile, spec.overlap)
        self.spec = spec
        self.confidence = confidence
        self.blocks = list(block_windows(raster_shape[1], raster_shape[0], self.block_size))
        self._index = {self._key(b): b for b in self.blocks}
        self._waiting = {key: 1 for key in self._index}  # the block's own report (its validity)
        for block in self.blocks:
            area = reach(block, raster_shape, spec.tile, spec.overlap)
            if area is not None:
                for key in self._overlapped(area):
                    if key != self._key(block):
                        self._waiting[key] += 1
        # Pieces received per block, kept as copies of just the area they cover: a spill from the block
        # above is only a tile's rows deep, and it waits a whole row of blocks before it is used.
        self._pieces: dict[tuple[int, int], list[tuple[int, int, np.ndarray]]] = {}
        self._valid: dict[tuple[int, int], np.ndarray] = {}

    def add(self, contribution: Contribution) -> list[tuple[Window, BlockResult]]:
        own = self._key(contribution.core)
        self._valid[own] = contribution.valid
        touched = {own}
        _, h, w = contribution.sums.shape
        if h and w:
            area = Window(contribution.col, contribution.row, w, h)
            for key in self._overlapped(area):
                block = self._index[key]
                r0, c0 = max(int(block.row_off), contribution.row), max(int(block.col_off), contribution.col)
                r1 = min(int(block.row_off + block.height), contribution.row + h)
                c1 = min(int(block.col_off + block.width), contribution.col + w)
                br, bc = int(block.row_off), int(block.col_off)
                cr, cc = contribution.row, contribution.col
                piece = contribution.sums[:, r0 - cr : r1 - cr, c0 - cc : c1 - cc].copy()
                self._pieces.setdefault(key, []).append((r0 - br, c0 - bc, piece))
                touched.add(key)
        done = []
        for key in touched:
            self._waiting[key] -= 1
            if self._waiting[key] == 0:
                done.append((self._index[key], self._finish(key)))
        return done

    @property
    def complete(self) -> bool:
        return not any(self._waiting.values())

    def _finish(self, key: tuple[int, int]) -> BlockResult:
        block = self._index[key]
        sums = self._zeros(block)
        for row, col, piece in self._pieces.pop(key, []):
            sums[:, row : row + piece.shape[1], col : col + piece.shape[2]] += piece
        valid = self._valid.pop(key)
        n = len(self.spec.class_ids)
        best = sums[:n].argmax(axis=0)
        classes = np.asarray(self.spec.class_ids, dtype=np.uint8)[best]
        classes[~valid] = IGNORE_INDEX
        confidence = None
        if self.confidence:
            chosen = np.take_along_axis(sums[:n], best[None], axis=0)[0].astype(np.float64)
            confidence = (chosen / np.maximum(sums[n], 1)).astype(np.float32)
            confidence[~valid] = 0.0
        return BlockResult(classes, confidence)

    def _zeros(self, block: Window) -> np.ndarray:
        return np.zeros((len(self.spec.class_ids) + 1, int(block.height), int(block.width)), dtype=np.int64)

    def _key(self, window: Window) -> tuple[int, int]:
        return (int(window.row_off) // self.block_size, int(window.col_off) // self.block_size)

    def _overlapped(self, area: Window) -> list[tuple[int, int]]:
        b = self.block_size
        rows = range(int(area.row_off) // b, (int(area.row_off + area.height) - 1) // b + 1)
        cols = range(int(area.col_off) // b, (int(area.col_off + area.width) - 1) // b + 1)
        return [(i, j) for i in rows for j in cols if (i, j) in self._index]
