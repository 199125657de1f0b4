"""`geoseg.evaluate` against real label files, checked by independent whole-array counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.config import ClassSpec
from geoseg.errors import InputError
from geoseg.evaluate import confusion_from_arrays, evaluate
from geoseg.io.classmap import CLASSES_TAG, read_class_table
from geoseg.io.raster import read_info
from geoseg.io.vector import rasterize_labels

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BUILDING_LABEL = DATA / "building_tiles" / "tiled_label_1.tif"
BUILDING_IMAGE = DATA / "building_tiles" / "tiled_image_1.tif"
NB_TILE_1 = DATA / "new_brunswick" / "23322E759967N_clipped_1m_1of2.tif"
NB_LABELS = DATA / "new_brunswick" / "BakerLake_2017_clipped.gpkg"

needs_building = pytest.mark.skipif(
    not BUILDING_LABEL.exists(), reason=f"real test data not found at {DATA / 'building_tiles'}"
)
needs_new_brunswick = pytest.mark.skipif(
    not (NB_TILE_1.exists() and NB_LABELS.exists()),
    reason=f"real test data not found at {DATA / 'new_brunswick'}",
)

BUILDING_CLASSES = [
    ClassSpec(value="0", id=0, name="background", color="#000000"),
    ClassSpec(value="1", id=1, name="building", color="#ff0000"),
]
NB_CLASSES = [
    ClassSpec(value=str(i), id=i, name=name, color="#000000")
    for i, name in [(1, "forest"), (2, "water"), (3, "road"), (4, "building")]
]
DESIGN_KEYS = ("miou", "overall_accuracy", "per_class", "confusion_matrix", "class_ids", "pixels")
DESIGN_CLASS_KEYS = ("class_id", "name", "iou", "f1", "precision", "recall", "support")


def write_class_map(
    path: Path,
    values: np.ndarray,
    crs: CRS,
    transform: Affine,
    nodata: float | None = 255,
    tags: dict[str, str] | None = None,
) -> Path:
    profile = {
        "driver": "GTiff", "dtype": values.dtype.name, "count": 1, "width": values.shape[1],
        "height": values.shape[0], "crs": crs, "transform": transform, "nodata": nodata,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(values, 1)
        if tags:
            ds.update_tags(**tags)
    return path


def read_band(path: Path) -> tuple[np.ndarray, CRS, Affine]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.crs, ds.transform


def perturbed(truth: np.ndarray) -> np.ndarray:
    """A plausible imperfect prediction: shifted 2 px right, 1 px down, one block inverted."""
    pred = np.zeros_like(truth)
    pred[1:, 2:] = truth[:-1, :-2]
    pred[40:70, 60:100] = 1 - pred[40:70, 60:100]
    return pred


def numpy_scores(truth: np.ndarray, pred: np.ndarray, ids: list[int]) -> dict[int, dict[str, float]]:
    """Per-class TP/FP/FN, IoU and F1 counted directly, over pixels where both are a listed id."""
    counted = np.isin(truth, ids) & np.isin(pred, ids)
    scores = {}
    for c in ids:
        tp = int(np.sum(counted & (truth == c) & (pred == c)))
        fp = int(np.sum(counted & (truth != c) & (pred == c)))
        fn = int(np.sum(counted & (truth == c) & (pred != c)))
        scores[c] = {
            "tp": tp, "fp": fp, "fn": fn, "iou": tp / (tp + fp + fn), "f1": 2 * tp / (2 * tp + fp + fn),
        }  # fmt: skip
    return scores


@needs_building
def test_building_tiles_matches_independent_numpy_count(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    pred = perturbed(truth)
    prediction = write_class_map(tmp_path / "pred.tif", pred, crs, transform)

    result = evaluate(prediction, BUILDING_LABEL, BUILDING_CLASSES)

    expected = numpy_scores(truth, pred, [0, 1])
    assert result.pixels == truth.size  # label nodata=0 is background here: every pixel counts
    for k, class_id in enumerate([0, 1]):
        e = expected[class_id]
        assert result.confusion[k, k] == e["tp"]
        assert result.confusion[:, k].sum() - e["tp"] == e["fp"]
        assert result.support[k] - e["tp"] == e["fn"]
        assert result.iou[k] == pytest.approx(e["iou"])
        assert result.f1[k] == pytest.approx(e["f1"])
        assert result.precision[k] == pytest.approx(e["tp"] / (e["tp"] + e["fp"]))
        assert result.recall[k] == pytest.approx(e["tp"] / (e["tp"] + e["fn"]))
    assert result.miou == pytest.approx((expected[0]["iou"] + expected[1]["iou"]) / 2)
    assert result.overall_accuracy == pytest.approx(np.mean(truth == pred))
    assert 0.3 < result.iou[1] < 0.95  # the perturbation really costs something


@needs_building
def test_label_nodata_counts_as_class_only_when_it_is_a_class_value(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    assert read_info(BUILDING_LABEL).nodata == 0  # the real file tags background as nodata
    pred = perturbed(truth)
    prediction = write_class_map(tmp_path / "pred.tif", pred, crs, transform)

    found = evaluate(prediction, BUILDING_LABEL)  # classes = ids found; the prediction holds 0
    assert [c.id for c in found.classes] == [0, 1]
    assert found.pixels == truth.size

    buildings_only = evaluate(prediction, BUILDING_LABEL, [BUILDING_CLASSES[1]])
    # 0 is no class now, so label 0 is nodata; predicting 0 on a building is still a miss.
    assert buildings_only.pixels == int(np.sum(truth == 1))
    assert buildings_only.confusion.tolist() == [[int(np.sum((truth == 1) & (pred == 1)))]]
    assert buildings_only.recall[0] == pytest.approx(np.sum((truth == 1) & (pred == 1)) / np.sum(truth == 1))
    assert buildings_only.precision[0] == 1.0


@needs_building
def test_prediction_nodata_region_is_excluded(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    pred = perturbed(truth)
    pred[:200, 150:400] = 255
    prediction = write_class_map(tmp_path / "pred.tif", pred, crs, transform)

    result = evaluate(prediction, BUILDING_LABEL, BUILDING_CLASSES)

    assert result.pixels == truth.size - 200 * 250
    kept = pred != 255
    expected = numpy_scores(truth[kept], pred[kept], [0, 1])
    assert result.iou[1] == pytest.approx(expected[1]["iou"])
    assert result.support.tolist() == [int(np.sum(truth[kept] == 0)), int(np.sum(truth[kept] == 1))]


@needs_building
def test_class_table_names_the_classes_and_json_has_the_design_shape(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    table = [{"id": 0, "name": "background", "color": "#000000"}, {"id": 1, "name": "building"}]
    prediction = write_class_map(
        tmp_path / "pred.tif", perturbed(truth), crs, transform, tags={CLASSES_TAG: json.dumps(table)}
    )
    table_read = read_class_table(prediction) or []
    assert [(c.id, c.name) for c in table_read] == [(0, "background"), (1, "building")]

    result = evaluate(prediction, BUILDING_LABEL)
    document = result.to_json()

    assert set(document) == set(DESIGN_KEYS)
    assert [c["name"] for c in document["per_class"]] == ["background", "building"]
    assert set(document["per_class"][0]) == set(DESIGN_CLASS_KEYS)
    assert document["class_ids"] == [0, 1]
    assert document["pixels"] == truth.size
    assert np.array(document["confusion_matrix"]).sum() == truth.size
    json.dumps(document, allow_nan=False)
    text = result.table()
    assert "building" in text and "mIoU" in text


@needs_building
def test_undefined_ratios_are_nan_and_null(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    prediction = write_class_map(tmp_path / "pred.tif", np.zeros_like(truth), crs, transform)
    classes = [*BUILDING_CLASSES, ClassSpec(value="7", id=7, name="never seen", color="#ffffff")]

    result = evaluate(prediction, BUILDING_LABEL, classes)

    assert math.isnan(result.precision[1])  # building never predicted: 0/0
    assert math.isnan(result.iou[2])  # class 7 absent from both: left out of mIoU
    assert result.miou == pytest.approx((result.iou[0] + result.iou[1]) / 2)
    per_class = result.to_json()["per_class"]
    assert per_class[1]["precision"] is None and per_class[2]["iou"] is None
    assert per_class[1]["iou"] == 0.0


@needs_building
def test_label_raster_on_another_grid_is_resampled_with_nearest(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    pred = perturbed(truth)
    prediction = write_class_map(tmp_path / "pred.tif", pred, crs, transform)
    # Labels at half the resolution: each coarse pixel holds exactly four prediction pixel centres.
    coarse = truth[::2, ::2]
    coarse_labels = write_class_map(tmp_path / "coarse.tif", coarse, crs, transform @ Affine.scale(2), nodata=0)
    # Labels covering only part of the prediction, on a grid offset by whole pixels.
    crop_labels = write_class_map(
        tmp_path / "crop.tif", truth[100:300, 50:400].copy(), crs, transform @ Affine.translation(50, 100)
    )

    coarse_result = evaluate(prediction, coarse_labels, BUILDING_CLASSES)
    crop_result = evaluate(prediction, crop_labels, BUILDING_CLASSES)

    upsampled = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)
    assert coarse_result.confusion.tolist() == confusion_by_loops(upsampled, pred, [0, 1])
    assert crop_result.pixels == 200 * 350
    inside = np.s_[100:300, 50:400]
    assert crop_result.confusion.tolist() == confusion_by_loops(truth[inside], pred[inside], [0, 1])


@needs_building
def test_labels_not_overlapping_the_prediction_are_refused(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    prediction = write_class_map(tmp_path / "pred.tif", perturbed(truth), crs, transform)
    far_away = write_class_map(tmp_path / "far.tif", truth, crs, Affine.translation(10_000, 0) @ transform)

    with pytest.raises(InputError, match="does not overlap") as caught:
        evaluate(prediction, far_away, BUILDING_CLASSES)
    assert str(caught.value).startswith(f"{far_away}: ")
    assert "\n" not in str(caught.value)


@needs_building
def test_multiband_prediction_is_refused() -> None:
    with pytest.raises(InputError, match="single-band") as caught:
        evaluate(BUILDING_IMAGE, BUILDING_LABEL, BUILDING_CLASSES)
    assert str(caught.value).startswith(f"{BUILDING_IMAGE}: ")


@needs_building
def test_no_counted_pixel_is_refused(tmp_path: Path) -> None:
    truth, crs, transform = read_band(BUILDING_LABEL)
    prediction = write_class_map(tmp_path / "pred.tif", np.full_like(truth, 255), crs, transform)

    with pytest.raises(InputError, match="no pixel is labeled and valid in both"):
        evaluate(prediction, BUILDING_LABEL, BUILDING_CLASSES)


def rasterized_prediction(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """New Brunswick tile 1's polygons burnt onto its grid, stored as class ids like a class map."""
    grid = read_info(NB_TILE_1).grid
    indices = rasterize_labels(NB_LABELS, "Quatreclasses", NB_CLASSES, grid)
    id_of_index = np.full(256, 255, dtype=np.uint8)
    id_of_index[: len(NB_CLASSES)] = [c.id for c in NB_CLASSES]
    ids = id_of_index[indices]
    return write_class_map(tmp_path / "nb_pred.tif", ids, grid.crs, grid.transform), ids


