"""Polygons and areas from written class maps, checked against the source projects' expected values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.config import ClassSpec
from geoseg.errors import Cancelled, GeoSegError, OutputError, OutputExistsError
from geoseg.io.classmap import CLASSES_TAG
from geoseg.polygons import LAYER_NAME, class_areas, vectorize_class_map
from tests.conftest import shared_data

UTM16 = CRS.from_epsg(32616)
SPECS = [ClassSpec("0", 0, "background", "#000000"), ClassSpec("1", 1, "building", "#ff0000")]


def write_map(
    path: Path,
    classes: np.ndarray,
    transform=None,
    crs: CRS | None = UTM16,
    block: int = 256,
    by_blocks: bool = False,
    tag: bool = True,
) -> Path:
    """A class map GeoTIFF (uint8, nodata 255), written in one go or window by window."""
    height, width = classes.shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "nodata": 255,
        "crs": crs, "transform": transform or from_origin(0, height, 1, 1),
        "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        if by_blocks:
            for row in range(0, height, block):
                for col in range(0, width, block):
                    window = Window(col, row, min(block, width - col), min(block, height - row))
                    dst.write(classes[row : row + block, col : col + block], 1, window=window)
        else:
            dst.write(classes, 1)
        if tag:
            dst.update_tags(
                **{CLASSES_TAG: json.dumps([{"id": c.id, "name": c.name, "color": c.color} for c in SPECS])}
            )
    return path


def spacenet_mask() -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(shared_data("spacenet_atlanta", "sample_fp_mask_from_geojson.tif")) as ds:
            return ds.read(1)


@pytest.fixture(scope="module")
def spacenet_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 0/255 footprint mask as a class map: 255 -> building (1), 0 -> background (0), no nodata.

    Pixel-sized cells with the origin at (0, 900), so x = column and y = 900 - row.
    """
    mask = spacenet_mask()
    classes = np.where(mask == 255, 1, 0).astype(np.uint8)
    return write_map(tmp_path_factory.mktemp("spacenet") / "classes.tif", classes, from_origin(0, 900, 1, 1))


def read_polygons(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=LAYER_NAME) if path.suffix == ".gpkg" else gpd.read_file(path)


def canonical(frame: gpd.GeoDataFrame) -> list[tuple[int, bytes]]:
    return sorted(zip(frame.class_id.tolist(), shapely.to_wkb(shapely.normalize(frame.geometry.values)), strict=True))


# --- the source project's expected values ------------------------------------------------------------


def test_spacenet_mask_gives_43_building_polygons(spacenet_map: Path, tmp_path: Path) -> None:
    out = tmp_path / "polygons.gpkg"
    result = vectorize_class_map(spacenet_map, out, connectivity=4, min_pixels=40, sieve=0)
    frame = read_polygons(out)
    buildings = frame[frame.class_id == 1]
    assert len(buildings) == 43
    assert result.counts[1] == 43 and result.n_polygons == len(frame)
    assert result.dropped >= 1  # the 1-pixel building the source project drops too
    assert set(buildings.class_name) == {"building"}

    reference = gpd.read_file(shared_data("spacenet_atlanta", "gdf_from_mask_1.geojson")).geometry.values
    # gdf_from_mask_1.geojson is in pixel coordinates with y = row (downwards); ours has y = 900 - row
    reference = shapely.transform(reference, lambda xy: np.column_stack([xy[:, 0], 900 - xy[:, 1]]))
    ours, theirs = shapely.union_all(buildings.geometry.values), shapely.union_all(reference)
    assert ours.symmetric_difference(theirs).area / theirs.area < 0.005
    assert ours.area == pytest.approx(33817)  # 33,818 foreground pixels less the 1-pixel region


def test_min_area_in_crs_units_matches_min_pixels(spacenet_map: Path, tmp_path: Path) -> None:
    by_area = vectorize_class_map(spacenet_map, tmp_path / "a.gpkg", min_area=40.0, sieve=0)
    by_pixels = vectorize_class_map(spacenet_map, tmp_path / "p.gpkg", min_pixels=40, sieve=0)
    everything = vectorize_class_map(spacenet_map, tmp_path / "all.gpkg", sieve=0)
    assert by_area.counts == by_pixels.counts
    assert everything.counts[1] == 44 and everything.dropped == 0


