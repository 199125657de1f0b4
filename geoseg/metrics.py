"""Per-class segmentation scores from a confusion matrix (rows: truth, columns: prediction)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentationScores:
    confusion: np.ndarray
    iou: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    miou: float
    overall_accuracy: float

    def to_json(self, names: Sequence[str], ids: Sequence[int]) -> dict:
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
            "pixels": int(self.confusion.sum()),
        }

    def table(self, names: Sequence[str]) -> str:
        width = max([len(n) for n in names] + [5])
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'F1':>6}  {'prec.':>6}  {'recall':>6}  {'support':>10}"]
        for k, name in enumerate(names):
            lines.append(
                f"{name:<{width}}  {_fmt(self.iou[k])}  {_fmt(self.f1[k])}  {_fmt(self.precision[k])}  "
                f"{_fmt(self.recall[k])}  {int(self.support[k]):>10,}"
            )
        lines.append(f"{'mIoU':<{width}}  {_fmt(self.miou)}   overall accuracy {_fmt(self.overall_accuracy).strip()}")
        return "\n".join(lines)


def scores_from_confusion(confusion: np.ndarray) -> SegmentationScores:
    """IoU, F1, precision and recall per class; 0/0 gives NaN.

    mIoU averages the classes that occur in the truth or the prediction; a class absent from both
    says nothing about the model and is left out.
    """
    cm = confusion.astype(np.float64)
    tp = np.diag(cm)
    truth = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (truth + predicted - tp)
        precision = tp / predicted
        recall = tp / truth
        f1 = 2 * tp / (truth + predicted)
    present = (truth + predicted) > 0
    miou = float(iou[present].mean()) if present.any() else math.nan
    total = cm.sum()
    accuracy = float(tp.sum() / total) if total else math.nan
    return SegmentationScores(
        confusion.astype(np.int64), iou, f1, precision, recall, truth.astype(np.int64), miou, accuracy
    )


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _fmt(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{value:6.3f}"