@needs_new_brunswick
def test_new_brunswick_polygons_against_themselves(tmp_path: Path) -> None:
    prediction, ids = rasterized_prediction(tmp_path)
    labelled = int(np.sum(ids != 255))

    result = evaluate(prediction, NB_LABELS, NB_CLASSES, label_field="Quatreclasses")

    assert result.miou == 1.0
    assert result.overall_accuracy == 1.0
    assert result.pixels == int(result.support.sum()) == labelled
    assert 0.30 < labelled / ids.size < 0.38  # polygons cover ~34% of the tile; the rest is ignored
    assert result.support.tolist() == [int(np.sum(ids == c.id)) for c in NB_CLASSES]

    found = evaluate(prediction, NB_LABELS, label_field="Quatreclasses")  # value 255 cannot be a class id
    assert [c.id for c in found.classes] == [1, 2, 3, 4]
    assert found.confusion.tolist() == result.confusion.tolist()


@needs_new_brunswick
def test_missing_label_field_is_refused(tmp_path: Path) -> None:
    prediction, _ = rasterized_prediction(tmp_path)

    with pytest.raises(InputError, match="no attribute 'classe'") as caught:
        evaluate(prediction, NB_LABELS, NB_CLASSES, label_field="classe")
    assert str(caught.value).startswith(f"{NB_LABELS}: ")