def test_connectivity_diagonal_line(tmp_path: Path) -> None:
    """rasterio's own fixture: a 10×10 zero image with a diagonal of ones -> 12 shapes (4-conn), 2 (8-conn)."""
    image = np.zeros((10, 10), dtype=np.uint8)
    np.fill_diagonal(image, 1)
    path = write_map(tmp_path / "diagonal.tif", image)
    rook = vectorize_class_map(path, tmp_path / "rook.gpkg", connectivity=4, sieve=0)
    queen = vectorize_class_map(path, tmp_path / "queen.gpkg", connectivity=8, sieve=0)
    assert rook.n_polygons == 12 and rook.counts == {0: 2, 1: 10}
    assert queen.n_polygons == 2 and queen.counts == {0: 1, 1: 1}
    assert read_polygons(tmp_path / "queen.gpkg").is_valid.all()


def test_same_polygons_for_any_internal_tiling(tmp_path: Path) -> None:
    """Polygonization works on the file: 16 px tiles written block by block equal one 512 px write."""
    classes = np.where(spacenet_mask() == 255, 1, 0).astype(np.uint8)
    classes[:, 700:] = np.where(classes[:, 700:] == 1, 2, classes[:, 700:])  # a third class across tile borders
    classes[850:, :30] = 255  # and some nodata
    transform = from_origin(740_000.25, 3_737_000.75, 0.3, 0.3)
    whole = write_map(tmp_path / "whole.tif", classes, transform, block=512)
    tiled = write_map(tmp_path / "tiled.tif", classes, transform, block=16, by_blocks=True)
    for connectivity in (4, 8):
        a = vectorize_class_map(whole, tmp_path / f"whole{connectivity}.gpkg", connectivity=connectivity)
        b = vectorize_class_map(tiled, tmp_path / f"tiled{connectivity}.gpkg", connectivity=connectivity)
        assert a.counts == b.counts and 2 in a.counts and 255 not in a.counts
        pa, pb = read_polygons(a.path), read_polygons(b.path)
        assert canonical(pa) == canonical(pb)
        valid = np.count_nonzero(classes != 255) * 0.3 * 0.3
        assert pa.area.sum() == pytest.approx(valid)


def test_coverage_simplification_keeps_shared_borders(spacenet_map: Path, tmp_path: Path) -> None:
    exact = read_polygons(vectorize_class_map(spacenet_map, tmp_path / "exact.gpkg").path)
    result = vectorize_class_map(spacenet_map, tmp_path / "simple.gpkg", simplify=1.5)
    simple = read_polygons(result.path)
    assert result.simplified and len(simple) == len(exact)
    assert simple.is_valid.all()
    # fewer vertices, same tiling of the valid area: no gaps, no overlaps
    assert (
        shapely.get_num_coordinates(simple.geometry.values).sum()
        < 0.7 * shapely.get_num_coordinates(exact.geometry.values).sum()
    )
    geoms = simple.geometry.values
    assert shapely.coverage_is_valid(geoms)
    union = shapely.union_all(geoms)
    assert union.area == pytest.approx(900 * 900, rel=1e-9)
    assert simple.area.sum() == pytest.approx(union.area, rel=1e-9)  # areas add up: no overlaps
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]])).sum()
    assert overlap < 1e-6


# --- fields, CRS, areas --------------------------------------------------------------------------------


def test_fields_crs_and_areas(tmp_path: Path) -> None:
    classes = np.where(spacenet_mask() == 255, 1, 0).astype(np.uint8)
    classes[:100, :100] = 255
    transform = from_origin(740_000, 3_737_000, 0.5, 0.5)
    path = write_map(tmp_path / "classes.tif", classes, transform)
    out = tmp_path / "polygons.gpkg"
    vectorize_class_map(path, out, sieve=0)  # one polygon per region: per-class areas equal the map's
    frame = read_polygons(out)
    assert list(frame.columns) == ["class_id", "class_name", "area", "area_m2", "geometry"]
    assert frame.crs.equals(ProjCRS.from_epsg(32616))
    assert frame.class_id.dtype.kind == "i" and set(frame.class_name) == {"background", "building"}
    valid_m2 = np.count_nonzero(classes != 255) * 0.25
    assert frame.area_m2.sum() == pytest.approx(valid_m2)
    np.testing.assert_allclose(frame.area, frame.geometry.area)

    report = class_areas(path)
    json.dumps(report)  # JSON-ready
    assert report["crs"] == "EPSG:32616" and report["pixel_area"] == 0.25
    assert report["valid_pixels"] == np.count_nonzero(classes != 255)
    assert sum(c["percent"] for c in report["classes"]) == pytest.approx(100)
    by_id = {c["class_id"]: c for c in report["classes"]}
    assert by_id[1]["pixels"] == np.count_nonzero(classes == 1) and by_id[1]["name"] == "building"
    assert by_id[1]["area_m2"] == pytest.approx(by_id[1]["pixels"] * 0.25)
    assert by_id[1]["area_ha"] == pytest.approx(by_id[1]["area_m2"] / 10_000)
    polygon_m2 = frame.groupby("class_id").area_m2.sum()
    for class_id, row in by_id.items():
        assert polygon_m2[class_id] == pytest.approx(row["area_m2"])


