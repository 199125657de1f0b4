"""The synthetic biocrust survey: grids, classes, defects, determinism, vector/raster agreement."""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from rasterio.transform import from_origin
from scipy import ndimage

from geoseg.demo_data import CLASSES, SurveyFiles, make_survey

SIZE = 1024
EXPECTED_TRANSFORM = from_origin(600_000.0, 4_250_000.0, 0.01, 0.01)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> SurveyFiles:
    return make_survey(tmp_path_factory.mktemp("survey"), size=SIZE, seed=0)


@pytest.fixture(scope="module")
def image(survey: SurveyFiles) -> np.ndarray:
    with rasterio.open(survey.image) as src:
        return src.read()


@pytest.fixture(scope="module")
def labels(survey: SurveyFiles) -> np.ndarray:
    with rasterio.open(survey.labels) as src:
        return src.read(1)


def _box_slice(box: tuple[int, int, int, int], shrink: int = 0) -> tuple[slice, slice]:
    row0, row1, col0, col1 = box
    return slice(row0 + shrink, row1 - shrink), slice(col0 + shrink, col1 - shrink)


def _gray_laplacian(image: np.ndarray) -> np.ndarray:
    return ndimage.laplace(image.astype(np.float64).mean(axis=0))


def test_classes_table() -> None:
    assert sorted(CLASSES) == [1, 2, 3, 4]
    assert [name for name, _ in CLASSES.values()] == ["bare soil", "cyanobacterial crust", "lichen", "moss"]
    for _, colour in CLASSES.values():
        assert re.fullmatch(r"#[0-9a-fA-F]{6}", colour)


def test_files_are_written(survey: SurveyFiles) -> None:
    assert survey.image.name == "survey_ortho.tif"
    assert survey.labels.name == "survey_labels.tif"
    assert survey.labels_vector.name == "survey_labels.gpkg"
    for path in (survey.image, survey.labels, survey.labels_vector):
        assert path.is_file() and path.stat().st_size > 0


def test_image_profile(survey: SurveyFiles) -> None:
    with rasterio.open(survey.image) as src:
        assert src.crs.to_epsg() == 32612
        assert src.transform == EXPECTED_TRANSFORM
        assert (src.width, src.height, src.count) == (SIZE, SIZE, 3)
        assert src.dtypes == ("uint8", "uint8", "uint8")
        assert src.nodata == 0
        assert src.block_shapes == [(256, 256)] * 3
        assert src.compression is not None and src.compression.value.lower() == "deflate"


def test_label_raster_profile(survey: SurveyFiles) -> None:
    with rasterio.open(survey.labels) as src:
        assert src.crs.to_epsg() == 32612
        assert src.transform == EXPECTED_TRANSFORM
        assert (src.width, src.height, src.count) == (SIZE, SIZE, 1)
        assert src.dtypes == ("uint8",)
        assert src.nodata is None  # 0 means unlabeled, it is not declared nodata


def test_label_values(labels: np.ndarray) -> None:
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3, 4}


def test_all_classes_present_in_fair_shares(labels: np.ndarray) -> None:
    labeled = labels[labels > 0]
    for value in CLASSES:
        share = np.count_nonzero(labeled == value) / labeled.size
        assert share >= 0.03, f"class {value} covers only {share:.1%} of labeled pixels"


def test_nodata_collar(image: np.ndarray, labels: np.ndarray) -> None:
    nodata = (image == 0).all(axis=0)
    # A pixel is nodata in all bands or in none: valid values are 1..255.
    assert np.array_equal((image == 0).any(axis=0), nodata)
    # The collar is exactly the unlabeled area.
    assert np.array_equal(nodata, labels == 0)
    share = nodata.mean()
    assert 0.02 < share < 0.15, f"collar covers {share:.1%} of the image"
    # It hugs the image edges: each connected piece of it touches the border ...
    pieces, count = ndimage.label(nodata)
    edge_pieces = set(np.unique(np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]])))
    assert set(range(1, count + 1)) <= edge_pieces
    # ... along at least one whole edge, and with a wavy (not straight) inner boundary.
    edges = {"top": nodata[0], "bottom": nodata[-1], "left": nodata[:, 0], "right": nodata[:, -1]}
    full = [name for name, line in edges.items() if line.all()]
    assert full
    depth = {"top": nodata.sum(axis=0), "bottom": nodata.sum(axis=0)}
    depth |= {"left": nodata.sum(axis=1), "right": nodata.sum(axis=1)}
    assert depth[full[0]].max() - depth[full[0]].min() >= 5


