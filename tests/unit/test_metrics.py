"""Per-class scores from a confusion matrix (rows: truth, columns: prediction)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from geoseg.metrics import confusion_from_arrays, scores_from_confusion

# truth 0: 50 px, 40 right; truth 1: 30 px, 20 right; truth 2: 20 px, 20 right; class 3 absent everywhere
CONFUSION = np.array(
    [
        [40, 5, 5, 0],
        [10, 20, 0, 0],
        [0, 0, 20, 0],
        [0, 0, 0, 0],
    ]
)


def test_textbook_scores() -> None:
    s = scores_from_confusion(CONFUSION)
    # class 0: tp 40, fp 10, fn 10; class 1: tp 20, fp 5, fn 10; class 2: tp 20, fp 5, fn 0
    np.testing.assert_allclose(s.iou[:3], [40 / 60, 20 / 35, 20 / 25])
    np.testing.assert_allclose(s.precision[:3], [40 / 50, 20 / 25, 20 / 25])
    np.testing.assert_allclose(s.recall[:3], [40 / 50, 20 / 30, 20 / 20])
    np.testing.assert_allclose(s.f1[:3], [2 * 40 / 100, 2 * 20 / 55, 2 * 20 / 45])
    for k in range(3):  # F1 is the harmonic mean of precision and recall
        p, r = s.precision[k], s.recall[k]
        assert s.f1[k] == pytest.approx(2 * p * r / (p + r))
    np.testing.assert_array_equal(s.support, [50, 30, 20, 0])
    assert s.overall_accuracy == pytest.approx(80 / 100)


def test_zero_over_zero_is_nan_and_miou_skips_absent_classes() -> None:
    s = scores_from_confusion(CONFUSION)
    assert math.isnan(s.iou[3]) and math.isnan(s.f1[3])
    assert math.isnan(s.precision[3]) and math.isnan(s.recall[3])
    assert s.miou == pytest.approx(np.mean([40 / 60, 20 / 35, 20 / 25]))


def test_class_only_predicted_counts_in_miou_with_iou_zero() -> None:
    cm = np.array([[10, 5], [0, 0]])  # class 1 never in the truth, but predicted 5 times
    s = scores_from_confusion(cm)
    assert s.iou[1] == 0.0 and s.precision[1] == 0.0 and math.isnan(s.recall[1])
    assert s.miou == pytest.approx((10 / 15 + 0.0) / 2)


def test_empty_matrix() -> None:
    s = scores_from_confusion(np.zeros((2, 2), dtype=np.int64))
    assert math.isnan(s.miou) and math.isnan(s.overall_accuracy)


def test_json_report_matches_the_cli_contract() -> None:
    s = scores_from_confusion(CONFUSION)
    report = s.to_json(["soil", "crust", "moss", "lichen"], [1, 2, 3, 4])
    report = json.loads(json.dumps(report, allow_nan=False))  # NaN must not leak into JSON
    assert report["miou"] == pytest.approx(s.miou)
    first = report["per_class"][0]
    assert set(first) >= {"class_id", "name", "iou", "f1", "precision", "recall", "support"}
    assert (first["class_id"], first["name"], first["support"]) == (1, "soil", 50)
    assert report["per_class"][3]["iou"] is None
    assert report["pixels"] == 100
    assert "n/a" in s.table(["soil", "crust", "moss", "lichen"])


def test_support_beyond_the_row_sums_counts_as_misses() -> None:
    # class 0 also had 10 true pixels predicted as a class outside the matrix
    s = scores_from_confusion(np.array([[40, 10], [0, 50]]), support=np.array([60, 50]))
    np.testing.assert_array_equal(s.support, [60, 50])
    assert s.recall[0] == pytest.approx(40 / 60)
    assert s.iou[0] == pytest.approx(40 / 60)  # tp 40, fp 0, fn 20
    assert s.f1[0] == pytest.approx(2 * 40 / (60 + 40))
    assert s.precision[0] == 1.0 and s.recall[1] == pytest.approx(50 / 50)
    assert s.overall_accuracy == pytest.approx(90 / 110)
    assert s.pixels == 110 and s.to_json(["a", "b"], [0, 1])["pixels"] == 110
    np.testing.assert_array_equal(s.predicted, [40, 60])


def test_support_below_a_row_sum_is_refused() -> None:
    with pytest.raises(ValueError, match="support"):
        scores_from_confusion(np.array([[40, 10], [0, 50]]), support=np.array([49, 50]))
    with pytest.raises(ValueError, match="support"):
        scores_from_confusion(np.array([[40, 10], [0, 50]]), support=np.array([50, 50, 0]))


def test_confusion_from_arrays_counts_only_indices_in_range() -> None:
    truth = np.array([0, 1, 2, 255, 1, -1, 3])
    pred = np.array([0, 2, 2, 1, 255, 0, 0])
    assert confusion_from_arrays(truth, pred, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert confusion_from_arrays(truth, pred, 3).dtype == np.int64
    with pytest.raises(ValueError, match="differ in size"):
        confusion_from_arrays(truth, pred[:-1], 3)


def test_table_layouts() -> None:
    """Compact for the training log, ruled with the pixel count for `geoseg evaluate`."""
    s = scores_from_confusion(np.array([[10, 5], [0, 0]]))
    assert s.table(["soil", "crust"]) == "\n".join(
        [
            "class     IoU      F1   prec.  recall     support",
            "soil    0.667   0.800   1.000   0.667          15",
            "crust   0.000   0.000   0.000     n/a           0",
            "mIoU    0.333   overall accuracy 0.667",
        ]
    )
    assert s.table(["1 soil", "2 crust"], style="report") == "\n".join(
        [
            "class       IoU      F1  precision  recall       support",
            "--------------------------------------------------------",
            "1 soil   0.6667  0.8000     1.0000  0.6667            15",
            "2 crust  0.0000  0.0000     0.0000       -             0",
            "--------------------------------------------------------",
            "mIoU 0.3333   overall accuracy 0.6667   pixels 15",
        ]
    )
