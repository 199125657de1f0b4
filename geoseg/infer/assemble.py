"""Blocks that own their windows: each window of the raster-wide grid runs exactly once.

A block runs the windows whose origin lies in it and returns their blended contributions over the
area they cover, which reaches past the block's right and bottom edges into its neighbours. The
:class:`Assembler` adds every contribution into the blocks it overlaps and finishes a block (argmax)
once all blocks that reach into it have reported.

Why the result does not depend on block size, worker count or arrival order: contributions are
integers, and integer sums do not depend on the order of addition. Each is probability × blend weight,
a float32 product (the same bits wherever it is computed), in fixed point with 24 fractional bits: the
resolution of a float32 near 1. Integers are int32 where the windows covering a pixel cannot overflow
them (any overlap up to about 5/6 of the tile), else int64. Ties go to the first class.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache, cached_property

import numpy as np
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX
from geoseg.infer.engine import BlockResult, InferenceSpec, Reader, forward_windows, normalized_on_device
from geoseg.infer.windows import blend_weights
from geoseg.io.raster import clip_window
from geoseg.io.tiling import grid_offsets
from geoseg.model.forward import ArrayNetwork, Network, device_finish, device_zeros, host_copy

FIXED_POINT = np.float32(2.0**24)


@cache
def fixed_point_weights(tile: int) -> np.ndarray:
    """The blend weights times 2**24: ``rint(p * this)`` equals ``rint((p * blend) * 2**24)`` bit for bit,
    since scaling by a power of two is exact in float32 (a product too small for that rounds to 0 either way)."""
    return blend_weights(tile) * FIXED_POINT


def accumulator_dtype(tile: int, overlap: int) -> np.dtype:
    """int32 when the windows covering one pixel, each adding at most 2**24, cannot exceed 2**31."""
    per_axis = -(-tile // max(1, tile - overlap)) + 1  # +1: the last window shifted back inside the raster
    return np.dtype(np.int32) if per_axis**2 * 2**24 < 2**31 else np.dtype(np.int64)


@dataclass(frozen=True)
class Contribution:
    core: Window  # the block that ran these windows
    valid: np.ndarray  # bool (core h, core w): the mosaic's validity over the block
    row: int  # where ``sums`` starts in the raster
    col: int
    sums: np.ndarray  # int (classes, h, w): the windows' weighted probabilities, fixed point
    settled: BlockResult | None = None  # the block's interior (``CoreLayout``), finished where the block ran

    @property
    def area(self) -> Window | None:
        """The raster area ``sums`` covers (None when the block owns no window)."""
        _, h, w = self.sums.shape
        return Window(self.col, self.row, w, h) if h and w else None


Piece = tuple[int, int, np.ndarray]  # (row, col) in a block, and the sums that fall there


def piece_for(contribution: Contribution, block: Window, copy: bool = True) -> Piece | None:
    """The part of ``contribution`` inside ``block``: copied, since a spill into a neighbour may wait long
    after the rest is freed, unless ``copy`` is False (the contribution's own block, finished soon)."""
    piece = _clipped((contribution.row, contribution.col, contribution.sums), block)
    if piece is None or not copy:
        return piece
    row, col, sums = piece
    return row, col, sums.copy()


def _clipped(piece: Piece, window: Window) -> Piece | None:
    """The view of ``piece`` (row, col and sums in some frame) inside ``window`` (in the same frame), with
    row and col now relative to ``window``."""
    row, col, sums = piece
    part = clip_window(Window(col - window.col_off, row - window.row_off, sums.shape[2], sums.shape[1]),
                       int(window.height), int(window.width))  # fmt: skip
    if part is None:
        return None
    inner, within = part
    return int(inner.row_off), int(inner.col_off), sums[(slice(None), *within)]


@dataclass(frozen=True)
class CoreLayout:
    """A block split by where its sums come from. Other blocks' windows reach only its top rows and left
    columns (blocks own the windows whose origin they hold, and windows reach right and down), so the
    rest, the interior, is complete once the block itself has run and is finished there and then (uint8,
    a sixteenth of the int sums): what waits for the neighbours is an L of sums, not the whole block's."""

    core: Window
    interior: Window | None
    pending: tuple[Window, ...]  # the top band and the left band below it (empty ones left out)


def core_layout(core: Window, reaching: Sequence[Window | None]) -> CoreLayout:
    """Where other blocks' ``reaching`` areas fall in ``core``: a top band and a left band."""
    top, left = int(core.row_off), int(core.col_off)
    height, width = int(core.height), int(core.width)
    band = depth = 0  # rows from the top, columns from the left, that other blocks reach
    for area in reaching:
        if area is None:
            continue
        if int(area.row_off) < top:  # from a block above: down to its bottom edge
            band = max(band, min(int(area.row_off + area.height), top + height) - top)
        else:  # from a block to the left, in this row of blocks: up to its right edge
            depth = max(depth, min(int(area.col_off + area.width), left + width) - left)
    windows = [Window(left, top, width, band), Window(left, top + band, depth, height - band)]
    interior = Window(left + depth, top + band, width - depth, height - band)
    return CoreLayout(
        core,
        interior if interior.width > 0 and interior.height > 0 else None,
        tuple(w for w in windows if w.width > 0 and w.height > 0),
    )


def finish_interior(
    contribution: Contribution, layout: CoreLayout, spec: InferenceSpec, confidence: bool
) -> BlockResult | None:
    """The block's interior finished from its own sums alone (None when it has none)."""
    if layout.interior is None:
        return None
    own = piece_for(contribution, layout.interior, copy=False)
    valid = cut(contribution.valid, layout.core, layout.interior)
    return finish_block(layout.interior, [own] if own else [], valid, spec, confidence)


def cut(array: np.ndarray, core: Window, window: Window) -> np.ndarray:
    """The part of a core-shaped ``array`` under ``window``."""
    rows, cols = core_slices(core, window)
    return array[..., rows, cols]


def core_slices(core: Window, window: Window) -> tuple[slice, slice]:
    r0, c0 = int(window.row_off - core.row_off), int(window.col_off - core.col_off)
    return slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))


