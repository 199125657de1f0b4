"""Score a class map against reference labels: confusion matrix, per-class IoU/F1, mIoU.

Only pixels that are labelled and valid in both count (docs/formats.md, "Evaluation JSON"):

- the prediction is a geoseg class map (one band of class ids, nodata 255); 255 and any value that
  cannot be a class id (outside 0-254) are not valid;
- a label raster holds class values; a pixel counts when its value is one of the classes' values.
  Its declared nodata is excluded only when that value is not a class value: real label files often
  tag nodata=0 although 0 means background, and then 0 stays background;
- vector labels are burnt onto the prediction grid (pixel-centre rule); pixels no polygon covers
  and attribute values that are not classes are excluded.

A labelled pixel whose prediction is a valid id outside the evaluated classes (possible only when
``classes`` is given explicitly) still counts, as a miss of its true class: it adds to that class's
support and lowers its recall and IoU, but has no column in the confusion matrix.

The work streams over 1024-pixel blocks of the prediction, so memory stays bounded by a block
(except for vector labels, which are burnt once onto the whole grid at one byte per pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.config import DEFAULT_COLORS, IGNORE_INDEX, ClassSpec, normalize_label_value
from geoseg.errors import InputError
from geoseg.io.classmap import MAX_CLASS_ID, read_class_table, valid_class_ids
from geoseg.io.raster import GridSpec, RasterInfo, block_windows, open_raster, read_info, verify_readable
from geoseg.io.vector import is_vector, rasterize_labels, read_vector
from geoseg.metrics import SegmentationScores, confusion_from_arrays, scores_from_confusion

BLOCK_SIZE = 1024
# Per-pixel codes while counting: 0-254 a possible class value, then two sentinels.
NOT_A_CLASS = IGNORE_INDEX  # 255: prediction nodata, unlabelled, or a value no class can have
LABEL_NODATA = 256  # the label raster's declared nodata; whether it counts is decided at the end
CODES = 257
_WARP_SOURCE_NODATA = 65535  # a uint16 code that never occurs, so GDAL warps every source pixel


@dataclass
class EvaluationResult:
    """Scores of one prediction against its labels: the classes and their :class:`SegmentationScores`.

    ``confusion[i, j]`` counts pixels of true class ``classes[i]`` predicted as ``classes[j]``.
    Ratios that are 0/0 (e.g. the precision of a class never predicted) are NaN.
    ``miou`` averages IoU over the classes present in the labels or in the prediction (support > 0
    or predicted > 0, among counted pixels); a class absent from both has an undefined IoU and is
    left out rather than counted as 0 or 1.
    """

    classes: list[ClassSpec]
    scores: SegmentationScores

    @property
    def confusion(self) -> np.ndarray:
        return self.scores.confusion

    @property
    def support(self) -> np.ndarray:
        """True pixels per class (row sums plus misses to unlisted predictions)."""
        return self.scores.support

    @property
    def predicted(self) -> np.ndarray:
        """Counted pixels predicted as each class (column sums)."""
        return self.scores.predicted

    @property
    def iou(self) -> np.ndarray:
        return self.scores.iou

    @property
    def f1(self) -> np.ndarray:
        return self.scores.f1

    @property
    def precision(self) -> np.ndarray:
        return self.scores.precision

    @property
    def recall(self) -> np.ndarray:
        return self.scores.recall

    @property
    def miou(self) -> float:
        return self.scores.miou

    @property
    def overall_accuracy(self) -> float:
        return self.scores.overall_accuracy

    @property
    def pixels(self) -> int:
        return self.scores.pixels

    def to_json(self) -> dict[str, Any]:
        """The ``geoseg evaluate --json`` document (NaN becomes null)."""
        return self.scores.to_json([spec.name for spec in self.classes], [spec.id for spec in self.classes])

    def table(self) -> str:
        """An aligned text table, one row per class and a closing mIoU / accuracy / pixels line."""
        labels = [f"{spec.id} {spec.name}" if spec.name != str(spec.id) else spec.name for spec in self.classes]
        return self.scores.table(labels, style="report")


def evaluate(
    prediction: Path,
    labels: Path,
    classes: list[ClassSpec] | None = None,
    label_field: str | None = None,
) -> EvaluationResult:
    """Compare a class map with label raster or polygons on the prediction's grid.

    Classes are ``classes`` when given, else the prediction's class table, else the union of the
    class ids found in the prediction and in the labels (named by their id).
    """
    prediction, labels = Path(prediction), Path(labels)
    if classes is not None and not valid_class_ids([c.id for c in classes]):
        raise ValueError(f"class ids must be unique and within 0-{MAX_CLASS_ID}: {[c.id for c in classes]}")
    pred_info = _read_prediction_info(prediction)
    verify_readable(prediction)  # a damaged tile would otherwise stop the count half-way, in a traceback
    classes = classes or read_class_table(prediction)
    if is_vector(labels):
        source: _LabelSource = _VectorLabels(labels, label_field, classes, pred_info.grid)
    else:
        verify_readable(labels)
        source = _RasterLabels(labels, pred_info.grid, prediction)
    joint = _count_joint(pred_info, source)
    if classes is None:
        classes = _classes_found(joint, source)
    return _score(_fold_label_nodata(joint, source, classes), source, classes, labels)


def _read_prediction_info(path: Path) -> RasterInfo:
    info = read_info(path)
    if info.count != 1:
        raise InputError(
            f"has {info.count} bands; a prediction is a single-band class map (geoseg infer's *_classes.tif)",
            path,
        )
    return info


class _LabelSource:
    """Label codes for any window of the prediction grid, and what each code means."""

    nodata: int | None = None  # the label raster's nodata, when it is a possible class value

    def codes(self, window: Window) -> np.ndarray:
        raise NotImplementedError

    def class_id_of_code(self, classes: list[ClassSpec]) -> dict[int, int]:
        """Label code → class id, for the classes being evaluated."""
        raise NotImplementedError

    def found_ids(self, found_codes: list[int]) -> set[int]:
        """The class ids that label codes present in the data stand for (no classes given)."""
        raise NotImplementedError


class _VectorLabels(_LabelSource):
    """Polygons burnt once onto the prediction grid; code = index into the candidate classes."""

    def __init__(self, path: Path, field: str | None, classes: list[ClassSpec] | None, grid: GridSpec):
        self.candidates = classes if classes is not None else _integer_classes_in_field(path, field)
        self.burnt = rasterize_labels(path, field, self.candidates, grid, field_setting="--label-field")

    def codes(self, window: Window) -> np.ndarray:
        rows, cols = window.toslices()
        return self.burnt[rows, cols].astype(np.uint16)

    def class_id_of_code(self, classes: list[ClassSpec]) -> dict[int, int]:
        wanted = {c.id for c in classes}
        return {i: c.id for i, c in enumerate(self.candidates) if c.id in wanted}

    def found_ids(self, found_codes: list[int]) -> set[int]:
        return {self.candidates[code].id for code in found_codes if code < len(self.candidates)}


def _integer_classes_in_field(path: Path, field: str | None) -> list[ClassSpec]:
    """Without a class list, every attribute value that can be a class id (0-254) is a candidate."""
    frame = read_vector(path)
    if field is None or field not in frame.columns:
        return []  # rasterize_labels reports the missing field with the file's attributes
    ids = sorted({v for v in map(_as_class_id, frame[field].dropna().unique()) if v is not None})
    return [ClassSpec(value=str(i), id=i, name=str(i), color=DEFAULT_COLORS[0]) for i in ids]


class _RasterLabels(_LabelSource):
    """A label raster, read block by block; code = the pixel's class value (0-254) or a sentinel."""

    def __init__(self, path: Path, grid: GridSpec, prediction: Path):
        self.path = path
        self.grid = grid
        self.info = read_info(path)
        if self.info.count != 1:
            raise InputError(f"has {self.info.count} bands; a label raster has one band of class values", path)
        _check_overlap(self.info.grid, path, grid, prediction)
        self.same_grid = self.info.grid.same_grid(grid)
        self.declared_nodata = self.info.nodata
        self.nodata = _as_class_id(self.declared_nodata) if self.declared_nodata is not None else None

    def codes(self, window: Window) -> np.ndarray:
        with rasterio.open(self.path) as ds:
            if self.same_grid:
                return _value_codes(ds.read(1, window=window), self.declared_nodata)
            return self._resampled_codes(ds, window)

    def _resampled_codes(self, ds: rasterio.DatasetReader, window: Window) -> np.ndarray:
        """Nearest-neighbour codes of the labels on one block of the prediction grid."""
        block = GridSpec(self.grid.crs, window_transform(window, self.grid.transform), window.width, window.height)
        out = np.full((block.height, block.width), NOT_A_CLASS, dtype=np.uint16)
        source_window = _source_window(block, self.info.grid)
        if source_window is None:
            return out
        source = _value_codes(ds.read(1, window=source_window), self.declared_nodata)
        reproject(
            source,
            out,
            src_transform=window_transform(source_window, self.info.grid.transform),
            src_crs=self.info.grid.crs,
            src_nodata=_WARP_SOURCE_NODATA,
            dst_transform=block.transform,
            dst_crs=block.crs,
            dst_nodata=NOT_A_CLASS,
            resampling=Resampling.nearest,
        )
        return out

    def class_id_of_code(self, classes: list[ClassSpec]) -> dict[int, int]:
        mapping: dict[int, int] = {}
        for spec in classes:
            value = _as_class_id(spec.value)
            if value is not None:
                mapping[value] = spec.id
        return mapping

    def found_ids(self, found_codes: list[int]) -> set[int]:
        return set(found_codes)