def test_names_from_specs_then_tag_then_ids(tmp_path: Path) -> None:
    image = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    untagged = write_map(tmp_path / "untagged.tif", image, tag=False)
    frame = read_polygons(vectorize_class_map(untagged, tmp_path / "ids.geojson", sieve=0).path)
    assert sorted(frame.class_name) == ["0", "1", "2"]
    specs = [ClassSpec("7", 2, "moss", "#00ff00")]
    named = read_polygons(vectorize_class_map(untagged, tmp_path / "named.geojson", classes=specs, sieve=0).path)
    assert dict(zip(named.class_id, named.class_name, strict=True))[2] == "moss"
    report = class_areas(untagged, classes=specs)
    assert [(c["class_id"], c["name"], c["pixels"]) for c in report["classes"]] == [
        (0, "0", 1), (1, "1", 1), (2, "moss", 1)
    ]  # fmt: skip


def test_geographic_crs_has_no_square_metres(tmp_path: Path) -> None:
    image = np.zeros((4, 4), dtype=np.uint8)
    path = write_map(tmp_path / "wgs84.tif", image, from_origin(10, 50, 0.001, 0.001), crs=CRS.from_epsg(4326))
    frame = read_polygons(vectorize_class_map(path, tmp_path / "p.gpkg").path)
    assert "area_m2" not in frame.columns and frame.crs.equals(ProjCRS.from_epsg(4326))
    report = class_areas(path)
    assert report["classes"][0]["area_m2"] is None and report["classes"][0]["percent"] == 100


