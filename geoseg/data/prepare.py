"""From a training config to ready datasets: validated inputs, labels, regions and statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX, Config
from geoseg.data.datasets import LabeledOrtho
from geoseg.data.labels import labels_on_grid
from geoseg.data.preprocess import BandStats, Normalization, choose_normalization, compute_band_stats
from geoseg.data.sampling import LabeledWindowSampler, MultiImageSampler, validation_windows
from geoseg.errors import ConfigError, InputError
from geoseg.io.raster import (
    RasterInfo,
    check_bands,
    check_like_training,
    check_not_mirrored,
    open_raster,
    read_info,
    read_window,
    verify_readable,
)
from geoseg.io.vector import read_region

LABEL_CHECK_BLOCK = 1024


@dataclass
class ImageData:
    info: RasterInfo
    labels: np.ndarray  # class indices on the image grid, IGNORE_INDEX where unlabelled
    validation: np.ndarray  # bool: the validation region


@dataclass
class TrainingSet:
    images: list[ImageData]
    bands: list[int]
    stats: list[BandStats]
    normalization: Normalization
    train_sampler: MultiImageSampler
    train_images: list[LabeledOrtho]
    val_images: list[LabeledOrtho]
    val_windows: list[tuple[int, object, object]]  # (image index, window, owned part)


def load_images(cfg: Config) -> list[ImageData]:
    """Validate every input and burn its labels onto its grid; fail before anything is written."""
    data = cfg.data
    infos = [read_info(p) for p in data.images]
    bands = data.bands or infos[0].image_bands
    for info in infos:
        check_bands(info, bands, source="data.bands")
        check_not_mirrored(info)
        if info.dtype != infos[0].dtype:
            raise InputError(f"has data type {info.dtype} but {infos[0].path.name} has {infos[0].dtype}", info.path)
        verify_readable(info.path)
    for path in data.unlabelled:
        check_like_training(read_info(path), bands, infos[0].dtype, "data.unlabelled")
    label_paths = data.labels * len(infos) if len(data.labels) == 1 else data.labels
    images = []
    for info, label_path in zip(infos, label_paths, strict=True):
        labels = labels_on_grid(label_path, data.label_field, data.classes, info.grid, data.background)
        if not (labels != IGNORE_INDEX).any():
            raise InputError(
                f"no labelled pixel of the listed classes falls on {info.path.name}; do the labels overlap the "
                f"image and use the values in data.classes ({[c.value for c in data.classes]})?",
                label_path,
            )
        if not _any_valid_under_labels(info, bands, labels):
            raise InputError(
                f"has no valid pixel under the labels (all nodata or NaN there); check its nodata value, "
                f"or that {Path(label_path).name} labels the right image",
                info.path,
            )
        images.append(ImageData(info, labels, _validation_region(cfg, info, labels)))
    return images


def _any_valid_under_labels(info: RasterInfo, bands: list[int], labels: np.ndarray) -> bool:
    """Whether some labelled pixel holds data; stops at the first block that has one."""
    rows = np.flatnonzero((labels != IGNORE_INDEX).any(axis=1))
    cols = np.flatnonzero((labels != IGNORE_INDEX).any(axis=0))
    with open_raster(info.path) as ds:
        for r in range(rows[0], rows[-1] + 1, LABEL_CHECK_BLOCK):
            for c in range(cols[0], cols[-1] + 1, LABEL_CHECK_BLOCK):
                window = Window(
                    c, r, min(LABEL_CHECK_BLOCK, cols[-1] + 1 - c), min(LABEL_CHECK_BLOCK, rows[-1] + 1 - r)
                )
                _, valid = read_window(ds, bands, window)
                labelled = labels[r : r + int(window.height), c : c + int(window.width)] != IGNORE_INDEX
                if (valid & labelled).any():
                    return True
    return False


def _validation_region(cfg: Config, info: RasterInfo, labels: np.ndarray) -> np.ndarray:
    """The polygon given in the config, or a strip: the last ``fraction`` of the labelled extent.

    The strip runs across the labelled area's longer side, at its right (or bottom) end, so it
    holds labels whatever part of the image the labels cover.
    """
    val = cfg.data.validation
    if val.polygon is not None:
        return read_region(val.polygon, info.grid)
    region = np.zeros(labels.shape, dtype=bool)
    if val.fraction == 0:
        return region
    rows = np.flatnonzero((labels != IGNORE_INDEX).any(axis=1))
    cols = np.flatnonzero((labels != IGNORE_INDEX).any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if width >= height:
        start = cols[-1] + 1 - max(1, round(width * val.fraction))
        region[:, start:] = True
    else:
        start = rows[-1] + 1 - max(1, round(height * val.fraction))
        region[start:, :] = True
    return region


def build_training_set(
    cfg: Config,
    images: list[ImageData],
    pretrained: bool,
    progress: Callable[[int, int], None] | None = None,
    normalization: Normalization | None = None,
) -> TrainingSet:
    """``normalization`` given (the pretrained weights' own) replaces the one chosen from the band statistics."""
    bands = image_bands(cfg, images)
    stats = compute_band_stats([im.info.path for im in images], bands, progress)
    if normalization is None:
        normalization = choose_normalization(stats, images[0].info.dtype, cfg.preprocess, pretrained)
    t = cfg.train
    train_images, val_images, samplers, val_windows = [], [], [], []
    for i, im in enumerate(images):
        train_labels = np.where(im.validation, IGNORE_INDEX, im.labels).astype(np.uint8)
        val_labels = np.where(im.validation, im.labels, IGNORE_INDEX).astype(np.uint8)
        common = {
            "path": im.info.path,
            "grid": im.info.grid,
            "bands": bands,
            "normalization": normalization,
            "quality": cfg.data.quality_mask,
        }
        train_ds = LabeledOrtho(labels=train_labels, augment=t.augment, out_size=t.tile_size, seed=t.seed, **common)
        val_ds = LabeledOrtho(labels=val_labels, **common)
        train_images.append(train_ds)
        val_images.append(val_ds)
        samplers.append(
            LabeledWindowSampler(
                train_ds,
                t.tile_size,
                t.samples_per_epoch,
                forbidden=im.validation,
                rare_classes=t.rare_class_sampling,
                scale_jitter=t.augment.scale_jitter,
                seed=t.seed + i,
            )
        )
        val_windows += [(i, w, own) for w, own in validation_windows(im.validation, im.labels, t.tile_size)]
    if not any(s.n_candidates for s in samplers):
        raise ConfigError(
            f"no {t.tile_size}px training window holds labels outside the validation region; lower "
            "train.tile_size or data.validation.fraction, or label more area",
            cfg.path,
        )
    return TrainingSet(
        images=images,
        bands=bands,
        stats=stats,
        normalization=normalization,
        train_sampler=MultiImageSampler(samplers, t.samples_per_epoch, seed=t.seed),
        train_images=train_images,
        val_images=val_images,
        val_windows=val_windows,
    )


def image_bands(cfg: Config, images: list[ImageData]) -> list[int]:
    return cfg.data.bands or images[0].info.image_bands


def describe(ts: TrainingSet) -> str:
    lines = []
    for im in ts.images:
        labelled = int((im.labels != IGNORE_INDEX).sum())
        val = int(((im.labels != IGNORE_INDEX) & im.validation).sum())
        lines.append(
            f"{Path(im.info.path).name}: {im.info.grid.width}×{im.info.grid.height} px, {labelled:,} labelled px "
            f"({val:,} in validation)"
        )
    return "\n".join(lines)
