"""Inference on one block: the raster-wide window grid → model → blended probabilities → class ids.

Knows nothing of files or Dask: the caller passes a ``read(window) -> (raw, valid)`` function.

Why results do not depend on block size: windows come from one grid anchored on the whole raster,
never on the block. A block runs every grid window that touches it and keeps only its own pixels, so a
window cut by a block border is computed identically by both blocks. Contributions are summed in the
grid's order, and batches always have the same shape (padded), so each pixel gets the same floating-
point operations whichever block computes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX
from geoseg.data.preprocess import Normalization
from geoseg.infer.windows import blend_weights, window_grid

Reader = Callable[[Window], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class InferenceSpec:
    normalization: Normalization
    class_ids: Sequence[int]
    tile: int
    overlap: int
    batch_size: int = 4
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast dtype for the forward pass


@dataclass(frozen=True)
class BlockResult:
    classes: np.ndarray  # uint8, IGNORE_INDEX where invalid
    confidence: np.ndarray | None  # float32 0..1: the blended probability of the chosen class


@torch.inference_mode()
def predict_region(
    model: torch.nn.Module,
    read: Reader,
    block: Window,
    raster_shape: tuple[int, int],
    spec: InferenceSpec,
    confidence: bool = False,
) -> BlockResult:
    """Class ids for ``block`` of a raster of ``raster_shape`` (rows, cols)."""
    height, width = raster_shape
    b_row, b_col = int(block.row_off), int(block.col_off)
    b_h, b_w = int(block.height), int(block.width)
    tile = spec.tile
    origins = [
        (r, c)
        for r, c in window_grid(height, width, tile, spec.overlap)
        if r < b_row + b_h and r + tile > b_row and c < b_col + b_w and c + tile > b_col
    ]
    classes = np.full((b_h, b_w), IGNORE_INDEX, dtype=np.uint8)
    if not origins:
        return BlockResult(classes, np.zeros((b_h, b_w), np.float32) if confidence else None)
    # One read covering every window that touches the block (past the raster's edges it is padding).
    top, left = min(r for r, _ in origins), min(c for _, c in origins)
    bottom, right = max(r for r, _ in origins) + tile, max(c for _, c in origins) + tile
    raw, valid = read(Window(left, top, right - left, bottom - top))
    image = spec.normalization.apply(raw)
    image[:, ~valid] = 0.0
    block_valid = valid[b_row - top : b_row - top + b_h, b_col - left : b_col - left + b_w]
    runnable = [(r, c) for r, c in origins if valid[r - top : r - top + tile, c - left : c - left + tile].any()]
    acc = np.zeros((len(spec.class_ids), b_h, b_w), dtype=np.float32)
    weights = blend_weights(tile)
    weight_sum = np.zeros((b_h, b_w), dtype=np.float32) if confidence else None
    for batch_origins, probs in _forward(model, image, top, left, runnable, spec):
        for (r, c), p in zip(batch_origins, probs, strict=True):
            # The part of this window inside the block, in window and in block coordinates.
            r0, r1 = max(r, b_row), min(r + tile, b_row + b_h)
            c0, c1 = max(c, b_col), min(c + tile, b_col + b_w)
            if r1 <= r0 or c1 <= c0:
                continue
            w = weights[r0 - r : r1 - r, c0 - c : c1 - c]
            acc[:, r0 - b_row : r1 - b_row, c0 - b_col : c1 - b_col] += p[:, r0 - r : r1 - r, c0 - c : c1 - c] * w
            if weight_sum is not None:
                weight_sum[r0 - b_row : r1 - b_row, c0 - b_col : c1 - b_col] += w
    lookup = np.asarray(spec.class_ids, dtype=np.uint8)
    best = acc.argmax(axis=0)
    classes = lookup[best]
    classes[~block_valid] = IGNORE_INDEX
    conf = None
    if weight_sum is not None:
        conf = np.take_along_axis(acc, best[None], axis=0)[0] / np.maximum(weight_sum, 1e-12)
        conf[~block_valid] = 0.0
    return BlockResult(classes, conf)


def _forward(
    model: torch.nn.Module,
    image: np.ndarray,
    top: int,
    left: int,
    origins: list[tuple[int, int]],
    spec: InferenceSpec,
):
    """Softmax probabilities per window, in fixed-shape batches (the last one padded with zeros)."""
    parameter = next(model.parameters())
    device = parameter.device
    tile, size = spec.tile, spec.batch_size
    for start in range(0, len(origins), size):
        chunk = origins[start : start + size]
        batch = np.zeros((size, image.shape[0], tile, tile), dtype=np.float32)
        for i, (r, c) in enumerate(chunk):
            batch[i] = image[:, r - top : r - top + tile, c - left : c - left + tile]
        x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
        with _autocast(device, spec.precision):
            logits = model(x)
        probs = torch.softmax(logits.float(), dim=1)[: len(chunk)].cpu().numpy()
        yield chunk, probs


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def predict_block(
    model: torch.nn.Module,
    raw: np.ndarray,
    valid: np.ndarray,
    normalization: Normalization,
    class_ids: Sequence[int],
    tile: int,
    overlap: int,
    batch_size: int = 4,
) -> np.ndarray:
    """Class ids for a whole in-memory (bands, h, w) raster: the raster is one block."""
    _, height, width = raw.shape

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        return _slice_padded(raw, valid, window)

    spec = InferenceSpec(normalization, class_ids, tile, overlap, batch_size)
    return predict_region(model, read, Window(0, 0, width, height), (height, width), spec).classes


def _slice_padded(raw: np.ndarray, valid: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """``window`` of in-memory arrays; outside them data is 0 and invalid (as read_window does)."""
    _, height, width = raw.shape
    row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    data = np.zeros((raw.shape[0], h, w), dtype=raw.dtype)
    mask = np.zeros((h, w), dtype=bool)
    r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + h, height), min(col + w, width)
    if r1 > r0 and c1 > c0:
        data[:, r0 - row : r1 - row, c0 - col : c1 - col] = raw[:, r0:r1, c0:c1]
        mask[r0 - row : r1 - row, c0 - col : c1 - col] = valid[r0:r1, c0:c1]
    return data, mask