def _as_class_id(value: Any) -> int | None:
    """The integer 0-254 a label value stands for, or None when it cannot be a class value."""
    try:
        number = float(normalize_label_value(value))
    except ValueError:
        return None
    if not number.is_integer() or not 0 <= number <= MAX_CLASS_ID:
        return None
    return int(number)


def _value_codes(values: np.ndarray, nodata: float | None, nodata_code: int = LABEL_NODATA) -> np.ndarray:
    """Pixel values as codes: the value where it can be a class id, else NOT_A_CLASS / nodata_code."""
    if np.issubdtype(values.dtype, np.integer):
        possible = (values >= 0) & (values <= MAX_CLASS_ID)
    else:
        possible = (values >= 0) & (values <= MAX_CLASS_ID) & (np.floor(values) == values)
    codes = np.full(values.shape, NOT_A_CLASS, dtype=np.uint16)
    codes[possible] = values[possible]
    if nodata is not None:
        codes[np.isnan(values) if math.isnan(nodata) else values == nodata] = nodata_code
    return codes


def _check_overlap(label_grid: GridSpec, labels: Path, grid: GridSpec, prediction: Path) -> None:
    left, bottom, right, top = transform_bounds(grid.crs, label_grid.crs, *grid.bounds, densify_pts=21)
    l_left, l_bottom, l_right, l_top = label_grid.bounds
    if left >= l_right or right <= l_left or bottom >= l_top or top <= l_bottom:
        raise InputError(f"does not overlap the prediction {prediction}; do both files cover the same area?", labels)