def finish_block(
    block: Window, pieces: list[Piece], valid: np.ndarray, spec: InferenceSpec, confidence: bool, owned: bool = False
) -> BlockResult:
    """A block's class ids (and confidence) from every piece of every contribution that reaches into it.

    The pieces are integers, so their sum, and the class map, do not depend on the order they come in.
    ``owned``: nothing else uses the pieces, so a piece covering the whole block takes the sum in place.
    """
    dtype = accumulator_dtype(spec.tile, spec.overlap)
    shape = (len(spec.class_ids), int(block.height), int(block.width))
    covering = next((i for i, (_, _, p) in enumerate(pieces) if owned and p.shape == shape and p.dtype == dtype), None)
    sums = pieces[covering][2] if covering is not None else np.zeros(shape, dtype=dtype)
    for i, (row, col, piece) in enumerate(pieces):
        if i != covering:
            sums[:, row : row + piece.shape[1], col : col + piece.shape[2]] += piece
    classes, chosen = first_maximum(sums, spec.class_ids)
    invalid = ~valid
    np.copyto(classes, IGNORE_INDEX, where=invalid)
    probability = None
    if confidence:  # softmax sums to 1, so the class sums add up to the blend weights' sum
        total = np.maximum(sums.sum(axis=0, dtype=np.int64), 1)
        probability = (chosen.astype(np.float64) / total).astype(np.float32)
        np.copyto(probability, 0.0, where=invalid)
    return BlockResult(classes, probability)


def finished_core(layout: CoreLayout, interior: BlockResult | None, pending: Sequence[list[Piece]],
                  valid: Sequence[np.ndarray], spec: InferenceSpec, confidence: bool,
                  owned: bool = False) -> BlockResult:  # fmt: skip
    """A block from its settled ``interior`` and, for each of ``layout.pending``, the pieces that reach it and its
    validity (``owned``: as ``finish_block``'s)."""
    parts = [(layout.interior, interior)]
    for window, pieces, window_valid in zip(layout.pending, pending, valid, strict=True):
        parts.append((window, finish_block(window, pieces, window_valid, spec, confidence, owned)))
    return stitched(layout.core, parts, confidence)