# --- refusals ------------------------------------------------------------------------------------------


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    path = write_map(tmp_path / "c.tif", np.zeros((8, 8), dtype=np.uint8))
    out = tmp_path / "p.gpkg"
    vectorize_class_map(path, out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        vectorize_class_map(path, out)
    vectorize_class_map(path, out, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_output_under_a_file_is_refused(tmp_path: Path) -> None:
    path = write_map(tmp_path / "c.tif", np.zeros((8, 8), dtype=np.uint8))
    (tmp_path / "blocker").write_text("")
    with pytest.raises(OutputError) as info:
        vectorize_class_map(path, tmp_path / "blocker" / "sub" / "p.gpkg")
    assert "\n" not in str(info.value) and "not a folder" in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_is_refused(tmp_path: Path) -> None:
    path = write_map(tmp_path / "c.tif", np.zeros((8, 8), dtype=np.uint8))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            vectorize_class_map(path, locked / "p.gpkg")
    finally:
        locked.chmod(0o700)


def test_bad_format_and_options(tmp_path: Path) -> None:
    path = write_map(tmp_path / "c.tif", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(OutputError, match="unknown polygon format"):
        vectorize_class_map(path, tmp_path / "p.shp")
    with pytest.raises(GeoSegError, match="connectivity"):
        vectorize_class_map(path, tmp_path / "p.gpkg", connectivity=6)
    with pytest.raises(GeoSegError, match="not found"):
        vectorize_class_map(tmp_path / "missing.tif", tmp_path / "p.gpkg")
    assert not (tmp_path / "p.gpkg").exists()


def test_simplification_without_coverage_simplify_warns_and_keeps_outlines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_map(tmp_path / "c.tif", np.kron(np.eye(4, dtype=np.uint8), np.ones((3, 3), dtype=np.uint8)))
    exact = read_polygons(vectorize_class_map(path, tmp_path / "exact.gpkg").path)
    monkeypatch.delattr(shapely, "coverage_simplify")
    with pytest.warns(RuntimeWarning, match="shapely ≥ 2.1"):
        result = vectorize_class_map(path, tmp_path / "fallback.gpkg", simplify=1.0)
    assert not result.simplified
    assert canonical(read_polygons(result.path)) == canonical(exact)


def test_parquet_output_or_a_clear_refusal(tmp_path: Path) -> None:
    path = write_map(tmp_path / "c.tif", np.zeros((8, 8), dtype=np.uint8))
    out = tmp_path / "p.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(OutputError, match="pyarrow"):
            vectorize_class_map(path, out)
        assert not out.exists()
    else:
        vectorize_class_map(path, out)
        frame = gpd.read_parquet(out)
        assert frame.crs.equals(ProjCRS.from_epsg(32616)) and frame.area_m2.sum() == pytest.approx(64)


def test_empty_class_map_writes_an_empty_layer(tmp_path: Path) -> None:
    path = write_map(tmp_path / "c.tif", np.full((8, 8), 255, dtype=np.uint8))
    result = vectorize_class_map(path, tmp_path / "p.gpkg")
    assert result.n_polygons == 0 and len(read_polygons(result.path)) == 0
    report = class_areas(path)
    assert report["valid_pixels"] == 0 and all(c["percent"] == 0 for c in report["classes"])


def test_batches_of_polygons_join_up(spacenet_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    import geoseg.polygon_strips as polygon_strips

    whole = read_polygons(vectorize_class_map(spacenet_map, tmp_path / "whole.gpkg", min_pixels=40).path)
    monkeypatch.setattr(polygon_strips, "feature_batches", functools.partial(polygon_strips.feature_batches, size=4))
    batched = vectorize_class_map(spacenet_map, tmp_path / "batched.gpkg", min_pixels=40)
    assert batched.counts[1] == 43 and canonical(read_polygons(batched.path)) == canonical(whole)


def test_vectorize_command_names_classes_from_a_bundle_and_drops_small_regions(
    spacenet_map: Path, tmp_path: Path
) -> None:
    from tests.conftest import make_random_bundle

    bundle = make_random_bundle(tmp_path / "bundle", [1], n_classes=2, tile=64, overlap=8)
    meta = json.loads((bundle / "geoseg.json").read_text())
    meta["classes"] = [{"id": 0, "name": "bare ground", "color": "#aaaaaa"}, {"id": 1, "name": "roof", "color": "#f00"}]
    (bundle / "geoseg.json").write_text(json.dumps(meta))
    out = tmp_path / "polygons.gpkg"
    done = subprocess.run(
        [sys.executable, "-m", "geoseg", "vectorize", str(spacenet_map), "--model", str(bundle), "--out", str(out),
         "--min-area", "40", "--sieve", "0", "--progress", "none"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    frame = read_polygons(out)
    assert set(frame.class_name) == {"bare ground", "roof"}
    assert (frame.class_id == 1).sum() == 43  # the source project's count at ≥ 40 px
    assert "dropped" in done.stdout

    again = subprocess.run([sys.executable, "-m", "geoseg", "vectorize", str(spacenet_map), "--out", str(out)],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_vectorize_command_on_a_missing_class_map_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tif"
    done = subprocess.run([sys.executable, "-m", "geoseg", "vectorize", str(missing), "-o", str(tmp_path / "p.gpkg")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("geoseg: error:") and str(missing) in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "p.gpkg").exists()


@pytest.mark.parametrize("problem", ["rgb mosaic", "float band", "no crs"])
def test_vectorize_refuses_what_is_not_a_class_map(tmp_path: Path, problem: str) -> None:
    """A 3-band RGB mosaic gave 84 k polygons of pixel values before; a map without a CRS, placeless ones."""
    out = tmp_path / "p.gpkg"
    if problem == "rgb mosaic":
        source, needle = shared_data("new_brunswick", "23322E759967N_clipped_1m_2of2.tif"), "3 bands"
    elif problem == "float band":
        source, needle = tmp_path / "float.tif", "float32"
        with rasterio.open(source, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32", crs=UTM16,
                           transform=from_origin(0, 8, 1, 1)) as dst:  # fmt: skip
            dst.write(np.ones((1, 8, 8), dtype=np.float32))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            source = write_map(tmp_path / "nocrs.tif", np.ones((8, 8), dtype=np.uint8), crs=None)
        needle = "no CRS"
    done = subprocess.run([sys.executable, "-m", "geoseg", "vectorize", str(source), "-o", str(out),
                           "--progress", "none"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(source) in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".p.gpkg*"))


def test_a_cancelled_vectorize_writes_nothing(tmp_path: Path) -> None:
    """What `geoseg batch` relies on to stop within seconds on Ctrl-C: with ``cancel`` set, vectorizing
    stops with Cancelled and leaves neither the output nor a temporary file; cleared, the same call works."""
    rng = np.random.default_rng(0)
    ids = np.array([c.id for c in SPECS], dtype=np.uint8)
    blobs = rng.choice(ids, (64, 64)).repeat(4, 0).repeat(4, 1)
    class_map = write_map(tmp_path / "map.tif", blobs)
    out = tmp_path / "polygons.gpkg"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        vectorize_class_map(class_map, out, cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]
    cancel.clear()
    assert vectorize_class_map(class_map, out, cancel=cancel).n_polygons > 100


def test_batches_capped_by_vertices_give_the_same_polygons(spacenet_map: Path) -> None:
    """A speckled map's background polygon can hold millions of vertices: batches close at a vertex cap too."""
    from geoseg.polygon_strips import feature_batches

    with rasterio.open(spacenet_map) as ds:
        classes = ds.read(1)

    def polygons(**caps: int) -> tuple[list[np.ndarray], np.ndarray]:
        batches = list(feature_batches(rasterio.features.shapes(classes, connectivity=4), {255}, **caps))
        return batches, np.concatenate([b for b, _ in batches])

    whole, expected = polygons()
    capped, got = polygons(max_points=300)
    assert len(whole) == 1 and len(capped) >= 5
    assert np.array_equal(np.concatenate([v for _, v in capped]), np.concatenate([v for _, v in whole]))
    assert all(shapely.equals_exact(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_strips_of_rows_give_the_polygons_of_the_whole_map(
    spacenet_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connectivity: int
) -> None:
    """Large maps are polygonized in strips of rows and written to the GeoPackage strip by strip (memory bounded
    by a strip); the regions that cross a strip edge are joined, so the polygons are those of the whole map: here
    strips of 7 rows, where every building crosses one."""
    import geoseg.polygons as polygons

    whole = vectorize_class_map(spacenet_map, tmp_path / "whole.gpkg", sieve=0, connectivity=connectivity)
    with rasterio.open(spacenet_map) as ds:
        monkeypatch.setattr(polygons, "_STRIP_PIXELS", 7 * ds.width)
    strips = vectorize_class_map(spacenet_map, tmp_path / "strips.gpkg", sieve=0, connectivity=connectivity)
    assert strips.counts == whole.counts and whole.counts[1] > 40

    def regions(path: Path) -> list[tuple[int, bytes]]:
        frame = read_polygons(path)
        shapes = shapely.normalize(shapely.simplify(shapely.make_valid(frame.geometry.values), 0))
        return sorted(zip(frame.class_id.tolist(), shapely.to_wkb(shapes), strict=True))

    assert regions(strips.path) == regions(whole.path)
    layer_type = "Polygon" if connectivity == 4 else "MultiPolygon"  # corners join parts with 8-connectivity
    assert pyogrio.read_info(strips.path, layer=LAYER_NAME)["geometry_type"] == layer_type


def test_a_truncated_class_map_fails_with_its_name_and_writes_nothing(tmp_path: Path) -> None:
    """Cut in its tile data (untagged, so the header stays at the front and the file still opens)."""
    whole = write_map(tmp_path / "whole.tif", np.where(spacenet_mask() == 255, 1, 0).astype(np.uint8), tag=False)
    broken = tmp_path / "truncated.tif"
    broken.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    whole.unlink()
    out = tmp_path / "polygons.gpkg"
    with pytest.raises(GeoSegError, match="truncated") as failure:
        vectorize_class_map(broken, out)
    assert str(broken) in str(failure.value) and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.tif"]
    with pytest.raises(GeoSegError, match="truncated"):
        class_areas(broken)


def test_class_counts_take_in_values_first_met_in_a_later_strip() -> None:
    """Strips are counted by comparing with the values met so far; a strip with a new value (a class absent
    from the first strips, or nodata) must still be counted whole."""
    from geoseg.polygons import _add_counts

    rng = np.random.default_rng(0)
    strips = [rng.integers(1, 3, (40, 50), dtype=np.uint8) for _ in range(3)]
    strips[1][5, 7] = 9
    strips[2][:, :3] = 255
    counts, seen = np.zeros(256, dtype=np.int64), []
    for strip in strips:
        seen = _add_counts(counts, strip, seen)
    assert np.array_equal(counts, np.bincount(np.concatenate([s.ravel() for s in strips]), minlength=256))
    assert seen == [1, 2, 9, 255]
    rare = np.ones((40, 50), dtype=np.uint8)
    rare[1, 1] = 4  # not among every 64th pixel, which the first strip starts from
    counts, seen = np.zeros(256, dtype=np.int64), []
    assert _add_counts(counts, rare, seen) == [1, 4] and counts[1] == rare.size - 1 and counts[4] == 1