def confusion_by_loops(truth: np.ndarray, pred: np.ndarray, ids: list[int]) -> list[list[int]]:
    return [[int(np.sum((truth == t) & (pred == p))) for p in ids] for t in ids]


def test_streaming_over_blocks_equals_whole_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    height, width = 1300, 2500  # several 1024-pixel blocks, ragged at the edges
    truth = rng.integers(0, 5, size=(height, width), dtype=np.uint8)
    noise = rng.integers(0, 5, size=(height, width), dtype=np.uint8)
    pred = np.where(rng.random((height, width)) < 0.7, truth, noise)
    pred[rng.random((height, width)) < 0.05] = 255
    truth[1000:1100, 900:1200] = 9  # a label value outside the classes: ignored
    crs, transform = CRS.from_epsg(32633), Affine(0.05, 0, 500_000, 0, -0.05, 5_800_000)
    prediction = write_class_map(tmp_path / "pred.tif", pred, crs, transform)
    labels = write_class_map(tmp_path / "labels.tif", truth, crs, transform, nodata=None)
    classes = [ClassSpec(value=str(i), id=i, name=f"c{i}", color="#000000") for i in range(5)]

    result = evaluate(prediction, labels, classes)

    assert result.confusion.tolist() == confusion_by_loops(truth, pred, list(range(5)))
    assert result.pixels == int(np.sum((truth < 5) & (pred != 255)))


def test_confusion_from_arrays_ignores_out_of_range_indices() -> None:
    truth = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    pred = np.array([[0, 2, 2], [1, 255, 1]], dtype=np.uint8)

    assert confusion_from_arrays(truth, pred, 3).tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 1]]
