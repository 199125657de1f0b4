"""`geoseg change`: transitions between two class maps, on one grid or two, checked against counts by hand."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.config import ClassSpec
from geoseg.io.classmap import write_class_map
from geoseg.io.raster import read_info
from tests.conftest import shared_data

SPECS = [ClassSpec("1", 1, "bare soil", "#a0522d"), ClassSpec("2", 2, "crust", "#556b2f"),
         ClassSpec("3", 3, "lichen", "#daa520")]  # fmt: skip
CRS_UTM = "EPSG:32612"


def class_map(path: Path, ids: np.ndarray, pixel: float = 0.5, specs: list[ClassSpec] = SPECS) -> Path:
    profile = {"driver": "GTiff", "width": ids.shape[1], "height": ids.shape[0], "count": 1, "dtype": "uint8",
               "crs": CRS_UTM, "transform": from_origin(500_000, 4_000_000, pixel, pixel)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(ids.astype(np.uint8), 1)
    return write_class_map(path, ids.astype(np.uint8), read_info(path).grid, specs, overwrite=True)


def change_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", "change", *map(str, args)], capture_output=True,
                          text=True, check=False)  # fmt: skip


def test_transitions_match_a_count_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    before = rng.integers(1, 4, (600, 700))
    after = before.copy()
    after[100:300, 100:400] = 3  # lichen spreads
    after[500:, :] = 1  # a strip erodes to bare soil
    before[:20] = 255  # nodata in one map only: not counted
    run = change_cli(class_map(tmp_path / "2024.tif", before), class_map(tmp_path / "2026.tif", after),
                     "--out-dir", tmp_path / "out")  # fmt: skip
    assert run.returncode == 0, run.stderr
    valid = before != 255
    document = json.loads((tmp_path / "out" / "transitions.json").read_text())
    expected = [[int(((before == a) & (after == b) & valid).sum()) for b in (1, 2, 3)] for a in (1, 2, 3)]
    assert document["pixels"] == expected
    lichen = next(r for r in document["per_class"] if r["name"] == "lichen")
    assert lichen["net_px"] == int((after[valid] == 3).sum() - (before[valid] == 3).sum())
    assert lichen["persistence_px"] == expected[2][2] and lichen["net_m2"] == pytest.approx(lichen["net_px"] * 0.25)
    with open(tmp_path / "out" / "transitions.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 9 and sum(int(r["pixels"]) for r in rows) == int(valid.sum())
    with rasterio.open(tmp_path / "out" / "change.tif") as ds:
        codes = ds.read(1)
        names = json.loads(ds.tags()["GEOSEG_TRANSITIONS"])
    assert (codes[:20] == 65535).all()
    assert codes[200, 200] == before[200, 200] * 256 + 3 and names[str(2 * 256 + 3)] == "crust → lichen"
    assert (tmp_path / "out" / "change.png").read_bytes()[:4] == b"\x89PNG"
    assert "lichen" in run.stdout and "m²" in run.stdout
    with rasterio.open(tmp_path / "out" / "change.tif") as ds:  # unchanged in grey; a change in its new colour
        colors = ds.colormap(1)
    assert colors[2 * 256 + 2][:3] == (220, 220, 220) and colors[2 * 256 + 3][:3] == (0xDA, 0xA5, 0x20)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "change.png", "change.tif", "transitions.csv", "transitions.json"]  # two maps: no cover series  # fmt: skip


def test_a_series_gives_each_pair_and_the_cover_at_each_date(tmp_path: Path) -> None:
    """Three surveys: the transitions of 1 → 2 and 2 → 3, each in its folder, and the cover per class per date
    as counted by hand (over each map's own valid pixels)."""
    rng = np.random.default_rng(2)
    first = rng.integers(1, 4, (300, 400))
    second = first.copy()
    second[:100, :100] = 3
    third = second.copy()
    third[200:, :] = 1
    third[:10] = 255
    maps = [class_map(tmp_path / f"{year}.tif", ids) for year, ids in ((2023, first), (2024, second), (2025, third))]
    run = change_cli(*maps, "--out-dir", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    for folder, (a, b) in (("1-2", (first, second)), ("2-3", (second, third))):
        pixels = json.loads((tmp_path / "out" / folder / "transitions.json").read_text())["pixels"]
        valid = (a != 255) & (b != 255)
        assert pixels == [[int(((a == i) & (b == j) & valid).sum()) for j in (1, 2, 3)] for i in (1, 2, 3)]
    with open(tmp_path / "out" / "cover.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 9
    for date, ids in ((1, first), (2, second), (3, third)):
        valid = ids != 255
        for class_id in (1, 2, 3):
            (row,) = [r for r in rows if int(r["date"]) == date and int(r["class_id"]) == class_id]
            assert int(row["pixels"]) == int((ids == class_id).sum())
            assert float(row["percent"]) == pytest.approx(100 * (ids == class_id).sum() / valid.sum())
            assert float(row["m2"]) == pytest.approx(int(row["pixels"]) * 0.25)
    assert (tmp_path / "out" / "cover.png").read_bytes()[:4] == b"\x89PNG"


def test_a_later_map_on_another_grid_is_read_onto_the_earlier_grid(tmp_path: Path) -> None:
    """The later flight at 1 m instead of 0.5 m: each of its pixels covers four of the earlier map's."""
    coarse = np.random.default_rng(1).integers(1, 4, (150, 175))
    fine = np.kron(coarse, np.ones((2, 2), dtype=int))
    before = class_map(tmp_path / "before.tif", fine, pixel=0.5)
    after = class_map(tmp_path / "after.tif", coarse, pixel=1.0)
    run = change_cli(before, after, "--out-dir", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    pixels = np.array(json.loads((tmp_path / "out" / "transitions.json").read_text())["pixels"])
    assert pixels.sum() == fine.size and np.trace(pixels) == fine.size  # nothing changed, once regridded


def test_real_tiles_agree_where_they_overlap(tmp_path: Path) -> None:
    """new_brunswick's two tiles, labelled from one GeoPackage, on grids of their own: where they overlap,
    nearly every pixel keeps its class (a regridding that misplaced pixels would show transitions)."""
    from geoseg.data.labels import labels_on_grid

    gpkg = shared_data("new_brunswick", "BakerLake_2017_clipped.gpkg")
    specs = [ClassSpec(str(v), v, n, "#808080") for v, n in ((1, "forest"), (2, "water"), (3, "road"),
                                                              (4, "building"))]  # fmt: skip
    maps = []
    for i in (1, 2):
        tile = shared_data("new_brunswick", f"23322E759967N_clipped_1m_{i}of2.tif")
        grid = read_info(tile).grid
        index = labels_on_grid(gpkg, "Quatreclasses", specs, grid)
        ids = np.where(index == 255, 255, np.array([1, 2, 3, 4, *[255] * 252], dtype=np.uint8)[index])
        maps.append(write_class_map(tmp_path / f"tile{i}.tif", ids.astype(np.uint8), grid, specs, overwrite=True))
    run = change_cli(*maps, "--out-dir", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    pixels = np.array(json.loads((tmp_path / "out" / "transitions.json").read_text())["pixels"])
    assert pixels.sum() > 2000  # the overlap: about 2,600 pixels labelled in both
    assert np.trace(pixels) / pixels.sum() > 0.95


def test_class_tables_that_disagree_are_refused(tmp_path: Path) -> None:
    ids = np.ones((50, 50), dtype=int)
    renamed = [SPECS[0], ClassSpec("2", 2, "moss", "#00ff00"), SPECS[2]]
    before, after = class_map(tmp_path / "a.tif", ids), class_map(tmp_path / "b.tif", ids, specs=renamed)
    run = change_cli(before, after, "--out-dir", tmp_path / "out")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "'crust'" in lines[0] and "'moss'" in lines[0] and "--model" in lines[0]
    assert not (tmp_path / "out").exists()


def test_an_aoi_limits_the_transitions_and_the_cover(tmp_path: Path) -> None:
    """--aoi drawn in another CRS: only pixels whose centre lies inside count; the change map is nodata
    outside; an AOI that misses the maps is one line."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(3)
    first = rng.integers(1, 4, (200, 300))
    second = np.where(rng.random((200, 300)) < 0.2, 3, first)
    third = second.copy()
    maps = [class_map(tmp_path / f"{i}.tif", ids) for i, ids in enumerate((first, second, third))]
    # the top-left 100 × 150 px: x 500000-500075, y 3999950-4000000 (0.5 m pixels)
    plot = gpd.GeoDataFrame(geometry=[shapely.box(500_000, 3_999_950, 500_075, 4_000_000)], crs=CRS_UTM)
    plot.to_crs(4326).to_file(tmp_path / "plot.gpkg")
    run = change_cli(*maps, "--out-dir", tmp_path / "out", "--aoi", tmp_path / "plot.gpkg")
    assert run.returncode == 0, run.stderr
    pixels = np.array(json.loads((tmp_path / "out" / "1-2" / "transitions.json").read_text())["pixels"])
    a, b = first[:100, :150], second[:100, :150]
    # the reprojected box's edges may shift a pixel column or row in or out
    expected = np.array([[((a == i) & (b == j)).sum() for j in (1, 2, 3)] for i in (1, 2, 3)])
    assert abs(int(pixels.sum()) - a.size) <= 250 and np.abs(pixels - expected).max() <= 100
    with rasterio.open(tmp_path / "out" / "1-2" / "change.tif") as ds:
        codes = ds.read(1)
    assert (codes[120:, :] == 65535).all() and (codes[:, 170:] == 65535).all()
    with open(tmp_path / "out" / "cover.csv") as stream:
        rows = [r for r in csv.DictReader(stream) if r["date"] == "1"]
    assert abs(sum(int(r["pixels"]) for r in rows) - a.size) <= 250
    plot_far = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs=CRS_UTM)
    plot_far.to_file(tmp_path / "far.gpkg")
    refused = change_cli(*maps[:2], "--out-dir", tmp_path / "out2", "--aoi", tmp_path / "far.gpkg")
    assert refused.returncode == 2 and "does not overlap" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()


def test_a_grid_of_the_users_choice_and_maps_that_do_not_meet(tmp_path: Path) -> None:
    """--grid: both maps are read onto that raster's grid (here 1 m over the 0.5 m maps), so the change map
    has its shape and each of its pixels is the nearest fine pixel; maps that never meet are one line."""
    rng = np.random.default_rng(4)
    coarse = rng.integers(1, 4, (100, 150))
    fine = np.kron(coarse, np.ones((2, 2), dtype=int))
    before = class_map(tmp_path / "before.tif", fine)
    after_ids = np.kron(np.where(coarse == 2, 3, coarse), np.ones((2, 2), dtype=int))  # crust became lichen
    after = class_map(tmp_path / "after.tif", after_ids)
    grid = class_map(tmp_path / "grid.tif", np.ones((100, 150), dtype=int), pixel=1.0)
    run = change_cli(before, after, "--grid", grid, "--out-dir", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    with rasterio.open(tmp_path / "out" / "change.tif") as ds:
        assert (ds.width, ds.height, ds.res) == (150, 100, (1.0, 1.0))
    pixels = json.loads((tmp_path / "out" / "transitions.json").read_text())["pixels"]
    assert pixels == [[int(((coarse == a) & (np.where(coarse == 2, 3, coarse) == b)).sum()) for b in (1, 2, 3)]
                      for a in (1, 2, 3)]  # fmt: skip
    far = tmp_path / "far.tif"
    profile = {"driver": "GTiff", "width": 50, "height": 50, "count": 1, "dtype": "uint8", "crs": CRS_UTM,
               "transform": from_origin(600_000, 4_000_000, 0.5, 0.5)}  # fmt: skip
    with rasterio.open(far, "w", **profile) as out:
        out.write(np.ones((50, 50), np.uint8), 1)
    write_class_map(far, np.ones((50, 50), np.uint8), read_info(far).grid, SPECS, overwrite=True)
    refused = change_cli(before, far, "--out-dir", tmp_path / "out2")
    assert refused.returncode == 2 and "does not overlap" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()


def _labelled_tile(tmp_path: Path) -> tuple[Path, np.ndarray]:
    from geoseg.data.labels import labels_on_grid

    specs = [ClassSpec(str(v), v, n, "#808080") for v, n in ((1, "forest"), (2, "water"), (3, "road"),
                                                              (4, "building"))]  # fmt: skip
    tile = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    grid = read_info(tile).grid
    index = labels_on_grid(shared_data("new_brunswick", "BakerLake_2017_clipped.gpkg"), "Quatreclasses", specs, grid)
    ids = np.where(index == 255, 255, np.array([1, 2, 3, 4, *[255] * 252], dtype=np.uint8)[index]).astype(np.uint8)
    return write_class_map(tmp_path / "tile1.tif", ids, grid, specs, overwrite=True), ids


def test_a_real_map_against_itself_and_against_a_shifted_copy(tmp_path: Path) -> None:
    """new_brunswick's labelled tile against itself: a diagonal matrix whose diagonal is each class's pixel
    count. Against a copy placed 10 px further east: exactly the pairs (pixel, the pixel 10 px west of it)."""
    path, ids = _labelled_tile(tmp_path)
    run = change_cli(path, path, "--out-dir", tmp_path / "same")
    assert run.returncode == 0, run.stderr
    pixels = np.array(json.loads((tmp_path / "same" / "transitions.json").read_text())["pixels"])
    counts = np.bincount(ids[ids != 255], minlength=5)[1:5]
    assert (pixels == np.diag(np.diag(pixels))).all() and list(np.diag(pixels)) == list(counts)
    with rasterio.open(path) as ds:
        profile, transform = ds.profile, ds.transform
    shifted = tmp_path / "shifted.tif"
    profile.update(transform=transform * rasterio.Affine.translation(10, 0))
    with rasterio.open(path) as src, rasterio.open(shifted, "w", **profile) as dst:
        dst.write(src.read())
        dst.update_tags(**src.tags())
    run = change_cli(path, shifted, "--out-dir", tmp_path / "shifted_out")
    assert run.returncode == 0, run.stderr
    pixels = np.array(json.loads((tmp_path / "shifted_out" / "transitions.json").read_text())["pixels"])
    a, b = ids[:, 10:], ids[:, :-10]
    valid = (a != 255) & (b != 255)
    expected = [[int(((a == i) & (b == j) & valid).sum()) for j in (1, 2, 3, 4)] for i in (1, 2, 3, 4)]
    assert pixels.tolist() == expected
    # the shifted copy reprojected to another CRS (UTM 20N, 0.6 m): geoseg reads it back onto the tile's
    # grid as GDAL's nearest-neighbour warp does, so the counts are numpy's over that warp
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    other = tmp_path / "other_crs.tif"
    with rasterio.open(shifted) as src:
        dst_transform, width, height = calculate_default_transform(src.crs, "EPSG:32620", src.width, src.height,
                                                                   *src.bounds, resolution=0.6)  # fmt: skip
        profile.update(crs="EPSG:32620", transform=dst_transform, width=width, height=height)
        with rasterio.open(other, "w", **profile) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.nearest)
            dst.update_tags(**src.tags())
    back = np.full(ids.shape, 255, np.uint8)
    with rasterio.open(other) as src:
        reproject(rasterio.band(src, 1), back, dst_transform=transform, dst_crs=profile_crs(path),
                  resampling=Resampling.nearest, dst_nodata=255)  # fmt: skip
    run = change_cli(path, other, "--out-dir", tmp_path / "other_out")
    assert run.returncode == 0, run.stderr
    pixels = np.array(json.loads((tmp_path / "other_out" / "transitions.json").read_text())["pixels"])
    valid = (ids != 255) & (back != 255)
    expected = [[int(((ids == i) & (back == j) & valid).sum()) for j in (1, 2, 3, 4)] for i in (1, 2, 3, 4)]
    assert pixels.sum() > 10_000 and pixels.tolist() == expected


def profile_crs(path: Path):
    with rasterio.open(path) as ds:
        return ds.crs


def test_an_image_is_not_a_class_map(tmp_path: Path) -> None:
    image = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    path, _ = _labelled_tile(tmp_path)
    run = change_cli(path, image, "--out-dir", tmp_path / "out")
    assert run.returncode == 2 and "is not a class map" in run.stderr and image.name in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
