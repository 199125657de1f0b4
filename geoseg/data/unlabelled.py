"""Unlabelled windows for semi-supervised training, drawn by the same datasets and samplers as labelled ones.

The pool is every training mosaic's valid pixels that carry no label and lie outside the validation
region (so validation stays a measurement), plus every valid pixel of the extra mosaics in
``data.unlabelled``. As for adaptation targets (``geoseg/data/targets.py``), the dataset's "label" array
only marks the usable pixels (0) against the rest (IGNORE_INDEX: nodata, labelled pixels, the validation
region), so the samplers draw windows that hold usable pixels and the mask they return is the
semi-supervised loss's pixel mask (quality-flagged pixels included, when the quality mask is on).

The windows get only the geometric part of the augmentation (flips, rotations, scale jitter): that is
the teacher's weak view; the student's strong view is made from it on the tensor
(``geoseg/training/semi_supervised.py``), so both views share one geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from geoseg.config import IGNORE_INDEX, Config
from geoseg.data.datasets import LabeledOrtho
from geoseg.data.prepare import ImageData
from geoseg.data.preprocess import Normalization
from geoseg.data.sampling import LabeledWindowSampler, MultiImageSampler
from geoseg.data.targets import VALID, valid_pixels
from geoseg.io.raster import read_info

UNLABELLED_SEED_OFFSET = 104_729  # unlabelled windows get their own random stream


@dataclass
class UnlabelledSet:
    images: list[LabeledOrtho]
    sampler: MultiImageSampler
    pixels: int  # usable unlabelled pixels in the pool


def usable_unlabelled(labels: np.ndarray, validity: np.ndarray, validation: np.ndarray) -> np.ndarray:
    """VALID where a pixel has data, no label and lies outside the validation region; IGNORE_INDEX elsewhere."""
    usable = (validity == VALID) & (labels == IGNORE_INDEX) & ~validation
    return np.where(usable, VALID, IGNORE_INDEX).astype(np.uint8)


def build_unlabelled_set(
    cfg: Config, images: list[ImageData], bands: list[int], normalization: Normalization
) -> UnlabelledSet | None:
    """Datasets and a sampler over the unlabelled pixels of the training mosaics and of ``data.unlabelled``;
    None when no window holds such a pixel (dense labels and no extra mosaic)."""
    t = cfg.train
    weak = replace(t.augment, brightness=0.0, contrast=0.0, color=0.0, blur=0.0, noise=0.0)
    sources: list[tuple[Path, object, np.ndarray, np.ndarray | None]] = []
    for im in images:
        codes = usable_unlabelled(im.labels, valid_pixels(im.info, bands), im.validation)
        sources.append((im.info.path, im.info.grid, codes, im.validation))
    for path in cfg.data.unlabelled:  # checked by load_images: bands, data type, readable
        info = read_info(path)
        sources.append((path, info.grid, valid_pixels(info, bands), None))
    datasets, samplers, pixels = [], [], 0
    for i, (path, grid, codes, forbidden) in enumerate(sources):
        seed = t.seed + UNLABELLED_SEED_OFFSET + i
        dataset = LabeledOrtho(path, grid, codes, bands, normalization, quality=cfg.data.quality_mask,
                               augment=weak, out_size=t.tile_size, seed=seed)  # fmt: skip
        datasets.append(dataset)
        samplers.append(LabeledWindowSampler(dataset, t.tile_size, t.samples_per_epoch, forbidden=forbidden,
                                             scale_jitter=t.augment.scale_jitter, seed=seed))  # fmt: skip
        pixels += int((codes == VALID).sum())
    if not any(s.n_candidates for s in samplers):
        return None  # every valid pixel is labelled (or in validation): nothing to learn from here
    sampler = MultiImageSampler(samplers, t.samples_per_epoch, seed=t.seed + UNLABELLED_SEED_OFFSET)
    return UnlabelledSet(datasets, sampler, pixels)