def stitched(core: Window, parts: Sequence[tuple[Window | None, BlockResult | None]], confidence: bool) -> BlockResult:
    """One block's result from the results of the windows that tile it."""
    shape = (int(core.height), int(core.width))
    classes = np.empty(shape, dtype=np.uint8)
    probability = np.empty(shape, dtype=np.float32) if confidence else None
    for window, result in parts:
        if window is None or result is None:
            continue
        rows, cols = core_slices(core, window)
        classes[rows, cols] = result.classes
        if probability is not None and result.confidence is not None:
            probability[rows, cols] = result.confidence
    return BlockResult(classes, probability)


def first_maximum(sums: np.ndarray, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``labels[argmax]`` (uint8) and the maximum over axis 0 of (classes, h, w), ties to the first class.

    One pass per class over contiguous planes: numpy's argmax along the first axis walks the class
    axis pixel by pixel, which made it the largest single cost of finishing a block.
    """
    best = np.full(sums.shape[1:], labels[0], dtype=np.uint8)
    top = sums[0].copy()
    better = np.empty(sums.shape[1:], dtype=bool)
    change = np.empty(sums.shape[1:], dtype=np.uint8)
    for k in range(1, len(sums)):
        np.greater(sums[k], top, out=better)
        # best = labels[k] where better, branch-free: a masked copy costs 15× these three passes
        np.bitwise_xor(best, np.uint8(labels[k]), out=change)
        np.multiply(change, better, out=change)
        np.bitwise_xor(best, change, out=best)
        np.maximum(top, sums[k], out=top)
    return best, top


def aligned_block_size(block_size: int, tile: int, overlap: int) -> int:
    """``block_size`` rounded up to a whole number of window strides.

    Window origins then fall on block edges, so the windows a block owns reach only ``overlap`` pixels
    into the next blocks. Those spills wait in memory for a row of blocks; aligned, they cost
    width × overlap instead of up to width × tile, which keeps memory flat as mosaics grow.
    """
    stride = max(1, tile - overlap)
    return max(1, -(-block_size // stride)) * stride


def owned_origins(core: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> list[tuple[int, int]]:
    """The windows of the raster-wide grid (``window_grid``, row-major) whose origin lies in ``core``."""
    r0, c0 = int(core.row_off), int(core.col_off)
    rows = _inside(grid_offsets(raster_shape[0], tile, max(1, tile - overlap)), r0, r0 + int(core.height))
    cols = _inside(grid_offsets(raster_shape[1], tile, max(1, tile - overlap)), c0, c0 + int(core.width))
    return [(r, c) for r in rows for c in cols]


def _inside(offsets: list[int], start: int, stop: int) -> list[int]:
    return offsets[bisect.bisect_left(offsets, start) : bisect.bisect_left(offsets, stop)]


def reach(core: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> Window | None:
    """The raster area the block's own windows cover (None if it owns none)."""
    return _covered(owned_origins(core, raster_shape, tile, overlap), raster_shape, tile)


def block_span(core: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> Window:
    """What ``block_contribution`` reads for ``core``: the block and the windows it owns. It can reach
    past the raster's right and bottom edges only where the raster is smaller than a tile."""
    origins = owned_origins(core, raster_shape, tile, overlap)
    return _span(core, origins, tile) if origins else core


def _span(core: Window, origins: list[tuple[int, int]], tile: int) -> Window:
    top, left = int(core.row_off), int(core.col_off)
    bottom = max(max(r for r, _ in origins) + tile, top + int(core.height))
    right = max(max(c for _, c in origins) + tile, left + int(core.width))
    return Window(left, top, right - left, bottom - top)


def _covered(origins: list[tuple[int, int]], raster_shape: tuple[int, int], tile: int) -> Window | None:
    if not origins:
        return None
    height, width = raster_shape
    r0, c0 = min(r for r, _ in origins), min(c for _, c in origins)
    r1 = min(max(r for r, _ in origins) + tile, height)
    c1 = min(max(c for _, c in origins) + tile, width)
    return Window(c0, r0, c1 - c0, r1 - r0)


def block_contribution(
    model: Network,
    read: Reader,
    core: Window,
    raster_shape: tuple[int, int],
    spec: InferenceSpec,
    region: Callable[[Window], np.ndarray] | None = None,
    layout: CoreLayout | None = None,
    confidence: bool = False,
    finish_in_torch: bool | None = None,
) -> Contribution:
    """The block's own windows, blended. ``region(window)`` (e.g. an AOI) limits where output is wanted:
    windows without a valid pixel inside it are skipped, and the block's pixels outside it are nodata.
    The model still sees the real pixels around the region, so its edge gets no artificial border.

    A torch network's sums are added up on its device. With ``layout`` the block's interior is finished
    (with ``confidence`` if asked) where the block runs: on a GPU in torch, so that what comes back is its
    class ids and the sums of the rest only; on the CPU in numpy, on the same memory (``Contribution.settled``).
    ``finish_in_torch`` overrides that choice (tests run the GPU's way on the CPU).
    """
    tile = spec.tile
    origins = owned_origins(core, raster_shape, tile, spec.overlap)
    area = _covered(origins, raster_shape, tile)
    n = len(spec.class_ids)
    if area is None:
        _, valid = read(core)
        if region is not None:
            valid &= region(core)
        return Contribution(core, valid, int(core.row_off), int(core.col_off), np.zeros((n, 0, 0), np.int32))
    top, left = int(core.row_off), int(core.col_off)
    span = _span(core, origins, tile)
    raw, valid = read(span)
    on_device = normalized_on_device(spec.normalization, raw)
    image = raw if on_device else spec.normalization.apply(raw, valid)
    wanted = valid & region(span) if region is not None else valid
    runnable = [(r, c) for r, c in origins if wanted[r - top : r - top + tile, c - left : c - left + tile].any()]
    a_row, a_col = int(area.row_off), int(area.col_off)
    dtype = accumulator_dtype(tile, spec.overlap)
    shape = (n, int(area.height), int(area.width))
    on_network = not isinstance(model, ArrayNetwork)
    sums = device_zeros(model, shape, dtype) if on_network else np.zeros(shape, dtype=dtype)
    weights = fixed_point_weights(tile)
    raw_valid = valid if on_device else None
    windows = forward_windows(model, image, top, left, runnable, spec, weights, dtype, raw_valid, keep=on_network)
    for chunk, weighted in windows:
        for (r, c), contribution in zip(chunk, weighted, strict=True):
            h = min(tile, a_row + shape[1] - r)
            w = min(tile, a_col + shape[2] - c)
            sums[:, r - a_row : r - a_row + h, c - a_col : c - a_col + w] += contribution[:, :h, :w]
    core_valid = wanted[: int(core.height), : int(core.width)]
    if finish_in_torch is None:
        finish_in_torch = not isinstance(sums, np.ndarray) and sums.device.type != "cpu"
    if not isinstance(sums, np.ndarray) and not finish_in_torch:
        sums = host_copy(sums)  # on the CPU the same memory: numpy finishes a block 7× faster than torch there
    if isinstance(sums, np.ndarray):
        plain = Contribution(core, core_valid, a_row, a_col, sums)
        return replace(plain, settled=finish_interior(plain, layout, spec, confidence)) if layout else plain
    interior = _interior_in(area, layout)
    if interior is None:
        return Contribution(core, core_valid, a_row, a_col, host_copy(sums))
    assert layout is not None and layout.interior is not None
    valid_inside = cut(core_valid, core, layout.interior)
    classes, share = device_finish(sums[:, interior[0], interior[1]], spec.class_ids, valid_inside, confidence,
                                   IGNORE_INDEX)  # fmt: skip
    return Contribution(core, core_valid, a_row, a_col, host_copy(sums, interior), BlockResult(classes, share))


def _interior_in(area: Window, layout: CoreLayout | None) -> tuple[slice, slice] | None:
    """Where ``layout``'s interior lies in the sums over ``area``, if it has one (always inside: each of its
    pixels is covered by a window, and by this block's windows alone)."""
    if layout is None or layout.interior is None:
        return None
    row, col = int(layout.interior.row_off - area.row_off), int(layout.interior.col_off - area.col_off)
    rows, cols = slice(row, row + int(layout.interior.height)), slice(col, col + int(layout.interior.width))
    inside = row >= 0 and col >= 0 and rows.stop <= int(area.height) and cols.stop <= int(area.width)
    assert inside, "a block's interior lies within its own windows"
    return rows, cols


@dataclass(frozen=True)
class BlockGrid:
    """Blocks between row and column edges (the CLI's blocks, or a Dask array's chunks): which block holds a
    pixel, which blocks an area overlaps, and which blocks' windows reach into each block."""

    row_edges: tuple[int, ...]
    col_edges: tuple[int, ...]

    @cached_property
    def blocks(self) -> dict[tuple[int, int], Window]:
        """Each block by its (row, column) index, row-major."""
        return {
            (i, j): Window(c0, r0, c1 - c0, r1 - r0)
            for i, (r0, r1) in enumerate(itertools.pairwise(self.row_edges))
            for j, (c0, c1) in enumerate(itertools.pairwise(self.col_edges))
        }

    def key(self, window: Window) -> tuple[int, int]:
        """The index of the block holding ``window``'s first pixel."""
        return (_position(self.row_edges, int(window.row_off)), _position(self.col_edges, int(window.col_off)))

    def overlapped(self, area: Window) -> list[tuple[int, int]]:
        """The blocks ``area`` overlaps."""
        r0, c0 = int(area.row_off), int(area.col_off)
        rows = range(_position(self.row_edges, r0), _position(self.row_edges, r0 + int(area.height) - 1) + 1)
        cols = range(_position(self.col_edges, c0), _position(self.col_edges, c0 + int(area.width) - 1) + 1)
        return [(i, j) for i in rows for j in cols]

    def reaches(self, raster_shape: tuple[int, int], tile: int, overlap: int) -> dict[tuple[int, int], Window | None]:
        """For each block, the raster area its own windows cover (``reach``)."""
        return {key: reach(block, raster_shape, tile, overlap) for key, block in self.blocks.items()}

    def sources(self, reaches: dict[tuple[int, int], Window | None]) -> dict[tuple[int, int], list[tuple[int, int]]]:
        """For each block, the other blocks whose own windows (``reaches``) reach into it."""
        reaching: dict[tuple[int, int], list[tuple[int, int]]] = {key: [] for key in self.blocks}
        for key, area in reaches.items():
            for target in self.overlapped(area) if area is not None else []:
                if target != key:
                    reaching[target].append(key)
        return reaching


class Assembler:
    """Adds contributions into blocks and hands back each block as soon as it is complete.

    The contributions come from ``jobs``: the blocks by default, or blocks and parts of blocks (bands that
    tile a block, ``balance.py``), whose sums and valid masks are put together in their block.
    """

    def __init__(self, raster_shape: tuple[int, int], block_size: int, spec: InferenceSpec, confidence: bool,
                 jobs: Sequence[Window] | None = None) -> None:  # fmt: skip
        self.shape = raster_shape
        self.spec = spec
        self.confidence = confidence
        self.grid = block_grid(raster_shape, block_size, spec.tile, spec.overlap)
        self._index = self.grid.blocks
        self.blocks = list(self._index.values())
        self.jobs = self.blocks if jobs is None else list(jobs)
        reaches = self.grid.reaches(raster_shape, spec.tile, spec.overlap)
        sources = self.grid.sources(reaches)
        whole = {_corners(job) for job in self.jobs}
        self.layouts = {key: core_layout(self._index[key], [reaches[k] for k in reaching])
                        for key, reaching in sources.items() if _corners(self._index[key]) in whole}  # fmt: skip
        self._waiting = dict.fromkeys(self._index, 0)  # the reports each block waits for: its jobs', its neighbours'
        for job in self.jobs:
            area = reach(job, raster_shape, spec.tile, spec.overlap)
            for key in {self.grid.key(job), *(self.grid.overlapped(area) if area is not None else [])}:
                self._waiting[key] += 1
        # Pieces received per block, kept as copies of just the area they cover: a spill from the block
        # above is only a tile's rows deep, and it waits a whole row of blocks before it is used.
        self._pieces: dict[tuple[int, int], list[Piece]] = {}
        self._valid: dict[tuple[int, int], np.ndarray] = {}
        self._settled: dict[tuple[int, int], BlockResult] = {}

    def layout(self, job: Window) -> CoreLayout | None:
        """A whole block's interior and pending bands (``block_contribution`` finishes the interior where it
        runs); None for a part of a block, whose block is finished here."""
        layout = self.layouts.get(self.grid.key(job))
        return layout if layout is not None and _corners(layout.core) == _corners(job) else None

    def add(self, contribution: Contribution) -> list[tuple[Window, BlockResult]]:
        """Takes a job's contribution, its interior settled or not; returns the blocks it completes."""
        own = self.grid.key(contribution.core)
        block = self._index[own]
        if _corners(contribution.core) == _corners(block):
            self._valid[own] = contribution.valid
        else:  # a band of the block: its validity goes into the block's
            valid = self._valid.setdefault(own, np.zeros((int(block.height), int(block.width)), dtype=bool))
            valid[core_slices(block, contribution.core)] = contribution.valid
        if contribution.settled is not None:
            self._settled[own] = contribution.settled
        touched = {own}
        for key in self.grid.overlapped(contribution.area) if contribution.area is not None else []:
            piece = piece_for(contribution, self._index[key], copy=key != own)
            if piece is not None:
                self._pieces.setdefault(key, []).append(piece)
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
        pieces = self._pieces.pop(key, [])  # copies, or a view of the block's own contribution, used once
        valid = self._valid.pop(key)
        settled = self._settled.pop(key, None)
        if settled is None:
            return finish_block(block, pieces, valid, self.spec, self.confidence, owned=True)
        layout = self.layouts[key]
        pending = []
        for window in layout.pending:
            relative = Window(window.col_off - block.col_off, window.row_off - block.row_off, window.width,
                              window.height)  # fmt: skip
            pending.append([c for c in (_clipped(piece, relative) for piece in pieces) if c is not None])
        valid_parts = [cut(valid, block, window) for window in layout.pending]
        return finished_core(layout, settled, pending, valid_parts, self.spec, self.confidence, owned=True)


def _corners(window: Window) -> tuple[int, int, int, int]:
    return int(window.row_off), int(window.col_off), int(window.height), int(window.width)


def block_layout(
    raster_shape: tuple[int, int], block_size: int, tile: int, overlap: int
) -> tuple[list[int], list[int]]:
    """Row and column block borders for ``block_size`` (rounded up to whole strides) on a raster."""
    side = aligned_block_size(block_size, tile, overlap)
    return block_edges(raster_shape[0], side, tile), block_edges(raster_shape[1], side, tile)


def block_grid(raster_shape: tuple[int, int], block_size: int, tile: int, overlap: int) -> BlockGrid:
    """The blocks of ``block_layout``."""
    row_edges, col_edges = block_layout(raster_shape, block_size, tile, overlap)
    return BlockGrid(tuple(row_edges), tuple(col_edges))


def block_edges(length: int, block_size: int, tile: int) -> list[int]:
    """Block borders along one axis: every ``block_size`` px, except that the block holding the last
    window (shifted back to end at the raster's edge, so off the stride) runs to the edge. Otherwise
    that window would spill up to a tile into a last thin row of blocks, which waits for the whole
    row above it."""
    edges = list(range(0, length, block_size))
    while len(edges) > 1 and edges[-1] > length - tile:
        edges.pop()
    return [*edges, length]


def _position(edges: tuple[int, ...], pixel: int) -> int:
    """Index of the block (between consecutive ``edges``) that holds ``pixel``."""
    return bisect.bisect_right(edges, pixel, hi=len(edges) - 1) - 1
