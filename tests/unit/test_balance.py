"""Which jobs a mosaic's blocks run as: the last blocks are cut so that no worker idles at the end."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from geoseg.infer.assemble import block_grid, owned_origins
from geoseg.infer.balance import _finish_times, balanced_jobs, window_bands, window_cells
from geoseg.infer.windows import window_grid

TILE, OVERLAP = 512, 64


def _blocks(size: int, block_size: int = 1024) -> list[Window]:
    return list(block_grid((size, size), block_size, TILE, OVERLAP).blocks.values())


def _makespan(jobs: list[Window], shape: tuple[int, int], workers: int, batch: int = 1) -> int:
    costs = [-(-len(owned_origins(job, shape, TILE, OVERLAP)) // batch) for job in jobs]
    return int(max(_finish_times(costs, [0] * workers)))


@pytest.mark.parametrize(("size", "workers"), [(4096, 2), (4096, 4), (3000, 2), (1500, 4), (8192, 8), (600, 2)])
def test_jobs_tile_the_raster_and_own_every_window_once(size: int, workers: int) -> None:
    shape = (size, size)
    jobs = balanced_jobs(_blocks(size), shape, TILE, OVERLAP, workers, batch_size=1)
    cover = np.zeros(shape, dtype=np.uint8)
    for job in jobs:
        cover[job.toslices()] += 1
    assert (cover == 1).all()
    owned = [origin for job in jobs for origin in owned_origins(job, shape, TILE, OVERLAP)]
    assert sorted(owned) == sorted((r, c) for r, c in window_grid(size, size, TILE, OVERLAP))


def test_the_last_of_nine_equal_blocks_no_longer_runs_alone() -> None:
    """4096² in nine blocks of nine windows: two workers end 45 windows in, one of them alone for the last
    nine. Cut, the run ends when half the 81 windows, rounded up, are done."""
    shape, blocks = (4096, 4096), _blocks(4096)
    assert len(blocks) == 9 and _makespan(blocks, shape, workers=2) == 45
    jobs = balanced_jobs(blocks, shape, TILE, OVERLAP, workers=2, batch_size=1)
    assert jobs[: len(jobs) - 9] == blocks[:8]  # the blocks before the tail run whole, in order
    assert _makespan(jobs, shape, workers=2) == 41
    assert _makespan(balanced_jobs(blocks, shape, TILE, OVERLAP, 4, 1), shape, 4) < _makespan(blocks, shape, 4)


def test_one_worker_or_a_tail_that_is_already_even_keeps_the_blocks() -> None:
    blocks = _blocks(4096)
    assert balanced_jobs(blocks, (4096, 4096), TILE, OVERLAP, workers=1, batch_size=1) == blocks
    # On a GPU a nine-window block is two batches of 8; nine blocks share out evenly over three workers,
    # and cutting them would only add batches.
    assert balanced_jobs(blocks, (4096, 4096), TILE, OVERLAP, workers=3, batch_size=8) == blocks


def test_bands_and_cells_follow_the_window_rows_and_columns() -> None:
    block = _blocks(4096)[-1]  # 2688..4096 both ways: window origins at 2688, 3136 and 3584
    bands = window_bands(block, (4096, 4096), TILE, OVERLAP)
    assert [(int(b.row_off), int(b.height)) for b in bands] == [(2688, 448), (3136, 448), (3584, 512)]
    assert all(int(b.col_off) == 2688 and int(b.width) == 1408 for b in bands)
    cells = window_cells(block, (4096, 4096), TILE, OVERLAP)
    assert len(cells) == 9 and all(len(owned_origins(c, (4096, 4096), TILE, OVERLAP)) == 1 for c in cells)
