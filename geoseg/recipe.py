"""The training recipe's automatic choices: window size and step budget from the labelled area, and the
learning-rate schedule.

Small labelled plots are the usual case (one or two plots of a few hundred pixels a side), so nothing
here assumes a large dataset: windows shrink to fit the labelled area, and the step budget grows with
the square root of the labelled area measured in windows, from ``MIN_STEPS`` for a single small plot.
``bench/accuracy.py`` measured these rules; see README "Accuracy".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from geoseg.config import IGNORE_INDEX, TrainConfig

TILE_CHOICES = (512, 384, 256, 192, 128, 96, 64)
MIN_STEPS = 1000
MAX_STEPS = 40_000
STEPS_PER_SQRT_WINDOW = 1000


def labelled_extent(labels: np.ndarray, excluded: np.ndarray) -> tuple[int, int]:
    """Height and width of the bounding box of labelled pixels outside ``excluded`` (0, 0 if none)."""
    usable = (labels != IGNORE_INDEX) & ~excluded
    if not usable.any():
        return 0, 0
    rows = np.flatnonzero(usable.any(axis=1))
    cols = np.flatnonzero(usable.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def auto_tile_size(extents: Sequence[tuple[int, int]]) -> int:
    """The largest of ``TILE_CHOICES`` no larger than half the shorter side of the largest labelled area.

    Half the side, so that windows can sit at many places and the network sees each labelled pixel in
    different contexts; 64 px at least, since the U-Net halves its input five times.
    """
    shorter = max((min(h, w) for h, w in extents), default=0)
    for tile in TILE_CHOICES:
        if tile <= shorter / 2:
            return tile
    return TILE_CHOICES[-1]


def auto_steps(labelled_pixels: int, tile: int) -> int:
    """Optimizer steps for ``labelled_pixels`` of training labels seen through ``tile``² windows."""
    windows = max(labelled_pixels / float(tile * tile), 1.0)
    return int(min(MAX_STEPS, max(MIN_STEPS, round(STEPS_PER_SQRT_WINDOW * math.sqrt(windows)))))


def lr_factor(schedule: str, total_steps: int, warmup: float) -> Callable[[int], float]:
    """The learning rate's multiplier at each step: linear warm-up, then cosine, one-cycle or constant.

    ``onecycle`` is cosine annealing after a warm-up of at least 30 % of the steps (as in Smith's
    one-cycle policy); both end at 1 % of the peak rate.
    """
    if schedule == "onecycle":
        warmup = max(warmup, 0.3)
    warm = max(1, round(total_steps * warmup)) if warmup > 0 else 0
    floor = 0.01

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def resolve_recipe(train: TrainConfig, regions: Sequence[tuple[np.ndarray, np.ndarray]]) -> TrainConfig:
    """``train`` with ``tile_size`` and ``steps`` made concrete for these (labels, validation region) pairs.

    Explicit values win; ``epochs`` given without ``steps`` means epochs × steps per epoch.
    """
    tile = train.tile_size or auto_tile_size([labelled_extent(labels, val) for labels, val in regions])
    if train.steps is not None:
        steps = train.steps
    elif train.epochs is not None:
        steps = train.epochs * math.ceil(train.samples_per_epoch / train.batch_size)
    else:
        labelled = sum(int(((labels != IGNORE_INDEX) & ~val).sum()) for labels, val in regions)
        steps = auto_steps(labelled, tile)
    return replace(train, tile_size=tile, steps=steps)
