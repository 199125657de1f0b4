"""The model over the windows of a block: the inference spec, and cutting windows out of a block's image.

Knows nothing of files or Dask: callers pass a ``read(window) -> (raw, valid)`` function. The network runs
through ``model.forward.batch_weighted`` (fixed batch shapes, so a window's probabilities do not depend
on its batch-mates), which also weights and rounds them where the network runs. How windows are shared
out among blocks is in ``assemble.py``; a raster held in memory as one block is ``whole.predict_block``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import batched

import numpy as np
from rasterio.windows import Window

from geoseg.data.preprocess import Normalization
from geoseg.io.raster import clip_window
from geoseg.model.forward import Network, RawBatch, Windows, batch_weighted

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
    model: Network,
    image: np.ndarray,
    top: int,
    left: int,
    origins: list[tuple[int, int]],
    spec: InferenceSpec,
    weights: np.ndarray,
    dtype: np.dtype,
    raw_valid: np.ndarray | None = None,
    keep: bool = False,
):
    """Per window of ``image`` (its corner at ``top, left``), ``spec.batch_size`` at a time: the softmax
    probabilities times ``weights``, rounded to ``dtype`` integers (``model.forward.batch_weighted``).

    ``image`` is normalized, or with ``raw_valid`` (its valid mask) raw 8- or 16-bit pixels, which travel to
    the network as they are and are normalized there (``model.forward.RawBatch``). With ``keep``, a torch
    network's integers stay on its device.
    """
    tile = spec.tile
    table = spec.normalization.value_table(image.dtype) if raw_valid is not None else None
    for chunk in batched(origins, spec.batch_size):
        cuts = [(slice(r - top, r - top + tile), slice(c - left, c - left + tile)) for r, c in chunk]
        windows: Windows = [image[:, rows, cols] for rows, cols in cuts]
        if table is not None and raw_valid is not None:
            windows = RawBatch(windows, [raw_valid[rows, cols] for rows, cols in cuts], table)
        yield chunk, batch_weighted(model, windows, spec.batch_size, weights, dtype, spec.precision, spec.tta, keep)


def normalized_on_device(normalization: Normalization, raw: np.ndarray) -> bool:
    """Whether ``raw``'s windows travel as they are and are normalized where the network runs: 8- and
    16-bit bands, whose every value the normalization can tabulate."""
    return normalization.value_table(raw.dtype) is not None


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
