"""The model over windows: fixed-shape batches, softmax, precision; and whole-raster prediction.

Knows nothing of files or Dask: callers pass a ``read(window) -> (raw, valid)`` function. Batches
always have the same shape (the last one padded), so a window's probabilities do not depend on which
other windows share its batch. How windows are shared out among blocks is in ``assemble.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import batched

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.data.preprocess import Normalization
from geoseg.io.raster import clip_window
from geoseg.model.forward import batch_probabilities

Reader = Callable[[Window], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class InferenceSpec:
    normalization: Normalization
    class_ids: Sequence[int]
    tile: int
    overlap: int
    batch_size: int = 4
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast dtype for the forward pass
    tta: bool = False  # average the eight flips and 90° rotations of each window (geoseg/tta.py)


@dataclass(frozen=True)
class BlockResult:
    classes: np.ndarray  # uint8, IGNORE_INDEX where invalid
    confidence: np.ndarray | None  # float32 0..1: the blended probability of the chosen class


def forward_windows(
    model: torch.nn.Module,
    image: np.ndarray,
    top: int,
    left: int,
    origins: list[tuple[int, int]],
    spec: InferenceSpec,
):
    """Softmax probabilities per window of ``image`` (its corner at ``top, left``), ``spec.batch_size`` at a time."""
    tile = spec.tile
    for chunk in batched(origins, spec.batch_size):
        windows = [image[:, r - top : r - top + tile, c - left : c - left + tile] for r, c in chunk]
        yield chunk, batch_probabilities(model, windows, spec.batch_size, spec.precision, spec.tta)


def predict_block(
    model: torch.nn.Module,
    raw: np.ndarray,
    valid: np.ndarray,
    normalization: Normalization,
    class_ids: Sequence[int],
    tile: int,
    overlap: int,
    batch_size: int = 4,
    tta: bool = False,
) -> np.ndarray:
    """Class ids for a whole in-memory (bands, h, w) raster: the raster is one block."""
    from geoseg.infer.assemble import Assembler, block_contribution

    _, height, width = raw.shape

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        return slice_padded(raw, valid, window)

    spec = InferenceSpec(normalization, class_ids, tile, overlap, batch_size, tta=tta)
    assembler = Assembler((height, width), max(height, width), spec, confidence=False)
    contribution = block_contribution(model, read, Window(0, 0, width, height), (height, width), spec)
    ((_, result),) = assembler.add(contribution)
    return result.classes


def slice_padded(raw: np.ndarray, valid: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """``window`` of in-memory arrays; outside them data is 0 and invalid (as read_window does)."""
    data = np.zeros((raw.shape[0], int(window.height), int(window.width)), dtype=raw.dtype)
    mask = np.zeros(data.shape[1:], dtype=bool)
    part = clip_window(window, *raw.shape[1:])
    if part is not None:
        inner, within = part
        data[(slice(None), *within)] = raw[(slice(None), *inner.toslices())]
        mask[within] = valid[inner.toslices()]
    return data, mask
