"""The classical yardstick every training is measured against: a pixel classifier on bands and local texture.

A GIS analyst's first model is a per-pixel classifier on the bands plus a little neighbourhood
texture. Each training fits one on the same training pixels as the U-Net (labelled, valid, outside the
validation region; quality-flagged pixels left out alike) and scores it on exactly the pixels the
U-Net's validation scores, so "did the deep model earn its keep" has a number. It is a yardstick, not
a product: the bundle keeps the U-Net.

- Features: each band as the network sees it (normalized), and its local mean and standard deviation
  over ``TEXTURE_WINDOWS`` px squares; windows are read with a halo, so a pixel's texture is the same
  wherever the window around it lies.
- Classifier: scikit-learn's histogram gradient boosting (``HistGradientBoostingClassifier``), fitted
  on at most ``MAX_TRAIN_PIXELS`` training pixels drawn uniformly at random (the summary says when
  it subsampled), so it takes seconds on any labelled area.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from geoseg.config import IGNORE_INDEX
from geoseg.data.datasets import LabeledOrtho
from geoseg.data.prepare import TrainingSet
from geoseg.data.sampling import owned_mask
from geoseg.metrics import SegmentationScores, confusion_from_arrays, scores_from_confusion

METHOD = "histogram gradient boosting on the bands and their 5 and 15 px local mean and sd (scikit-learn)"
TEXTURE_WINDOWS = (5, 15)
HALO = max(TEXTURE_WINDOWS) // 2
MAX_TRAIN_PIXELS = 200_000
BLOCK = 1024
BOOSTING_ROUNDS = 100


@dataclass(frozen=True)
class BaselineResult:
    scores: SegmentationScores
    train_pixels: int  # pixels the classifier was fitted on
    labelled_pixels: int  # training pixels available (more than train_pixels when subsampled)
    seconds: float

    @property
    def subsampled(self) -> bool:
        return self.train_pixels < self.labelled_pixels

    def to_json(self, names: list[str], ids: list[int]) -> dict:
        return {
            "method": METHOD,
            **self.scores.to_json(names, ids),
            "train_pixels": self.train_pixels,
            "labelled_pixels": self.labelled_pixels,
            "seconds": round(self.seconds, 2),
        }


def pixel_features(image: np.ndarray) -> np.ndarray:
    """(C, H, W) bands → (H, W, F) features: each band, then its local mean and sd at each texture window."""
    features = []
    for band in image.astype(np.float32, copy=False):
        features.append(band)
        for size in TEXTURE_WINDOWS:
            mean = ndimage.uniform_filter(band, size, mode="reflect")
            square = ndimage.uniform_filter(band * band, size, mode="reflect")
            features += [mean, np.sqrt(np.maximum(square - mean * mean, 0.0))]
    return np.stack(features, axis=-1)


def window_features(dataset: LabeledOrtho, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Features (H, W, F) and the dataset's mask (H, W) of ``window``, texture computed with a halo."""
    wide = Window(window.col_off - HALO, window.row_off - HALO, window.width + 2 * HALO, window.height + 2 * HALO)
    sample = dataset.read(wide)
    inner = (slice(HALO, HALO + int(window.height)), slice(HALO, HALO + int(window.width)))
    return pixel_features(sample["image"].numpy())[inner], sample["mask"].numpy()[inner]


def _plain(dataset: LabeledOrtho) -> LabeledOrtho:
    """The same image, labels and normalization, read as they are: no augmentation, no resizing."""
    return LabeledOrtho(dataset.path, dataset.grid, dataset.labels, dataset.bands, dataset.normalization,
                        quality=dataset.quality)  # fmt: skip


def _labelled_blocks(labels: np.ndarray) -> list[Window]:
    """BLOCK² windows over the bounding box of the labelled pixels that hold at least one."""
    rows = np.flatnonzero((labels != IGNORE_INDEX).any(axis=1))
    cols = np.flatnonzero((labels != IGNORE_INDEX).any(axis=0))
    if not len(rows):
        return []
    blocks = []
    for r in range(int(rows[0]), int(rows[-1]) + 1, BLOCK):
        for c in range(int(cols[0]), int(cols[-1]) + 1, BLOCK):
            h, w = min(BLOCK, int(rows[-1]) + 1 - r), min(BLOCK, int(cols[-1]) + 1 - c)
            if (labels[r : r + h, c : c + w] != IGNORE_INDEX).any():
                blocks.append(Window(c, r, w, h))
    return blocks


def training_pixels(ts: TrainingSet, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(features, classes) of at most MAX_TRAIN_PIXELS training pixels drawn uniformly, and how many there were."""
    rng = np.random.default_rng(seed)
    labelled = sum(int((d.labels != IGNORE_INDEX).sum()) for d in ts.train_images)
    keep_share = min(1.0, MAX_TRAIN_PIXELS / max(labelled, 1))
    features, classes, available = [], [], 0
    for dataset in ts.train_images:
        plain = _plain(dataset)
        for block in _labelled_blocks(dataset.labels):
            block_features, mask = window_features(plain, block)
            usable = mask != IGNORE_INDEX  # labelled, valid, outside validation, not quality-flagged
            available += int(usable.sum())
            picked = usable & (rng.random(usable.shape) < keep_share)
            features.append(block_features[picked])
            classes.append(mask[picked])
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.uint8), 0
    x, y = np.concatenate(features), np.concatenate(classes)
    if len(y) > MAX_TRAIN_PIXELS:  # the Bernoulli draw can overshoot by a little
        chosen = rng.choice(len(y), MAX_TRAIN_PIXELS, replace=False)
        x, y = x[chosen], y[chosen]
    return x, y, available


def validation_confusion(classifier: object, ts: TrainingSet, n_classes: int) -> np.ndarray:
    """The classifier's confusion matrix on the pixels the U-Net's validation scores (owned parts of the windows)."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    plain = [_plain(d) for d in ts.val_images]
    for image_index, window, owned in ts.val_windows:
        features, mask = window_features(plain[image_index], window)
        scored = owned_mask(window, owned) & (mask != IGNORE_INDEX)
        if scored.any():
            predicted = classifier.predict(features[scored]).astype(np.int64)  # type: ignore[attr-defined]
            confusion += confusion_from_arrays(mask[scored].astype(np.int64), predicted, n_classes)
    return confusion


def fit_baseline(ts: TrainingSet, n_classes: int, seed: int) -> BaselineResult | None:
    """Fit the pixel classifier and score it on the validation pixels; None when there is nothing to score."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if not ts.val_windows:
        return None
    start = time.perf_counter()
    x, y, available = training_pixels(ts, seed)
    if len(y) == 0:
        return None
    if len(np.unique(y)) == 1:  # one class to learn: the classifier's answer is that class everywhere
        classifier: object = _Constant(int(y[0]))
    else:
        classifier = HistGradientBoostingClassifier(max_iter=BOOSTING_ROUNDS, early_stopping=False,
                                                    random_state=seed).fit(x, y)  # fmt: skip
    confusion = validation_confusion(classifier, ts, n_classes)
    return BaselineResult(scores_from_confusion(confusion), len(y), available, time.perf_counter() - start)


class _Constant:
    def __init__(self, value: int) -> None:
        self.value = value

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.value)
