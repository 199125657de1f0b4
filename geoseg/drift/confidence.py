"""How unsure the model is on a mosaic: the share of valid pixels whose top softmax probability is low.

The model runs on an evenly spread sample of whole windows (at most ~4 Mpx), not on the mosaic, so
the check costs seconds. Training records the same share on its own imagery, as the reference a
mosaic's share is judged against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import batched
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg.data.preprocess import Normalization
from geoseg.io.raster import open_raster, read_window
from geoseg.io.tiling import grid_offsets
from geoseg.model.forward import ArrayNetwork, Network, batch_probabilities

CONFIDENCE_THRESHOLD = 0.5  # top softmax probability below which a pixel counts as low-confidence
SAMPLE_PIXELS = 2**22
BATCH = 8


@dataclass(frozen=True)
class LowConfidence:
    share: float  # of the sampled valid pixels
    threshold: float
    pixels: int
    windows: int
    reference: float | None = None  # the share on the training imagery, where the bundle records it

    def summary(self) -> str:
        reference = f" (training imagery: {100 * self.reference:.1f}%)" if self.reference is not None else ""
        return f"low-confidence pixels {100 * self.share:.1f}%{reference}"

    def to_json(self) -> dict:
        return {"share": self.share, "threshold": self.threshold, "pixels": self.pixels, "windows": self.windows,
                "reference": self.reference}  # fmt: skip


def sample_windows(height: int, width: int, tile: int, max_pixels: int = SAMPLE_PIXELS) -> list[Window]:
    """Up to ``max_pixels / tile²`` windows of the inference grid, evenly spread in row-major order."""
    origins = [(r, c) for r in grid_offsets(height, tile, tile) for c in grid_offsets(width, tile, tile)]
    count = min(len(origins), max(1, max_pixels // (tile * tile)))
    picks = np.unique(np.linspace(0, len(origins) - 1, count).round().astype(int))
    return [Window(origins[i][1], origins[i][0], tile, tile) for i in picks]


def low_confidence_counts(
    model: Network,
    path: Path,
    bands: Sequence[int],
    normalization: Normalization,
    tile: int,
    threshold: float = CONFIDENCE_THRESHOLD,
    max_pixels: int = SAMPLE_PIXELS,
) -> tuple[int, int, int]:
    """(low-confidence pixels, valid pixels, windows run) over a sample of ``path``'s windows."""
    low = total = windows = 0
    with open_raster(path) as ds:
        sample = sample_windows(ds.height, ds.width, tile, max_pixels)
        for chunk in batched(sample, BATCH):
            images, masks = [], []
            for window in chunk:
                raw, valid = read_window(ds, bands, window)
                if valid.any():
                    images.append(normalization.apply(raw, valid))
                    masks.append(valid)
            if not images:
                continue
            top = batch_probabilities(model, images, BATCH).max(axis=1)
            valid = np.stack(masks)
            low += int((top[valid] < threshold).sum())
            total += int(valid.sum())
            windows += len(images)
    return low, total, windows


def low_confidence(
    model: Network,
    path: Path,
    bands: Sequence[int],
    normalization: Normalization,
    tile: int,
    threshold: float = CONFIDENCE_THRESHOLD,
    reference: float | None = None,
) -> LowConfidence:
    if not isinstance(model, ArrayNetwork):
        model.eval()
    low, total, windows = low_confidence_counts(model, path, bands, normalization, tile, threshold)
    return LowConfidence(low / max(total, 1), threshold, total, windows, reference)
