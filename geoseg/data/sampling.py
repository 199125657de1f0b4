"""Window sampling: random labelled training windows and a validation grid, as torchgeo samplers.

Training windows are drawn from a coarse grid of candidate positions whose windows hold at least
one labelled pixel and no pixel of the validation region (checked exactly with summed-area tables
over cells), optionally weighted towards rare classes, then jittered by up to half a cell where the
jittered window still qualifies.

The validation grid follows the grid rule of ``geoseg/io/tiling.py``, as inference does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from rasterio.windows import Window
from torchgeo.samplers import SpatialSampler

from geoseg.config import IGNORE_INDEX
from geoseg.data.datasets import LabeledOrtho
from geoseg.io.raster import clip_window
from geoseg.io.tiling import grid_offsets


class LabeledWindowSampler(SpatialSampler):
    """Random windows of ``size`` px from one image, each holding a labelled pixel.

    ``forbidden`` marks pixels no window may touch (the validation region). ``rare_classes``
    weights windows by how much of each class's scarce pixels they hold, so rare classes are seen
    about as often as common ones. ``scale_jitter`` f draws window sides in [size·(1-f), size·(1+f)]
    (the dataset resizes them back to ``size``).
    """

    def __init__(
        self,
        dataset: LabeledOrtho,
        size: int,
        length: int,
        forbidden: np.ndarray | None = None,
        rare_classes: bool = False,
        scale_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset)
        self.dataset = dataset
        self.size = size
        self.length = length
        self.scale_jitter = scale_jitter
        self.seed = seed
        self.epoch = 0
        labels = dataset.labels
        self.forbidden = forbidden if forbidden is not None else np.zeros(labels.shape, dtype=bool)
        self.cell = _cell_size(size)
        self.candidates, self.weights = self._candidates(labels, rare_classes)

    @property
    def strategy(self) -> str:  # abstract in torchgeo's SpatialSampler
        return "random"

    def __len__(self) -> int:
        return self.length if len(self.candidates) else 0

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

    def __iter__(self) -> Iterator[tuple[slice, slice]]:
        for window in self.windows():
            yield self.dataset.geo_slice(window)

    def windows(self) -> Iterator[Window]:
        """The pixel windows of one pass; each pass (epoch) draws new ones, reproducibly."""
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        if not len(self.candidates):
            return
        picks = rng.choice(len(self.candidates), size=self.length, p=self.weights)
        for pick in picks:
            row, col = self.candidates[pick]
            yield self._jittered(int(row), int(col), rng)

    def _jittered(self, row: int, col: int, rng: np.random.Generator) -> Window:
        side = self.size
        if self.scale_jitter:
            side = max(8, round(self.size * rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter)))
        half = self.cell // 2
        h, w = self.dataset.labels.shape
        r = row + int(rng.integers(-half, half + 1)) - (side - self.size) // 2
        c = col + int(rng.integers(-half, half + 1)) - (side - self.size) // 2
        # an axis shorter than the window keeps it at 0, padded past the far edge (the grid rule)
        window = Window(c if w > side else 0, r if h > side else 0, side, side)
        if self._qualifies(window):
            return window
        return Window(col, row, self.size, self.size)

    def _qualifies(self, w: Window) -> bool:
        h, wd = self.dataset.labels.shape
        if not (_fits(w.row_off, w.height, h) and _fits(w.col_off, w.width, wd)):
            return False
        part = clip_window(w, h, wd)
        if part is None:
            return False
        inside = part[0].toslices()
        if self.forbidden[inside].any():
            return False
        return bool((self.dataset.labels[inside] != IGNORE_INDEX).any())

    def _candidates(self, labels: np.ndarray, rare_classes: bool) -> tuple[np.ndarray, np.ndarray]:
        """Window origins whose window holds a labelled pixel and no forbidden one.

        Counts are kept per cell, not per pixel, so memory stays small on large mosaics. The test is
        conservative where a window does not align with cells: forbidden pixels are counted over
        every cell it touches, labelled ones only over cells wholly inside it.
        """
        h, w = labels.shape
        cell = self.cell
        labelled = labels != IGNORE_INDEX
        if not labelled.any():
            return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
        n_classes = int(labels[labelled].max()) + 1
        per_class_cells = np.stack([_cell_counts(labels == k, cell) for k in range(n_classes)])
        class_tables = np.stack([_summed_area(c) for c in per_class_cells])
        blocked = _summed_area(_cell_counts(self.forbidden, cell))
        rr, cc = np.meshgrid(_origin_range(h, self.size, cell), _origin_range(w, self.size, cell), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        n_rows, n_cols = per_class_cells.shape[1:]
        outer = _cell_span(rr, cc, self.size, cell, n_rows, n_cols, outer=True)
        inner = _cell_span(rr, cc, self.size, cell, n_rows, n_cols, outer=False)
        per_class = np.stack([_box_sum(t, *inner) for t in class_tables])  # (K, n)
        ok = (per_class.sum(axis=0) > 0) & (_box_sum(blocked, *outer) == 0)
        per_class = per_class[:, ok]
        candidates = np.stack([rr[ok], cc[ok]], axis=1)
        if not len(candidates):
            return candidates, np.zeros(0)
        if rare_classes:
            totals = np.maximum(per_class_cells.sum(axis=(1, 2)), 1).astype(np.float64)
            weights = (per_class / totals[:, None]).sum(axis=0) + 1e-12
        else:
            weights = np.ones(len(candidates))
        return candidates, weights / weights.sum()

    def class_frequencies(self) -> np.ndarray:
        """How often each class's pixels appear in drawn windows (for checks and reports)."""
        labels = self.dataset.labels
        n = int(labels[labels != IGNORE_INDEX].max()) + 1
        seen = np.zeros(n, dtype=np.int64)
        for window in self.windows():
            patch = self.dataset._labels_in(window)
            seen += np.bincount(patch[patch != IGNORE_INDEX], minlength=n)[:n]
        return seen


