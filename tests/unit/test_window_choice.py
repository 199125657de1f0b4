"""The rule that picks windows to label: qualifying windows only, best first, spread out, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.assess.window_choice import CellGrid, CellStats, cell_grid, choose_windows, window_scores


def _stats(rows: int, cols: int, side: int, uncertainty: np.ndarray) -> CellStats:
    stats = CellStats.empty(CellGrid(0, 0, side, rows, cols))
    stats.usable[:] = True
    stats.uncertainty[:] = uncertainty * side * side
    return stats


def test_a_window_scores_the_mean_uncertainty_of_its_four_cells() -> None:
    cell_means = np.array([[0.1, 0.3, 0.5], [0.2, 0.4, 0.9]])
    scores = window_scores(_stats(2, 3, 4, cell_means), side=4)
    assert scores.shape == (1, 2)
    np.testing.assert_allclose(scores, [[(0.1 + 0.3 + 0.2 + 0.4) / 4, (0.3 + 0.5 + 0.4 + 0.9) / 4]])


def test_a_window_with_one_unusable_or_labelled_cell_does_not_qualify() -> None:
    stats = _stats(3, 3, 2, np.full((3, 3), 0.5))
    stats.usable[0, 0] = False  # nodata or masked somewhere in that cell
    stats.labelled[2, 2] = True
    scores = window_scores(stats, side=2)
    assert np.isnan(scores[0, 0]) and np.isnan(scores[1, 1])
    assert np.isfinite(scores[0, 1]) and np.isfinite(scores[1, 0])


def test_cell_statistics_of_a_strip_follow_the_pixels() -> None:
    grid = CellGrid(0, 0, 2, 1, 3)
    stats = CellStats.empty(grid)
    usable = np.ones((2, 7), bool)  # one column beyond the last whole cell is ignored
    usable[1, 3] = False
    labelled = np.zeros((2, 7), bool)
    labelled[0, 5] = True
    uncertainty = np.arange(14, dtype=np.float32).reshape(2, 7)
    stats.fill_row(0, usable, labelled, uncertainty)
    assert stats.usable[0].tolist() == [True, False, True]
    assert stats.labelled[0].tolist() == [False, False, True]
    assert stats.uncertainty[0].tolist() == [0 + 1 + 7 + 8, 2 + 3 + 9 + 10, 4 + 5 + 11 + 12]


def test_windows_come_best_first_and_never_overlap() -> None:
    rng = np.random.default_rng(0)
    grid = CellGrid(0, 0, 8, 20, 20)
    scores = rng.random((19, 19))
    chosen = choose_windows(scores, grid, 6, "uncertainty", np.random.default_rng(1))
    assert len(chosen) == 6
    assert [c.score for c in chosen] == sorted((c.score for c in chosen), reverse=True)
    assert chosen[0].score == scores.max()
    for i, a in enumerate(chosen):
        for b in chosen[i + 1 :]:
            assert max(abs(a.row - b.row), abs(a.col - b.col)) >= 2 * grid.window  # the first pass's gap


def test_the_gap_shrinks_to_non_overlapping_only_when_too_few_fit() -> None:
    grid = CellGrid(0, 0, 4, 6, 6)  # a 24 px square of 8 px windows: a window-width gap leaves room for few
    scores = np.ones((5, 5))
    chosen = choose_windows(scores, grid, 25, "uncertainty", np.random.default_rng(0))
    spacings = [c.spacing for c in chosen]
    assert spacings == sorted(spacings, reverse=True) and set(spacings) == {16, 8}  # wide gaps first
    for i, a in enumerate(chosen):
        for b in chosen[i + 1 :]:
            assert max(abs(a.row - b.row), abs(a.col - b.col)) >= grid.window
    # as many as fit: every other candidate overlaps a chosen window
    for r in range(5):
        for c in range(5):
            row, col = grid.window_origin(r, c)
            assert any(max(abs(row - k.row), abs(col - k.col)) < grid.window for k in chosen)


def test_random_strategy_is_seeded_and_ignores_scores() -> None:
    grid = CellGrid(0, 0, 4, 30, 30)
    scores = np.linspace(0, 1, 29 * 29).reshape(29, 29)
    first = choose_windows(scores, grid, 5, "random", np.random.default_rng(7))
    again = choose_windows(scores, grid, 5, "random", np.random.default_rng(7))
    assert first == again
    assert all(np.isnan(c.score) for c in first)
    assert (first[0].row, first[0].col) != (28 * 4, 28 * 4)  # not the best window, but a drawn one


def test_no_window_fits_a_raster_smaller_than_one() -> None:
    assert cell_grid(100, 40, 64, np.random.default_rng(0)) is None
    grid = cell_grid(100, 64, 64, np.random.default_rng(0))
    assert grid is not None and grid.left == 0 and grid.top + grid.window <= 100


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="strategy"):
        choose_windows(np.ones((2, 2)), CellGrid(0, 0, 2, 3, 3), 1, "entropy", np.random.default_rng(0))