def test_patches_are_spatially_coherent(labels: np.ndarray) -> None:
    labeled = (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    same_right = (labels[:, 1:] == labels[:, :-1])[labeled].mean()
    labeled = (labels[1:] > 0) & (labels[:-1] > 0)
    same_below = (labels[1:] == labels[:-1])[labeled].mean()
    assert same_right > 0.9 and same_below > 0.9


def test_classes_differ_in_colour(image: np.ndarray, labels: np.ndarray) -> None:
    means = {}
    for value in CLASSES:
        mask = (labels == value) & (image < 255).all(axis=0)
        means[value] = image[:, mask].astype(np.float64).mean(axis=1)
    soil, cyano, lichen, moss = (means[v] for v in (1, 2, 3, 4))
    assert soil.sum() > cyano.sum() + 60  # bare soil is much lighter than dark crust
    assert moss[1] > moss[0] and moss[1] > moss[2]  # moss is green
    assert moss.sum() < cyano.sum()  # and the darkest
    assert lichen[1] >= lichen[0]  # pale greenish
    assert np.abs(lichen - soil).max() > 10


def test_overexposed_box_is_saturated_and_labeled(survey: SurveyFiles, image: np.ndarray, labels: np.ndarray) -> None:
    rows, cols = _box_slice(survey.overexposed_box)
    row0, row1, col0, col1 = survey.overexposed_box
    assert 0 <= row0 < row1 <= SIZE and 0 <= col0 < col1 <= SIZE
    assert (row1 - row0) * (col1 - col0) >= 0.002 * SIZE * SIZE
    assert (image[:, rows, cols] == 255).all()
    assert (labels[rows, cols] > 0).all()  # the quality mask, not the labels, ignores glare
    # Saturation is the exception outside the box.
    saturated = (image == 255).all(axis=0)
    saturated[rows, cols] = False
    assert saturated.mean() < 0.01


def test_blurred_box_has_low_sharpness(survey: SurveyFiles, image: np.ndarray, labels: np.ndarray) -> None:
    row0, row1, col0, col1 = survey.blurred_box
    assert 0 <= row0 < row1 <= SIZE and 0 <= col0 < col1 <= SIZE
    assert (labels[row0:row1, col0:col1] > 0).all()
    laplacian = _gray_laplacian(image)
    inside = laplacian[_box_slice(survey.blurred_box, shrink=2)].var()
    # Reference: every other valid, unsaturated pixel, away from the collar edge.
    reference_mask = ndimage.binary_erosion(labels > 0, iterations=3)
    for box in (survey.blurred_box, survey.overexposed_box):
        rows, cols = _box_slice(box, shrink=-3)
        reference_mask[max(rows.start, 0) : rows.stop, max(cols.start, 0) : cols.stop] = False
    reference = laplacian[reference_mask].var()
    assert inside < 0.05 * reference, (inside, reference)


def test_defect_boxes_do_not_overlap(survey: SurveyFiles) -> None:
    a, b = survey.overexposed_box, survey.blurred_box
    overlap_rows = min(a[1], b[1]) > max(a[0], b[0])
    overlap_cols = min(a[3], b[3]) > max(a[2], b[2])
    assert not (overlap_rows and overlap_cols)


def test_vector_labels_match_raster(survey: SurveyFiles, labels: np.ndarray) -> None:
    frame = gpd.read_file(survey.labels_vector)
    assert frame.crs.to_epsg() == 32612
    assert {"class", "name"} <= set(frame.columns)
    assert np.issubdtype(frame["class"].dtype, np.integer)
    assert set(frame["class"].unique().tolist()) == set(CLASSES)
    for value, name in zip(frame["class"], frame["name"], strict=True):
        assert CLASSES[int(value)][0] == name
    assert frame.geometry.is_valid.all()
    assert (frame.geometry.area >= 50 * 0.01 * 0.01 - 1e-12).all()
    burned = rasterio.features.rasterize(
        zip(frame.geometry, frame["class"].astype(int), strict=True),
        out_shape=labels.shape,
        transform=EXPECTED_TRANSFORM,
        fill=0,
        dtype="uint8",
    )
    labeled = labels > 0
    agreement = (burned[labeled] == labels[labeled]).mean()
    assert agreement > 0.95, agreement
    assert (burned[~labeled] == 0).all()


def _read_all(files: SurveyFiles) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(files.image) as src_image, rasterio.open(files.labels) as src_labels:
        return src_image.read(), src_labels.read()


def test_same_seed_same_survey(tmp_path: Path) -> None:
    first = make_survey(tmp_path / "a", size=320, seed=7)
    second = make_survey(tmp_path / "b", size=320, seed=7)
    other = make_survey(tmp_path / "c", size=320, seed=8)
    image_a, labels_a = _read_all(first)
    image_b, labels_b = _read_all(second)
    image_c, _ = _read_all(other)
    assert image_a.tobytes() == image_b.tobytes()
    assert labels_a.tobytes() == labels_b.tobytes()
    assert first.overexposed_box == second.overexposed_box
    assert first.blurred_box == second.blurred_box
    assert first.image.read_bytes() == second.image.read_bytes()
    assert first.labels.read_bytes() == second.labels.read_bytes()
    assert not np.array_equal(image_a, image_c)


def test_rerun_overwrites_in_place(tmp_path: Path) -> None:
    make_survey(tmp_path, size=256, seed=1)
    files = make_survey(tmp_path, size=256, seed=1)
    assert len(gpd.read_file(files.labels_vector)) > 0
    with rasterio.open(files.image) as src:
        assert src.width == 256


def test_too_small_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        make_survey(tmp_path, size=64)
