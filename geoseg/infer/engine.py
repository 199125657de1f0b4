"""Inference on one in-memory block: windows → model → blended probabilities → class ids.

Knows nothing of files or Dask; the caller reads the block (with any halo) and its validity mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from geoseg.config import IGNORE_INDEX
from geoseg.data.preprocess import Normalization
from geoseg.infer.windows import blend_weights, window_grid


@torch.inference_mode()
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
    """Class ids (uint8, IGNORE_INDEX where invalid) for a (bands, h, w) raw block.

    Windows that are entirely nodata are skipped; each window's softmax is weighted by
    :func:`blend_weights` and accumulated, so overlapping windows blend without seams.
    """
    _, height, width = raw.shape
    device = next(model.parameters()).device
    image = normalization.apply(raw)
    image[:, ~valid] = 0.0
    n_classes = len(class_ids)
    weights = blend_weights(tile)
    acc = np.zeros((n_classes, max(height, tile), max(width, tile)), dtype=np.float32)
    origins = [(r, c) for r, c in window_grid(height, width, tile, overlap) if valid[r : r + tile, c : c + tile].any()]
    padded = np.zeros((image.shape[0], max(height, tile), max(width, tile)), dtype=np.float32)
    padded[:, :height, :width] = image
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        batch = torch.from_numpy(np.stack([padded[:, r : r + tile, c : c + tile] for r, c in chunk])).to(device)
        probs = torch.softmax(model(batch).float(), dim=1).cpu().numpy()
        for (r, c), p in zip(chunk, probs, strict=True):
            acc[:, r : r + tile, c : c + tile] += p * weights
    lookup = np.asarray(class_ids, dtype=np.uint8)
    classes = lookup[acc[:, :height, :width].argmax(axis=0)]
    classes[~valid] = IGNORE_INDEX
    return classes
