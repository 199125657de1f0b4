"""Segment a Dask array lazily: `geoseg infer`'s blocks as a Dask graph over the array's chunks.

Knows Dask, not xarray nor tensors. Each chunk is a block, and two kinds of tasks make its class map:

- **contribution**: the windows of the raster-wide grid whose origin lies in the chunk, run by
  ``block.segment_block`` (the function `geoseg infer` runs per block) on the chunk and the halo its
  windows reach into (up to a tile right and below, from the neighbouring chunks); then cut into one
  piece per chunk it reaches, so the whole contribution is freed as soon as it is cut;
- **finish**: the sum of the pieces reaching a chunk, turned into class ids by ``assemble.finish_block``,
  as `geoseg infer` finishes a block.

Every window runs once, and pieces are integers whose sum does not depend on order, so the class map is
the same for any chunking and scheduler, and equal to `geoseg infer`'s.
"""

from __future__ import annotations

import bisect
import itertools

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX
from geoseg.infer.assemble import Contribution, Piece, block_span, finish_block, piece_for, reach
from geoseg.infer.block import ModelSource, segment_block
from geoseg.infer.engine import BlockResult, InferenceSpec, slice_padded


def segment_array(
    raw: da.Array, valid: da.Array, model: ModelSource, spec: InferenceSpec, confidence: bool
) -> tuple[da.Array, da.Array | None]:
    """Class ids (uint8, 255 where not ``valid``) and, if asked, confidence (float32, NaN there), lazily.

    ``raw`` is (bands, height, width) in the bands the model reads; ``valid`` (height, width) bool. The
    outputs are chunked as ``raw`` is in y and x.
    """
    raw = raw.rechunk({0: -1})
    valid = valid.rechunk(raw.chunks[1:])
    shape = (int(raw.shape[1]), int(raw.shape[2]))
    row_edges = [0, *itertools.accumulate(raw.chunks[1])]
    col_edges = [0, *itertools.accumulate(raw.chunks[2])]
    cores = {
        (i, j): Window(c0, r0, c1 - c0, r1 - r0)
        for i, (r0, r1) in enumerate(itertools.pairwise(row_edges))
        for j, (c0, c1) in enumerate(itertools.pairwise(col_edges))
    }
    pieces: dict[tuple[int, int], list[Delayed]] = {key: [] for key in cores}
    own_valid: dict[tuple[int, int], Delayed] = {}
    for key, core in cores.items():
        span = _clip(block_span(core, shape, spec.tile, spec.overlap), shape)
        rows = slice(int(span.row_off), int(span.row_off + span.height))
        cols = slice(int(span.col_off), int(span.col_off + span.width))
        block_pixels = (raw[:, rows, cols], valid[rows, cols])
        contribution = dask.delayed(_contribution)(model, *block_pixels, span, core, shape, spec)
        own_valid[key] = dask.delayed(_valid_of)(contribution)
        area = reach(core, shape, spec.tile, spec.overlap)
        for target in _chunks_under(area, row_edges, col_edges) if area is not None else []:
            pieces[target].append(dask.delayed(piece_for)(contribution, cores[target]))
    results = {
        key: dask.delayed(_finish)(core, pieces[key], own_valid[key], spec, confidence) for key, core in cores.items()
    }
    classes = _assemble(results, cores, row_edges, col_edges, "classes", np.uint8)
    probability = _assemble(results, cores, row_edges, col_edges, "confidence", np.float32) if confidence else None
    return classes, probability


def _contribution(
    model: ModelSource,
    raw: np.ndarray,
    valid: np.ndarray,
    span: Window,
    core: Window,
    shape: tuple[int, int],
    spec: InferenceSpec,
) -> Contribution:
    """The block's contribution, reading from the in-memory ``span`` of the raster (0 and invalid outside)."""
    top, left = int(span.row_off), int(span.col_off)

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        shifted = Window(int(window.col_off) - left, int(window.row_off) - top, window.width, window.height)
        return slice_padded(raw, valid, shifted)

    return segment_block(model, read, core, shape, spec)


def _valid_of(contribution: Contribution) -> np.ndarray:
    return contribution.valid


def _finish(
    core: Window, pieces: list[Piece | None], valid: np.ndarray, spec: InferenceSpec, confidence: bool
) -> BlockResult:
    return finish_block(core, [p for p in pieces if p is not None], valid, spec, confidence)


def _classes(result: BlockResult) -> np.ndarray:
    return result.classes


def _confidence(result: BlockResult) -> np.ndarray:
    assert result.confidence is not None
    return np.where(result.classes == IGNORE_INDEX, np.float32(np.nan), result.confidence)


def _assemble(
    results: dict[tuple[int, int], Delayed],
    cores: dict[tuple[int, int], Window],
    row_edges: list[int],
    col_edges: list[int],
    field: str,
    dtype: type,
) -> da.Array:
    take = _classes if field == "classes" else _confidence
    rows = []
    for i in range(len(row_edges) - 1):
        row = []
        for j in range(len(col_edges) - 1):
            core = cores[(i, j)]
            part = dask.delayed(take)(results[(i, j)])
            row.append(da.from_delayed(part, shape=(int(core.height), int(core.width)), dtype=dtype))
        rows.append(row)
    return da.block(rows)


def _clip(window: Window, shape: tuple[int, int]) -> Window:
    """``window`` cut to the raster (a span reaches past it only where the raster is smaller than a tile)."""
    height = min(int(window.row_off + window.height), shape[0]) - int(window.row_off)
    width = min(int(window.col_off + window.width), shape[1]) - int(window.col_off)
    return Window(window.col_off, window.row_off, width, height)


def _chunks_under(area: Window, row_edges: list[int], col_edges: list[int]) -> list[tuple[int, int]]:
    """The chunks (by index) that ``area`` overlaps."""
    r0, c0 = int(area.row_off), int(area.col_off)
    r1, c1 = r0 + int(area.height), c0 + int(area.width)
    first_row, last_row = _chunk_of(row_edges, r0), _chunk_of(row_edges, r1 - 1)
    first_col, last_col = _chunk_of(col_edges, c0), _chunk_of(col_edges, c1 - 1)
    return [(i, j) for i in range(first_row, last_row + 1) for j in range(first_col, last_col + 1)]


def _chunk_of(edges: list[int], pixel: int) -> int:
    return bisect.bisect_right(edges, pixel, hi=len(edges) - 1) - 1
