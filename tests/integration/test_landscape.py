"""`geoseg landscape`: pylandstats' metrics of a real class map, named by class, for the map and per zone."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pylandstats
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from geoseg.config import ClassSpec
from geoseg.data.labels import labels_on_grid
from geoseg.io.classmap import write_class_map
from geoseg.io.raster import GridSpec, read_info
from geoseg.landscape_metrics import CLASS_METRICS, LANDSCAPE_METRICS
from tests.conftest import shared_data

SPECS = [ClassSpec(str(v), v, n, "#808080") for v, n in ((1, "forest"), (2, "water"), (3, "road"), (4, "building"))]


@pytest.fixture(scope="module")
def real_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """new_brunswick tile 1 labelled from its GeoPackage (0.5 m pixels, EPSG:2953): a real class map and its ids."""
    tile = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    grid = read_info(tile).grid
    index = labels_on_grid(shared_data("new_brunswick", "BakerLake_2017_clipped.gpkg"), "Quatreclasses", SPECS, grid)
    ids = np.where(index == 255, 255, np.array([1, 2, 3, 4, *[255] * 252], dtype=np.uint8)[index]).astype(np.uint8)
    path = write_class_map(tmp_path_factory.mktemp("map") / "tile1.tif", ids, grid, SPECS, overwrite=True)
    return path, ids


def landscape_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", "landscape", *map(str, args)], capture_output=True,
                          text=True, check=False, cwd=cwd)  # fmt: skip


def test_class_and_landscape_metrics_are_pylandstats_own_with_names(tmp_path: Path, real_map) -> None:
    path, ids = real_map
    expected = pylandstats.Landscape(ids, res=(0.5, 0.5), nodata=255)
    by_class = expected.compute_class_metrics_df(metrics=list(CLASS_METRICS))
    run = landscape_cli(path, "--edges-png", "edges.png", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "tile1_landscape.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert (tmp_path / "edges.png").read_bytes()[:4] == b"\x89PNG"
    shapes = [(float(r["convex_edge_share"]), float(r["concave_edge_share"])) for r in rows if r["convex_edge_share"]]
    assert shapes and all(0 <= convex + concave <= 1 for convex, concave in shapes)
    assert [r["class"] for r in rows] == [SPECS[i - 1].name for i in by_class.index]
    for row in rows:
        for metric in CLASS_METRICS:
            assert float(row[metric]) == pytest.approx(by_class.loc[int(row["class_id"]), metric], rel=1e-9), metric
    whole = landscape_cli(path, "--level", "landscape", "-o", tmp_path / "whole.json", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    (row,) = json.loads((tmp_path / "whole.json").read_text())["rows"]
    reference = expected.compute_landscape_metrics_df(metrics=list(LANDSCAPE_METRICS))
    for metric in LANDSCAPE_METRICS:
        assert row[metric] == pytest.approx(reference[metric].iloc[0], rel=1e-9), metric


def test_each_zone_is_measured_on_its_own(tmp_path: Path, real_map) -> None:
    """Two plots (the tile's west and east halves, drawn in another CRS): each zone's rows are pylandstats'
    metrics of that half alone."""
    path, ids = real_map
    with rasterio.open(path) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    middle = left + (ids.shape[1] // 2) * (right - left) / ids.shape[1]
    zones = gpd.GeoDataFrame({"plot": ["west", "east"]}, geometry=[shapely.box(left, bottom, middle, top),
                              shapely.box(middle, bottom, right, top)], crs=crs).to_crs(4326)  # fmt: skip
    zones.to_file(tmp_path / "plots.gpkg")
    run = landscape_cli(path, "--by", tmp_path / "plots.gpkg", "--zone-field", "plot", "-o", "zones.csv",
                        cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "zones.csv") as stream:
        rows = list(csv.DictReader(stream))
    west = ids[:, : ids.shape[1] // 2]
    reference = pylandstats.Landscape(west, res=(0.5, 0.5), nodata=255).compute_class_metrics_df(
        metrics=["number_of_patches", "proportion_of_landscape"]
    )
    mine = {int(r["class_id"]): r for r in rows if r["zone"] == "west"}
    assert set(mine) == set(reference.index)
    for class_id, row in mine.items():
        # the zone is drawn in degrees and burnt back: a pixel column at the seam may fall either way
        assert abs(int(float(row["number_of_patches"])) - reference.loc[class_id, "number_of_patches"]) <= 2
        assert float(row["proportion_of_landscape"]) == pytest.approx(
            reference.loc[class_id, "proportion_of_landscape"], abs=0.5
        )
    assert {r["zone"] for r in rows} == {"west", "east"}
    zones[zones["plot"] == "west"].to_file(tmp_path / "west.gpkg")
    run = landscape_cli(path, "--aoi", tmp_path / "west.gpkg", "-o", "west.csv", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "west.csv") as stream:
        inside = {int(r["class_id"]): r for r in csv.DictReader(stream)}
    assert {k: v["number_of_patches"] for k, v in inside.items()} == {
        k: v["number_of_patches"] for k, v in mine.items()
    }


def test_maps_that_cannot_be_measured_get_one_line(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(1, 3, (40, 50)).astype(np.uint8)
    geographic = GridSpec(rasterio.crs.CRS.from_epsg(4326), from_origin(10, 50, 0.0001, 0.0001), 50, 40)
    degrees = write_class_map(tmp_path / "degrees.tif", ids, geographic, SPECS[:2], overwrite=True)
    run = landscape_cli(degrees, cwd=tmp_path)
    assert run.returncode == 2 and "projected CRS" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    projected = GridSpec(rasterio.crs.CRS.from_epsg(32633), from_origin(500_000, 5_000_000, 1, 1), 50, 40)
    empty = write_class_map(tmp_path / "empty.tif", np.full((40, 50), 255, np.uint8), projected, SPECS, overwrite=True)
    run = landscape_cli(empty, cwd=tmp_path)
    assert run.returncode == 2 and "no valid" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = landscape_cli(empty, "-o", "metrics.txt", cwd=tmp_path)
    assert run.returncode == 2 and "metrics.txt" in run.stderr and ".csv or .json" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["degrees.tif", "empty.tif"]