def _source_window(block: GridSpec, source: GridSpec) -> Window | None:
    """The window of ``source`` that covers ``block`` (plus a pixel of margin), None if outside."""
    left, bottom, right, top = transform_bounds(block.crs, source.crs, *block.bounds, densify_pts=21)
    inverse = ~source.transform
    corners = [inverse @ (x, y) for x in (left, right) for y in (bottom, top)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    col0 = max(math.floor(min(cols)) - 1, 0)
    row0 = max(math.floor(min(rows)) - 1, 0)
    col1 = min(math.ceil(max(cols)) + 1, source.width)
    row1 = min(math.ceil(max(rows)) + 1, source.height)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _count_joint(pred_info: RasterInfo, labels: _LabelSource) -> np.ndarray:
    """CODES x CODES counts of (label code, prediction code) over the whole prediction grid."""
    grid = pred_info.grid
    joint = np.zeros((CODES, CODES), dtype=np.int64)
    with open_raster(pred_info.path) as ds:
        for window in block_windows(grid.width, grid.height, BLOCK_SIZE):
            pred = _value_codes(ds.read(1, window=window), pred_info.nodata, nodata_code=NOT_A_CLASS)
            joint += confusion_from_arrays(labels.codes(window), pred, CODES)
    return joint


def _classes_found(joint: np.ndarray, labels: _LabelSource) -> list[ClassSpec]:
    """Union of the ids in the prediction and in the labels, each named by its id."""
    in_prediction = {int(i) for i in np.flatnonzero(joint[:, : MAX_CLASS_ID + 1].sum(axis=0))}
    in_labels = labels.found_ids([int(c) for c in np.flatnonzero(joint[: MAX_CLASS_ID + 1].sum(axis=1))])
    ids = sorted(in_prediction | in_labels)
    return [
        ClassSpec(value=str(i), id=i, name=str(i), color=DEFAULT_COLORS[n % len(DEFAULT_COLORS)])
        for n, i in enumerate(ids)
    ]


def _fold_label_nodata(joint: np.ndarray, labels: _LabelSource, classes: list[ClassSpec]) -> np.ndarray:
    """Count nodata label pixels as their value's class when that value is a class value."""
    joint = joint.copy()
    if labels.nodata is not None and labels.nodata in labels.class_id_of_code(classes):
        joint[labels.nodata] += joint[LABEL_NODATA]
    joint[LABEL_NODATA] = 0
    return joint


def _score(joint: np.ndarray, labels: _LabelSource, classes: list[ClassSpec], path: Path) -> EvaluationResult:
    ids = [spec.id for spec in classes]
    row_of_id = {class_id: code for code, class_id in labels.class_id_of_code(classes).items()}
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    support = np.zeros(k, dtype=np.int64)
    for i, class_id in enumerate(ids):
        row = row_of_id.get(class_id)
        if row is not None:
            confusion[i] = joint[row, ids]
            support[i] = joint[row, : MAX_CLASS_ID + 1].sum()  # every valid prediction, listed or not
    pixels = int(support.sum())
    if pixels == 0:
        raise InputError(
            "no pixel is labeled and valid in both; check that LABELS covers PREDICTION and uses the same class values",
            path,
        )
    return _result_from_counts(classes, confusion, support)


def _result_from_counts(classes: list[ClassSpec], confusion: np.ndarray, support: np.ndarray) -> EvaluationResult:
    return EvaluationResult(classes=list(classes), scores=scores_from_confusion(confusion, support))
