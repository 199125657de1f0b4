"""Unlabeled target mosaics for domain adaptation, drawn by the same datasets and samplers as source ones.

A target has no labels: its "label" array only marks which pixels are valid (0) and which are nodata
(IGNORE_INDEX), so the samplers draw windows that hold valid pixels, and the dataset's mask marks the
pixels the adaptation term may use (nodata, outside the image and, if enabled, quality-flagged pixels
are IGNORE_INDEX). Nothing here opens a label file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.config import IGNORE_INDEX, Config
from geoseg.data.datasets import LabeledOrtho
from geoseg.data.preprocess import Normalization
from geoseg.data.sampling import LabeledWindowSampler, MultiImageSampler
from geoseg.errors import ConfigError, InputError
from geoseg.io.raster import (
    RasterInfo,
    block_windows,
    check_like_training,
    open_raster,
    read_info,
    read_window,
)

VALID = 0
TARGET_SEED_OFFSET = 7919  # target windows get their own random stream, apart from the source's


@dataclass
class TargetSet:
    images: list[LabeledOrtho]
    sampler: MultiImageSampler
    paths: list[Path]


def valid_pixels(info: RasterInfo, bands: list[int]) -> np.ndarray:
    """VALID where the mosaic has data, IGNORE_INDEX where it is nodata (value, alpha or mask)."""
    codes = np.full((info.grid.height, info.grid.width), IGNORE_INDEX, dtype=np.uint8)
    with open_raster(info.path) as ds:
        for window in block_windows(info.grid.width, info.grid.height, 1024):
            _, valid = read_window(ds, bands, window)
            rows = slice(int(window.row_off), int(window.row_off + window.height))
            cols = slice(int(window.col_off), int(window.col_off + window.width))
            codes[rows, cols][valid] = VALID
    return codes


def build_target_set(cfg: Config, bands: list[int], normalization: Normalization, dtype: str) -> TargetSet:
    """Datasets and a sampler over ``cfg.adaptation.targets``, normalized exactly as the source data."""
    t = cfg.train
    images, samplers = [], []
    for i, path in enumerate(cfg.adaptation.targets):
        info = read_info(path)
        check_like_training(info, bands, dtype, "adaptation.targets")
        validity = valid_pixels(info, bands)
        if not (validity == VALID).any():
            raise InputError("has no valid pixel (all nodata); remove it from adaptation.targets", path)
        seed = t.seed + TARGET_SEED_OFFSET + i
        dataset = LabeledOrtho(path, info.grid, validity, bands, normalization, quality=cfg.data.quality_mask,
                               augment=t.augment, out_size=t.tile_size, seed=seed)  # fmt: skip
        images.append(dataset)
        samplers.append(LabeledWindowSampler(dataset, t.tile_size, t.samples_per_epoch,
                                             scale_jitter=t.augment.scale_jitter, seed=seed))  # fmt: skip
    if not any(s.n_candidates for s in samplers):
        raise ConfigError(f"no {t.tile_size}px window of adaptation.targets holds a valid pixel", cfg.path)
    sampler = MultiImageSampler(samplers, t.samples_per_epoch, seed=t.seed + TARGET_SEED_OFFSET)
    return TargetSet(images, sampler, list(cfg.adaptation.targets))
