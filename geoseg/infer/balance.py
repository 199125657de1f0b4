"""Which jobs a mosaic's blocks run as, so that no worker idles at the end of a run.

Blocks are handed to workers in row-major order (memory stays bounded by a row of blocks). When the last
blocks are few and large next to the number of workers, the run ends with one of them working alone: a
4096² mosaic in nine blocks of nine windows keeps one of two cores idle for the last fifth of the run, which
takes 11 % longer than it needs (33 % with four workers). So the last blocks are cut into bands of window
rows (or into single windows), as many as finish the run soonest in a simulation of the workers taking jobs
in order.

A band is an ordinary job: its core is part of a block's, it owns the windows whose origin lies in it, and
its sums are added into the block like a neighbour's (``Assembler``), so the class map is the same bit for
bit: integer sums do not depend on how they are grouped.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from rasterio.windows import Window

from geoseg.infer.assemble import owned_origins

JOB_OVERHEAD = 0.02  # a job's fixed cost (opening and reading), in forward batches: splits must earn it
TAIL_BLOCKS_PER_WORKER = 4  # how far back from the end splitting is tried
TAIL_BLOCKS_MAX = 64  # ... at most, so that planning stays instant on a large cluster


def balanced_jobs(
    blocks: Sequence[Window],
    raster_shape: tuple[int, int],
    tile: int,
    overlap: int,
    workers: int,
    batch_size: int,
) -> list[Window]:
    """``blocks`` in order, the last ones replaced by their bands (or single windows) when that ends the run
    sooner with ``workers`` taking jobs in order. A job's cost is its forward batches of ``batch_size``."""
    blocks = list(blocks)
    if workers <= 1 or not blocks:
        return blocks

    def cost(job: Window) -> float:
        windows = len(owned_origins(job, raster_shape, tile, overlap))
        return -(-windows // max(1, batch_size)) + JOB_OVERHEAD

    tail = min(len(blocks), TAIL_BLOCKS_PER_WORKER * workers, TAIL_BLOCKS_MAX)
    head = len(blocks) - tail
    ready = _finish_times([cost(b) for b in blocks[:head]], [0.0] * workers)
    cuts = {
        "bands": [window_bands(b, raster_shape, tile, overlap) for b in blocks[head:]],
        "windows": [window_cells(b, raster_shape, tile, overlap) for b in blocks[head:]],
    }
    whole_costs = [cost(b) for b in blocks[head:]]
    part_costs = {kind: [[cost(p) for p in parts] for parts in split] for kind, split in cuts.items()}
    best = (max(_finish_times(whole_costs, ready)), 0, "bands")
    for split_from, kind in itertools.product(range(tail), ("bands", "windows")):
        costs = whole_costs[:split_from] + [c for parts in part_costs[kind][split_from:] for c in parts]
        best = min(best, (max(_finish_times(costs, ready)), tail - split_from, kind))
    _, n_split, kind = best
    kept = blocks[: len(blocks) - n_split]
    return kept + [part for parts in cuts[kind][tail - n_split :] for part in parts]


def _finish_times(costs: Sequence[float], ready: Sequence[float]) -> list[float]:
    """When each worker is free again after taking ``costs`` in order, each job going to the first free one."""
    free = list(ready)
    heapq.heapify(free)
    for c in costs:
        heapq.heappush(free, heapq.heappop(free) + c)
    return free


def window_bands(block: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> list[Window]:
    """``block`` cut at its window rows (at its window columns if it has one row): each band owns one row of
    its windows. The bands tile the block."""
    rows, cols = _cuts(block, raster_shape, tile, overlap)
    if len(rows) > 2:
        return [_between(r0, r1, cols[0], cols[-1]) for r0, r1 in itertools.pairwise(rows)]
    return [_between(rows[0], rows[-1], c0, c1) for c0, c1 in itertools.pairwise(cols)]


def window_cells(block: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> list[Window]:
    """``block`` cut at its window rows and columns: each cell owns one window. The cells tile the block."""
    rows, cols = _cuts(block, raster_shape, tile, overlap)
    return [_between(r0, r1, c0, c1) for r0, r1 in itertools.pairwise(rows) for c0, c1 in itertools.pairwise(cols)]


def _cuts(block: Window, raster_shape: tuple[int, int], tile: int, overlap: int) -> tuple[list[int], list[int]]:
    """Row and column edges inside ``block`` at its windows' origins, its own edges first and last."""
    origins = owned_origins(block, raster_shape, tile, overlap)
    top, left = int(block.row_off), int(block.col_off)
    rows = sorted({r for r, _ in origins} - {top})
    cols = sorted({c for _, c in origins} - {left})
    return [top, *rows, top + int(block.height)], [left, *cols, left + int(block.width)]


def _between(r0: int, r1: int, c0: int, c1: int) -> Window:
    return Window(c0, r0, c1 - c0, r1 - r0)
