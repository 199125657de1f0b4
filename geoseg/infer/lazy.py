"""Segment a Dask array lazily: `geoseg infer`'s blocks as a Dask graph over the array's chunks.

Knows Dask, not xarray nor tensors. Each chunk is a block, and three kinds of tasks make its class map:

- **contribution**: the windows of the raster-wide grid whose origin lies in the chunk, run by
  ``block.segment_block`` (the function `geoseg infer` runs per block) on the chunk and the halo its
  windows reach into (up to a tile right and below, from the neighbouring chunks);
- **settle**: the chunk's interior, which no other block's windows reach, finished at once (uint8, a
  sixteenth of the int sums); its top and left bands wait as sums. Other chunks' contributions are cut
  into pieces for those bands only, so a waiting chunk holds little however far ahead Dask runs;
- **finish**: each band from all the pieces reaching it, by ``assemble.finish_block``, as `geoseg infer`
  finishes a block, and the chunk stitched together.

Every window runs once, and pieces are integers whose sum does not depend on order, so the class map is
the same for any chunking and scheduler, and equal to `geoseg infer`'s.
"""

from __future__ import annotations

import itertools

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX
from geoseg.infer.assemble import (
    BlockGrid,
    Contribution,
    CoreLayout,
    Piece,
    block_span,
    core_layout,
    cut,
    finish_interior,
    finished_core,
    piece_for,
)
from geoseg.infer.block import ModelSource, segment_block
from geoseg.infer.engine import BlockResult, InferenceSpec, slice_padded
from geoseg.io.raster import cap_gdal_cache, clip_window
from geoseg.memory import release_free_memory


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
    grid = BlockGrid(tuple(itertools.accumulate(raw.chunks[1], initial=0)),
                     tuple(itertools.accumulate(raw.chunks[2], initial=0)))  # fmt: skip
    cores = grid.blocks
    areas = grid.reaches(shape, spec.tile, spec.overlap)
    sources = grid.sources(areas)  # the blocks whose windows reach into each chunk
    layouts = {key: core_layout(cores[key], [areas[k] for k in sources[key]]) for key in cores}
    contributions: dict[tuple[int, int], Delayed] = {}
    for key, core in cores.items():
        span = _inside(block_span(core, shape, spec.tile, spec.overlap), shape)
        rows, cols = span.toslices()
        block_pixels = (raw[:, rows, cols], valid[rows, cols])
        contributions[key] = dask.delayed(_contribution)(model, *block_pixels, span, core, shape, spec)
    results = {}
    for key, layout in layouts.items():
        settled = dask.delayed(_settle)(contributions[key], layout, spec, confidence)
        received = [dask.delayed(_pieces_for)(contributions[k], layout.pending) for k in sources[key]]
        results[key] = dask.delayed(_finish)(layout, settled, received, spec, confidence)
    classes = _assemble(results, grid, "classes", np.uint8)
    probability = _assemble(results, grid, "confidence", np.float32) if confidence else None
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
    # As `geoseg infer` does, per block: hand the previous blocks' freed arrays back to the system, and keep
    # GDAL's block cache (it holds what the input's chunks read, 5 % of RAM by default) at 64 MiB.
    release_free_memory()
    cap_gdal_cache()
    top, left = int(span.row_off), int(span.col_off)

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        shifted = Window(int(window.col_off) - left, int(window.row_off) - top, window.width, window.height)
        return slice_padded(raw, valid, shifted)

    return segment_block(model, read, core, shape, spec)


Settled = tuple[BlockResult | None, list[Piece | None], list[np.ndarray]]


def _settle(contribution: Contribution, layout: CoreLayout, spec: InferenceSpec, confidence: bool) -> Settled:
    """The chunk's interior finished; its own sums and validity over the parts still waiting."""
    interior = finish_interior(contribution, layout, spec, confidence)
    waiting = _pieces_for(contribution, layout.pending)
    valid = [cut(contribution.valid, layout.core, window) for window in layout.pending]
    return interior, waiting, valid


def _pieces_for(contribution: Contribution, windows: tuple[Window, ...]) -> list[Piece | None]:
    return [piece_for(contribution, window) for window in windows]


def _finish(
    layout: CoreLayout, settled: Settled, received: list[list[Piece | None]], spec: InferenceSpec, confidence: bool
) -> BlockResult:
    """The chunk: its interior as settled, and each waiting part from every piece that reaches it."""
    interior, waiting, valid = settled
    pending = [[p for p in (waiting[k], *(r[k] for r in received)) if p is not None] for k in range(len(waiting))]
    return finished_core(layout, interior, pending, valid, spec, confidence)


def _classes(result: BlockResult) -> np.ndarray:
    return result.classes


def _confidence(result: BlockResult) -> np.ndarray:
    assert result.confidence is not None
    return np.where(result.classes == IGNORE_INDEX, np.float32(np.nan), result.confidence)


def _assemble(results: dict[tuple[int, int], Delayed], grid: BlockGrid, field: str, dtype: type) -> da.Array:
    take = _classes if field == "classes" else _confidence
    cores = grid.blocks
    rows = []
    for i in range(len(grid.row_edges) - 1):
        row = []
        for j in range(len(grid.col_edges) - 1):
            core = cores[(i, j)]
            part = dask.delayed(take)(results[(i, j)])
            row.append(da.from_delayed(part, shape=(int(core.height), int(core.width)), dtype=dtype))
        rows.append(row)
    return da.block(rows)


def _inside(window: Window, shape: tuple[int, int]) -> Window:
    """``window`` cut to the raster (a span reaches past it only where the raster is smaller than a tile)."""
    part = clip_window(window, *shape)
    assert part is not None, "a block's span always overlaps the raster"
    return part[0]
