"""Segmentation scores from a confusion matrix (rows: truth, columns: prediction), and their reports.

The one place geoseg turns pixel counts into per-class IoU, F1, precision, recall and mIoU: training's
validation and ``geoseg evaluate`` both count with :func:`confusion_from_arrays`, score with
:func:`scores_from_confusion` and render with :meth:`SegmentationScores.to_json` and
:meth:`SegmentationScores.table`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

TableStyle = Literal["compact", "report"]


@dataclass(frozen=True)
class SegmentationScores:
    """Per-class scores; ratios that are 0/0 (e.g. the precision of a class never predicted) are NaN.

    ``support`` is the number of true pixels of each class: the row sums of ``confusion``, or more
    when the caller counted misses that have no column (see :func:`scores_from_confusion`).
    """

    confusion: np.ndarray
    iou: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    miou: float
    overall_accuracy: float

    @property
    def predicted(self) -> np.ndarray:
        """Pixels predicted as each class (column sums of ``confusion``)."""
        return self.confusion.sum(axis=0)

    @property
    def pixels(self) -> int:
        """Pixels scored: the sum of ``support``."""
        return int(self.support.sum())

    def to_json(self, names: Sequence[str], ids: Sequence[int]) -> dict:
        """The scores as a JSON-ready document (NaN becomes null), classes named by ``names``/``ids``."""
        return {
            "miou": _num(self.miou),
            "overall_accuracy": _num(self.overall_accuracy),
            "per_class": [
                {
                    "class_id": int(ids[k]),
                    "name": names[k],
                    "iou": _num(self.iou[k]),
                    "f1": _num(self.f1[k]),
                    "precision": _num(self.precision[k]),
                    "recall": _num(self.recall[k]),
                    "support": int(self.support[k]),
                }
                for k in range(len(names))
            ],
            "confusion_matrix": self.confusion.astype(int).tolist(),
            "class_ids": [int(i) for i in ids],
            "pixels": self.pixels,
        }

    def table(self, names: Sequence[str], style: TableStyle = "compact") -> str:
        """An aligned text table, one row per class (labelled by ``names``) and a closing mIoU line.

        ``"compact"`` (training's per-validation log): 3 decimals, NaN as ``n/a``, no rules.
        ``"report"`` (``geoseg evaluate``): 4 decimals, NaN as ``-``, ruled, with the pixel count.
        """
        report = style == "report"

        def fmt(value: float) -> str:
            if math.isnan(value):
                return "-" if report else "n/a"
            return f"{value:.4f}" if report else f"{value:.3f}"

        width = max([len("class"), *map(len, names)])
        precision_header, support_width = ("precision", 12) if report else ("prec.", 10)
        precision_width = max(6, len(precision_header))
        header = (
            f"{'class':<{width}}  {'IoU':>6}  {'F1':>6}  {precision_header:>{precision_width}}  {'recall':>6}  "
            f"{'support':>{support_width}}"
        )
        rule = ["-" * len(header)] if report else []
        lines = [header, *rule]
        for k, name in enumerate(names):
            lines.append(
                f"{name:<{width}}  {fmt(self.iou[k]):>6}  {fmt(self.f1[k]):>6}  "
                f"{fmt(self.precision[k]):>{precision_width}}  {fmt(self.recall[k]):>6}  "
                f"{int(self.support[k]):>{support_width},}"
            )
        lines += rule
        if report:
            lines.append(
                f"mIoU {fmt(self.miou)}   overall accuracy {fmt(self.overall_accuracy)}   pixels {self.pixels:,}"
            )
        else:
            lines.append(f"{'mIoU':<{width}}  {fmt(self.miou):>6}   overall accuracy {fmt(self.overall_accuracy)}")
        return "\n".join(lines)


def confusion_from_arrays(truth_idx: np.ndarray, pred_idx: np.ndarray, k: int) -> np.ndarray:
    """KxK int64 counts (rows truth, columns prediction) of the pixels where both indices lie in 0..k-1.

    Anything else (the ignore index 255, negative values) is left out. Accepts any array-like of
    integers of the same size, CPU torch tensors included.
    """
    truth = np.asarray(truth_idx).ravel().astype(np.int64)
    pred = np.asarray(pred_idx).ravel().astype(np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {pred.size}")
    keep = (truth >= 0) & (truth < k) & (pred >= 0) & (pred < k)
    return np.bincount(truth[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def scores_from_confusion(confusion: np.ndarray, support: np.ndarray | None = None) -> SegmentationScores:
    """IoU, F1, precision and recall per class; 0/0 gives NaN.

    ``support`` (true pixels per class) defaults to the row sums. Give it when some true pixels were
    predicted as a class outside the matrix: they count as misses of their true class (lowering its
    recall and IoU, and overall accuracy) without a column of their own. It may not be below a row sum.

    mIoU averages the classes that occur in the truth or the prediction; a class absent from both
    says nothing about the model and is left out.
    """
    cm = confusion.astype(np.float64)
    tp = np.diag(cm)
    truth = cm.sum(axis=1)
    if support is not None:
        support = np.asarray(support)
        if support.shape != truth.shape or (support < truth).any():
            raise ValueError(
                f"support must give one count per class, each at least its row sum {truth.astype(np.int64).tolist()}:"
                f" got {support.tolist()}"
            )
        truth = support.astype(np.float64)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (truth + predicted - tp)
        precision = tp / predicted
        recall = tp / truth
        f1 = 2 * tp / (truth + predicted)
    present = (truth + predicted) > 0
    miou = float(iou[present].mean()) if present.any() else math.nan
    total = truth.sum()
    accuracy = float(tp.sum() / total) if total else math.nan
    return SegmentationScores(
        confusion.astype(np.int64), iou, f1, precision, recall, truth.astype(np.int64), miou, accuracy
    )


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
