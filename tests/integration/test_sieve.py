"""The sieve before polygonizing: speckles merge into their neighbours, nothing else changes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from rasterio.transform import from_origin

from geoseg import polygons
from geoseg.polygons import DEFAULT_SIEVE, class_map_polygons, vectorize_class_map
from tests.integration.test_vectorize import UTM16, canonical, read_polygons, spacenet_mask, write_map

PIXEL = 0.5  # m
TRANSFORM = from_origin(740_000, 3_737_000, PIXEL, PIXEL)


@pytest.fixture(scope="module")
def speckled() -> np.ndarray:
    """SpaceNet's building footprints as classes 0/1, a nodata block, and 1 in 100 pixels turned to class 2
    (each alone: no two speckles touch), as a noisy model's map looks."""
    classes = np.where(spacenet_mask() == 255, 1, 0).astype(np.uint8)
    rng = np.random.default_rng(0)
    speckle = np.zeros(classes.shape, dtype=bool)
    speckle[1::4, 1::4] = rng.random(speckle[1::4, 1::4].shape) < 0.16
    classes[speckle] = 2
    classes[600:700, 100:300] = 255
    return classes


def test_the_default_sieve_merges_speckles_and_keeps_the_class_map(speckled: np.ndarray, tmp_path: Path) -> None:
    path = write_map(tmp_path / "classes.tif", speckled, TRANSFORM)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    raw = vectorize_class_map(path, tmp_path / "raw.gpkg", sieve=0)
    sieved = vectorize_class_map(path, tmp_path / "sieved.gpkg")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the class map is the class map

    speckles = int(np.count_nonzero(speckled == 2))
    assert raw.counts[2] == speckles > 1000
    assert 2 not in sieved.counts and sieved.n_polygons < raw.n_polygons // 10
    assert sieved.merged_pixels >= speckles

    frame = read_polygons(tmp_path / "sieved.gpkg")
    assert frame.is_valid.all()
    small = frame[frame.area < DEFAULT_SIEVE * PIXEL**2]
    assert small.empty, small  # no region under 9 px is left as its own polygon
    cover = shapely.union_all(frame.geometry.values)
    valid_area = np.count_nonzero(speckled != 255) * PIXEL**2
    assert frame.area.sum() == pytest.approx(valid_area) and cover.area == pytest.approx(valid_area)  # no gap
    nodata = shapely.box(740_000 + 100 * PIXEL, 3_737_000 - 700 * PIXEL, 740_000 + 300 * PIXEL, 3_737_000 - 600 * PIXEL)
    assert cover.intersection(nodata).area == pytest.approx(0, abs=1e-6)  # nodata neither grows nor is absorbed


def test_strips_decide_small_regions_as_the_whole_map_does(speckled: np.ndarray, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    whole = rasterio.features.sieve(speckled, DEFAULT_SIEVE, connectivity=4, mask=speckled != 255)
    monkeypatch.setattr(polygons, "_STRIP_PIXELS", speckled.shape[1] * 7)  # strips of 7 rows, 9 rows of context
    read = lambda top, bottom: speckled[top:bottom]  # noqa: E731
    strips = np.concatenate([rows for _, rows in polygons._ClassStrips(read, *speckled.shape, 9, 4, {255})])
    assert np.array_equal(strips != speckled, whole != speckled)  # exactly the regions under 9 px change
    changed = np.argwhere(strips != speckled)
    padded = np.pad(speckled, 1, constant_values=255)
    for r, c in changed:  # each into a class it touches (the largest neighbour, counted within the strip)
        assert strips[r, c] in {padded[r, c + 1], padded[r + 2, c + 1], padded[r + 1, c], padded[r + 1, c + 2]}

    path = write_map(tmp_path / "classes.tif", speckled, TRANSFORM, block=64, by_blocks=True)
    from_file = read_polygons(vectorize_class_map(path, tmp_path / "p.gpkg").path)
    assert canonical(from_file) == canonical(class_map_polygons(speckled, TRANSFORM, UTM16))
    assert canonical(from_file) == canonical(class_map_polygons(strips, TRANSFORM, UTM16, sieve=0))


def test_vectorize_command_sieves_by_default_and_sieve_0_keeps_every_region(speckled: np.ndarray,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    path = write_map(tmp_path / "classes.tif", speckled, TRANSFORM)
    counts = {}
    for name, extra in (("default", []), ("raw", ["--sieve", "0"])):
        out = tmp_path / f"{name}.gpkg"
        done = subprocess.run([sys.executable, "-m", "geoseg", "vectorize", str(path), "--out", str(out),
                               "--progress", "none", *extra], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        counts[name] = len(read_polygons(out))
        assert ("merged into a neighbour" in done.stdout) == (name == "default"), done.stdout
    assert counts["raw"] > 10 * counts["default"]
    refused = subprocess.run([sys.executable, "-m", "geoseg", "vectorize", str(path), "--sieve", "-1"],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("connectivity", [4, 8])
def test_polygons_of_pinched_regions_are_valid_and_cover_the_map(connectivity: int, tmp_path: Path) -> None:
    """Regions that touch themselves at corners (random salt and a checkerboard patch): with 4-connectivity only
    polygons with a self-touching ring get the full validity check, so this checks that shortcut."""
    rng = np.random.default_rng(7)
    classes = (rng.random((96, 96)) < 0.35).astype(np.uint8)
    classes[20:40, 20:40] = np.indices((20, 20)).sum(axis=0) % 2  # pinches everywhere
    classes[60:64, 60:64] = 2
    classes[61, 61] = 1
    classes[62, 62] = 1  # a hole pair meeting at a corner
    path = write_map(tmp_path / "pinched.tif", classes, TRANSFORM)
    frame = read_polygons(vectorize_class_map(path, tmp_path / "p.gpkg", connectivity=connectivity, sieve=0).path)
    assert frame.is_valid.all() and len(frame) > 100
    assert frame.area.sum() == pytest.approx(classes.size * PIXEL**2)
    assert shapely.union_all(frame.geometry.values).area == pytest.approx(classes.size * PIXEL**2)


@pytest.mark.parametrize("sieve", [DEFAULT_SIEVE, 0])
def test_worker_processes_give_the_polygons_of_one_process(speckled: np.ndarray, tmp_path: Path, sieve: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Strips sieved and polygonized by two spawned workers, joined here: the serial result, polygon for polygon."""
    path = write_map(tmp_path / "classes.tif", speckled, TRANSFORM)
    monkeypatch.setattr(polygons, "_STRIP_PIXELS", speckled.shape[1] * 50)  # the parent cuts the strips
    serial = vectorize_class_map(path, tmp_path / "serial.gpkg", sieve=sieve)
    pooled = vectorize_class_map(path, tmp_path / "pooled.gpkg", sieve=sieve, workers=2)
    assert speckled.shape[0] // 50 > 2  # more than two strips, so the workers ran
    assert (pooled.n_polygons, pooled.counts, pooled.merged_pixels) == (serial.n_polygons, serial.counts,
                                                                          serial.merged_pixels)  # fmt: skip
    a, b = read_polygons(tmp_path / "serial.gpkg"), read_polygons(tmp_path / "pooled.gpkg")
    assert list(a.class_id) == list(b.class_id)
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all()
