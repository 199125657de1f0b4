"""Which windows to label next, from per-cell statistics: eligibility, the score, and a spread-out choice.

The mosaic is cut into square cells of half a window's side, starting at a seeded offset; a candidate
window is 2 × 2 cells, so candidates sit half a window apart. A window qualifies when every one of its
pixels is valid (not nodata, not masked) and none is labelled. Its score is the mean uncertainty of its
pixels (1 − the blended probability of the chosen class). Windows are taken best first (ties in a seeded
random order; the ``random`` strategy takes them in a seeded random order) and kept only when no window
already kept lies within ``spacing`` pixels (Chebyshev distance between their corners). The first pass
keeps a window's width of gap between any two; when that leaves fewer than asked for, passes with half the
gap follow, down to windows that merely do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("uncertainty", "random")


@dataclass(frozen=True)
class CellGrid:
    """Cells of ``side`` px whose top-left cell starts at pixel (``top``, ``left``); all lie inside the raster."""

    top: int
    left: int
    side: int
    rows: int
    cols: int

    @property
    def window(self) -> int:
        return 2 * self.side

    def window_origin(self, row: int, col: int) -> tuple[int, int]:
        """Pixel (row, col) of the top-left corner of the window whose top-left cell is (row, col)."""
        return self.top + row * self.side, self.left + col * self.side


def cell_grid(height: int, width: int, window: int, rng: np.random.Generator) -> CellGrid | None:
    """The cell grid for windows of ``window`` px (even) on a ``height`` × ``width`` raster, its offset drawn
    from ``rng``; None when not even one window fits."""
    side = window // 2
    if height < window or width < window:
        return None
    top = int(rng.integers(0, min(side, height - window + 1)))
    left = int(rng.integers(0, min(side, width - window + 1)))
    return CellGrid(top, left, side, (height - top) // side, (width - left) // side)


@dataclass
class CellStats:
    """Per cell: whether every pixel is usable, whether any is labelled, and the sum of uncertainty."""

    usable: np.ndarray  # bool (rows, cols)
    labelled: np.ndarray  # bool (rows, cols)
    uncertainty: np.ndarray  # float64 (rows, cols)

    @classmethod
    def empty(cls, grid: CellGrid) -> CellStats:
        shape = (grid.rows, grid.cols)
        return cls(np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, np.float64))

    def fill_row(self, row: int, usable: np.ndarray, labelled: np.ndarray, uncertainty: np.ndarray | None) -> None:
        """Set cell row ``row`` from one strip of pixels (``side`` rows × ``cols * side`` columns)."""
        side = usable.shape[0]
        cols = self.usable.shape[1]

        def per_cell(a: np.ndarray) -> np.ndarray:
            return a[:, : cols * side].reshape(side, cols, side).swapaxes(0, 1).reshape(cols, side * side)

        self.usable[row] = per_cell(usable).all(axis=1)
        self.labelled[row] = per_cell(labelled).any(axis=1)
        if uncertainty is not None:
            self.uncertainty[row] = per_cell(uncertainty.astype(np.float64)).sum(axis=1)


def window_scores(stats: CellStats, side: int) -> np.ndarray:
    """Mean uncertainty of each candidate window (rows - 1, cols - 1); NaN where the window does not qualify."""

    def two_by_two(a: np.ndarray) -> np.ndarray:
        return a[:-1, :-1] + a[1:, :-1] + a[:-1, 1:] + a[1:, 1:]

    usable = two_by_two(stats.usable.astype(np.int8)) == 4
    free = two_by_two(stats.labelled.astype(np.int8)) == 0
    scores = two_by_two(stats.uncertainty) / float((2 * side) ** 2)
    return np.where(usable & free, scores, np.nan)


@dataclass(frozen=True)
class Choice:
    row: int  # pixel row of the window's top-left corner
    col: int
    score: float  # mean uncertainty; NaN for the random strategy
    spacing: int  # the spacing in force when it was taken (px)


def choose_windows(
    scores: np.ndarray, grid: CellGrid, count: int, strategy: str, rng: np.random.Generator
) -> list[Choice]:
    """Up to ``count`` qualifying windows, in the order to label them (see the module's rule)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    rows, cols = np.nonzero(np.isfinite(scores))
    if not len(rows):
        return []
    tie_break = rng.random(len(rows))
    order = np.lexsort((tie_break, -scores[rows, cols])) if strategy == "uncertainty" else np.argsort(tie_break)
    origins = np.array([grid.window_origin(r, c) for r, c in zip(rows[order], cols[order], strict=True)])
    values = scores[rows[order], cols[order]]
    spacing_of: dict[int, int] = {}  # the windows taken, in order, and the spacing each was taken at
    spacing = 2 * grid.window
    while len(spacing_of) < count:
        for index in range(len(origins)):
            if len(spacing_of) == count:
                break
            if index in spacing_of:
                continue
            taken = list(spacing_of)
            if taken and np.abs(origins[taken] - origins[index]).max(axis=1).min() < spacing:
                continue
            spacing_of[index] = spacing
        if spacing == grid.window:
            break
        spacing = max(grid.window, spacing // 2)
    return [
        Choice(int(origins[i][0]), int(origins[i][1]), float(values[i]) if strategy == "uncertainty" else np.nan,
               taken_at)
        for i, taken_at in spacing_of.items()
    ]  # fmt: skip