class MultiImageSampler:
    """Draws ``(image index, query)`` keys from several per-image samplers, in proportion to length."""

    def __init__(self, samplers: Sequence[LabeledWindowSampler], length: int, seed: int = 0) -> None:
        self.samplers = [s for s in samplers if len(s)]
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.index_of = {id(s): i for i, s in enumerate(samplers)}
        weights = np.array([s.n_candidates for s in self.samplers], dtype=np.float64)
        self.weights = weights / weights.sum() if len(weights) else weights

    def __len__(self) -> int:
        return self.length if self.samplers else 0

    def __iter__(self) -> Iterator[tuple[int, tuple[slice, slice]]]:
        rng = np.random.default_rng([self.seed, 1_000_003, self.epoch])
        self.epoch += 1
        picks = rng.choice(len(self.samplers), size=self.length, p=self.weights)
        streams = {}
        for i, sampler in enumerate(self.samplers):
            sampler.length = int((picks == i).sum())
            streams[i] = iter(sampler)
        for pick in picks:
            yield self.index_of[id(self.samplers[pick])], next(streams[int(pick)])


def owned_mask(window: Window, owned: Window) -> np.ndarray:
    """(H, W) bool over ``window``: True on the part it owns (``owned`` ends where the window ends)."""
    mask = np.zeros((int(window.height), int(window.width)), dtype=bool)
    mask[int(owned.row_off - window.row_off) :, int(owned.col_off - window.col_off) :] = True
    return mask


def validation_windows(region: np.ndarray, labels: np.ndarray, size: int) -> list[tuple[Window, Window]]:
    """Non-overlapping coverage of the labelled validation pixels: ``(window, owned part)`` pairs.

    Windows follow the grid rule over the region's bounding box; where the last window is shifted
    back, the part already covered is not owned again, so every pixel is scored exactly once.
    """
    labelled = region & (labels != IGNORE_INDEX)
    if not labelled.any():
        return []
    rows = np.flatnonzero(labelled.any(axis=1))
    cols = np.flatnonzero(labelled.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    h, w = labels.shape
    out = []
    row_offsets = _clamped_offsets(top, height, size, h)
    col_offsets = _clamped_offsets(left, width, size, w)
    for ri, r in enumerate(row_offsets):
        own_r0 = r if ri == 0 else max(r, row_offsets[ri - 1] + size)
        for ci, c in enumerate(col_offsets):
            own_c0 = c if ci == 0 else max(c, col_offsets[ci - 1] + size)
            window = Window(c, r, size, size)
            owned = Window(own_c0, own_r0, c + size - own_c0, r + size - own_r0)
            part = clip_window(owned, *labelled.shape)
            if part is not None and labelled[part[0].toslices()].any():
                out.append((window, owned))
    return out


def _clamped_offsets(start: int, length: int, size: int, limit: int) -> list[int]:
    """Grid offsets over [start, start+length), kept inside [0, limit) where the raster allows."""
    offsets = [start + o for o in grid_offsets(length, size, size)]
    offsets = [min(max(o, 0), limit - size) for o in offsets] if limit >= size else [0]
    return sorted(set(offsets))


def _fits(offset: int, side: int, length: int) -> bool:
    """Inside the raster along one axis, or at 0 where the raster is shorter than the window."""
    return offset == 0 if length <= side else 0 <= offset <= length - side


def _cell_size(size: int) -> int:
    for cell in (32, 16, 8, 4, 2):
        if size % cell == 0 and size // cell >= 4:
            return cell
    return 1


def _origin_range(length: int, size: int, cell: int) -> np.ndarray:
    """Candidate window origins along one axis: cell-aligned, plus the last one flush with the edge."""
    if length <= size:
        return np.array([0])
    origins = np.arange(0, length - size, cell)
    return np.append(origins, length - size)


def _cell_counts(mask: np.ndarray, cell: int) -> np.ndarray:
    """How many pixels of ``mask`` fall in each cell×cell cell (cells anchored at pixel 0)."""
    h, w = mask.shape
    padded = np.zeros((-(-h // cell) * cell, -(-w // cell) * cell), dtype=np.int32)
    padded[:h, :w] = mask
    return padded.reshape(padded.shape[0] // cell, cell, padded.shape[1] // cell, cell).sum(axis=(1, 3))


def _cell_span(
    rows: np.ndarray, cols: np.ndarray, size: int, cell: int, n_rows: int, n_cols: int, outer: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cell-index box of windows at (rows, cols): every touched cell (outer) or whole cells only."""
    r0, c0, r1, c1 = rows, cols, rows + size, cols + size
    if outer:
        box = (r0 // cell, c0 // cell, -(-r1 // cell), -(-c1 // cell))
    else:
        box = (-(-r0 // cell), -(-c0 // cell), r1 // cell, c1 // cell)
    lo_r, lo_c = np.clip(box[0], 0, n_rows), np.clip(box[1], 0, n_cols)
    hi_r, hi_c = np.clip(box[2], 0, n_rows), np.clip(box[3], 0, n_cols)
    return lo_r, lo_c, np.maximum(hi_r, lo_r), np.maximum(hi_c, lo_c)


def _summed_area(mask: np.ndarray) -> np.ndarray:
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    return table


def _box_sum(table: np.ndarray, r0: np.ndarray, c0: np.ndarray, r1: np.ndarray, c1: np.ndarray) -> np.ndarray:
    return table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
