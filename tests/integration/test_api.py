"""The Python API on xarray: the same class maps as `geoseg infer`, lazily, on any chunking and scheduler."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import dask
import dask.array
import numpy as np
import pytest
import rasterio
import rioxarray
import shapely
import torch
import xarray as xr

import geoseg
from geoseg.demo_data import make_survey
from geoseg.errors import GeoSegError
from geoseg.infer.run import InferOptions, segment_mosaic
from geoseg.io.classmap import confidence_percent
from geoseg.polygons import vectorize_class_map
from geoseg.progress import Progress, ProgressMode
from tests.conftest import make_random_bundle, shared_data

QUIET = Progress(ProgressMode.none)


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_survey(tmp_path_factory.mktemp("survey"), size=640, seed=7).image


@pytest.fixture(scope="module")
def rgb_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_bundle(tmp_path_factory.mktemp("b") / "rgb", [1, 2, 3], n_classes=4, tile=128, overlap=16)


@pytest.fixture(scope="module")
def rgb_model(rgb_model_path: Path) -> geoseg.Model:
    return geoseg.load_model(rgb_model_path, device="cpu")


@pytest.fixture(scope="module")
def survey_cli(tmp_path_factory: pytest.TempPathFactory, survey: Path, rgb_model_path: Path) -> tuple[Path, Path]:
    """`geoseg infer`'s class map and confidence map of the survey (small blocks, two threads)."""
    out = tmp_path_factory.mktemp("cli")
    options = InferOptions(block_size=256, scheduler="threads", workers=2, confidence=True)
    segment_mosaic(survey, rgb_model_path, out / "classes.tif", options, confidence_path=out / "conf.tif",
                   progress=QUIET)  # fmt: skip
    return out / "classes.tif", out / "conf.tif"


def test_segment_equals_the_cli_on_real_single_band_uint16_for_two_chunkings(tmp_path: Path) -> None:
    image = shared_data("spacenet_atlanta", "sample_geotiff.tif")
    bundle = make_random_bundle(tmp_path / "pan", [1], n_classes=3, tile=256, overlap=32, scale=(100.0, 1500.0))
    command = [sys.executable, "-m", "geoseg", "infer", str(image), "--model", str(bundle), "--out-dir", str(tmp_path),
               "--no-polygons", "--progress", "none"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    expected = read_band(tmp_path / "sample_geotiff_classes.tif")
    assert len(np.unique(expected)) > 1  # a seeded model that predicts more than one class
    model = geoseg.load_model(bundle, device="cpu")
    for chunks in ({"y": 450, "x": 300}, {"y": 700, "x": 128}):  # the second's columns are narrower than a tile
        mosaic = rioxarray.open_rasterio(image, chunks=chunks)
        classes = geoseg.segment(mosaic, model)
        assert classes.dtype == np.uint8 and classes.dims == ("y", "x")
        assert np.array_equal(classes.values, expected), chunks


def test_segment_equals_the_cli_on_a_generated_mosaic_with_a_nodata_collar(survey: Path, survey_cli, rgb_model) -> None:
    cli_classes, cli_confidence = (read_band(p) for p in survey_cli)
    assert (cli_classes == 255).any() and len(np.unique(cli_classes[cli_classes != 255])) > 1
    for chunks in ({"y": 200, "x": 300}, {"y": 640, "x": 96}):
        mosaic = rioxarray.open_rasterio(survey, chunks=chunks)
        classes, confidence = geoseg.segment(mosaic, rgb_model, confidence=True)
        classes, confidence = dask.compute(classes, confidence)
        assert np.array_equal(classes.values, cli_classes), chunks
        assert np.array_equal(confidence_percent(confidence.values, classes.values), cli_confidence), chunks
        assert np.isnan(confidence.values[classes.values == 255]).all()


def test_raster_smaller_than_a_tile_in_chunks_smaller_still(tmp_path: Path) -> None:
    image = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")  # 280 x 341, one padded window
    bundle = make_random_bundle(tmp_path / "rgb", [1, 2, 3], n_classes=3, tile=512, overlap=64)
    segment_mosaic(image, bundle, tmp_path / "cli.tif", InferOptions(scheduler="sync"), progress=QUIET)
    mosaic = rioxarray.open_rasterio(image, chunks={"y": 100, "x": 150})
    classes = geoseg.segment(mosaic, geoseg.load_model(bundle, device="cpu"))
    assert np.array_equal(classes.values, read_band(tmp_path / "cli.tif"))


def test_result_keeps_the_grid_and_writes_with_to_raster(tmp_path: Path, survey: Path, survey_cli, rgb_model) -> None:
    mosaic = rioxarray.open_rasterio(survey, chunks={"y": 256, "x": 256})
    classes = geoseg.segment(mosaic, rgb_model)
    assert classes.chunks == ((256, 256, 128), (256, 256, 128))
    assert classes.rio.crs == mosaic.rio.crs and classes.rio.transform() == mosaic.rio.transform()
    assert np.array_equal(classes.x, mosaic.x) and np.array_equal(classes.y, mosaic.y)
    out = tmp_path / "classes.tif"
    # recalc_transform=False: the transform exactly (from coordinates, rioxarray's default, it is off by ~1e-12)
    classes.rio.to_raster(out, tiled=True, lock=threading.Lock(), recalc_transform=False)
    with rasterio.open(out) as written, rasterio.open(survey) as source:
        assert written.crs == source.crs and written.transform == source.transform
        assert written.shape == source.shape and written.nodata == 255 and written.dtypes[0] == "uint8"
        assert np.array_equal(written.read(1), read_band(survey_cli[0]))


def test_nothing_runs_before_compute(survey: Path, rgb_model) -> None:
    reads: list[tuple[int, ...]] = []

    def record(block: np.ndarray) -> np.ndarray:
        reads.append(block.shape)
        return block

    mosaic = rioxarray.open_rasterio(survey, chunks={"y": 320, "x": 320})
    watched = mosaic.copy(data=mosaic.data.map_blocks(record, meta=np.empty((0, 0, 0), mosaic.dtype)))
    classes = geoseg.segment(watched, rgb_model)
    assert isinstance(classes.data, dask.array.Array) and reads == []
    classes.compute()
    assert len(reads) >= 4


def test_numpy_backed_input_and_masked_nan_input_give_the_same_map(survey: Path, survey_cli, rgb_model) -> None:
    expected = read_band(survey_cli[0])
    in_memory = geoseg.segment(rioxarray.open_rasterio(survey).load(), rgb_model)
    assert isinstance(in_memory.data, np.ndarray) and np.array_equal(in_memory.values, expected)
    masked = rioxarray.open_rasterio(survey, masked=True, chunks={"y": 320, "x": 320})  # nodata 0 → NaN, float
    assert np.array_equal(geoseg.segment(masked, rgb_model).values, expected)


def test_mosaic_concatenated_with_xarray_then_cropped(survey: Path, survey_cli, rgb_model) -> None:
    mosaic = rioxarray.open_rasterio(survey, chunks={"y": 320, "x": 320})
    left, right = mosaic.isel(x=slice(0, 250)), mosaic.isel(x=slice(250, None))
    joined = xr.concat([left, right], dim="x").isel(y=slice(100, 540), x=slice(60, 600))
    classes = geoseg.segment(joined, rgb_model)
    # A crop is a smaller raster with its own window grid, so compare with `geoseg infer` on the same crop.
    direct = geoseg.segment(mosaic.isel(y=slice(100, 540), x=slice(60, 600)).chunk({"y": 440, "x": 540}), rgb_model)
    assert classes.rio.transform() == direct.rio.transform()
    assert np.array_equal(classes.values, direct.values)


def test_synchronous_scheduler_and_a_distributed_cluster_give_the_same_map(survey: Path, rgb_model) -> None:
    from distributed import Client, LocalCluster

    mosaic = rioxarray.open_rasterio(survey, chunks={"y": 256, "x": 256}).isel(y=slice(0, 512), x=slice(0, 512))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with dask.config.set(scheduler="synchronous"):  # blocks run in this thread, with one torch thread each
            synchronous = geoseg.segment(mosaic, rgb_model).values
        assert torch.get_num_threads() == 2  # and the caller's setting is given back
    finally:
        torch.set_num_threads(threads)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster):
        distributed = geoseg.segment(mosaic, rgb_model).compute().values
    assert len(np.unique(synchronous)) > 1
    assert np.array_equal(distributed, synchronous)


def test_vectorize_gives_the_polygons_geoseg_vectorize_writes(tmp_path: Path, survey: Path, survey_cli, rgb_model):
    classes = geoseg.segment(rioxarray.open_rasterio(survey, chunks={"y": 320, "x": 320}), rgb_model)
    frame = geoseg.vectorize(classes, rgb_model, min_area=0.05)
    written = vectorize_class_map(survey_cli[0], tmp_path / "p.gpkg", rgb_model.classes, min_area=0.05)
    import geopandas as gpd

    expected = gpd.read_file(written.path)
    assert list(frame.columns) == ["class_id", "class_name", "area", "area_m2", "geometry"]
    assert frame.crs == expected.crs == rasterio.open(survey).crs
    assert len(frame) == written.n_polygons > 0
    assert set(frame.class_name) <= {c.name for c in rgb_model.classes}
    for class_id in set(expected.class_id):
        mine = shapely.union_all(frame.geometry[frame.class_id == class_id].values)
        theirs = shapely.union_all(expected.geometry[expected.class_id == class_id].values)
        assert mine.symmetric_difference(theirs).area == pytest.approx(0.0, abs=1e-9)


def test_change_and_landscape_of_class_map_arrays_are_the_commands_numbers(survey_cli, tmp_path: Path) -> None:
    """``geoseg.change`` counts what `geoseg change` counts (here against a copy with a known patch changed,
    on a grid twice as coarse), and ``geoseg.landscape`` gives pylandstats' metrics, named from the map's
    own class table."""
    import pylandstats

    import geoseg.change_maps  # importing the modules must not hide the API's functions
    import geoseg.landscape_metrics

    assert callable(geoseg.change) and callable(geoseg.landscape)
    classes = rioxarray.open_rasterio(survey_cli[0]).squeeze("band", drop=True)
    ids = classes.values
    changed = classes.copy(data=np.where(np.arange(ids.shape[0])[:, None] < 64, np.uint8(3), ids))
    matrix = geoseg.change(classes, changed)
    table = {c["id"]: c["name"] for c in json.loads(classes.attrs["GEOSEG_CLASSES"])}
    assert list(matrix.index) == [table[i] for i in sorted(set(np.unique(ids)) - {255})]
    valid = ids != 255
    after = np.where(np.arange(ids.shape[0])[:, None] < 64, 3, ids)
    for a in sorted(set(np.unique(ids)) - {255}):
        for b in sorted(set(np.unique(ids)) - {255}):
            assert matrix.loc[table[a], table[b]] == int(((ids == a) & (after == b) & valid).sum())
    coarse = classes.rio.reproject(classes.rio.crs, resolution=2 * abs(classes.rio.resolution()[0]),
                                   resampling=rasterio.enums.Resampling.nearest)  # fmt: skip
    on_fine_grid = geoseg.change(classes, coarse).to_numpy()  # the coarse map read onto the finer grid
    assert 0.99 * valid.sum() <= on_fine_grid.sum() <= valid.sum() and np.trace(on_fine_grid) > 0.5 * valid.sum()
    metrics = geoseg.landscape(classes)
    res = abs(classes.rio.resolution()[0])
    expected = pylandstats.Landscape(np.where(valid, ids, 255).astype(np.uint8), res=(res, res), nodata=255)
    reference = expected.compute_class_metrics_df(metrics=["number_of_patches", "edge_density"])
    for _, row in metrics.iterrows():
        assert row["class"] == table[row["class_id"]]
        assert row["number_of_patches"] == reference.loc[row["class_id"], "number_of_patches"]
        assert row["edge_density"] == pytest.approx(reference.loc[row["class_id"], "edge_density"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda da: da.isel(band=0), "(band, y, x)"),
        (lambda da: da.isel(band=[0, 1]), "reads bands [1, 2, 3]"),
        (lambda da: xr.DataArray(da.values, dims=da.dims, coords={"x": da.x, "y": da.y}), "no CRS"),
        (lambda da: da.astype(bool), "holds bool"),
    ],
    ids=["2-D", "too few bands", "no CRS", "not numbers"],
)
def test_wrong_arrays_get_a_clear_value_error(survey: Path, rgb_model, change, message: str) -> None:
    mosaic = rioxarray.open_rasterio(survey).isel(y=slice(0, 64), x=slice(0, 64))
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        geoseg.segment(change(mosaic), rgb_model)
    assert isinstance(err.value, GeoSegError)  # the CLI's error hierarchy too


def test_an_array_built_without_rioxarray_gets_the_real_reason(rgb_model) -> None:
    """A caller who never imported rioxarray (plain xarray, y/x dims) hears what is wrong (no CRS), not that
    its y and x dimensions are missing."""
    script = (
        "import numpy as np, xarray as xr, geoseg\n"
        "da = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=('band', 'y', 'x'),\n"
        "                  coords={'y': np.arange(64.0)[::-1], 'x': np.arange(64.0)})\n"
        f"try:\n    geoseg.segment(da, geoseg.load_model({str(rgb_model.path)!r}))\n"
        "except ValueError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "no CRS" in result.stdout, result.stdout + result.stderr


def test_wrong_settings_and_models_are_refused(survey: Path, rgb_model) -> None:
    mosaic = rioxarray.open_rasterio(survey).isel(y=slice(0, 64), x=slice(0, 64))
    with pytest.raises(ValueError, match="overlap must be at least 0 and less than the tile"):
        geoseg.segment(mosaic, rgb_model, overlap=128)
    with pytest.raises(ValueError, match="tile must be 32-4096 px"):
        geoseg.segment(mosaic, rgb_model, tile=0)
    with pytest.raises(GeoSegError, match="precision must be one of"):
        geoseg.segment(mosaic, rgb_model, precision="fp8")
    with pytest.raises(TypeError, match=r"geoseg\.load_model"):
        geoseg.segment(mosaic, str(rgb_model.path))  # type: ignore[call-overload]
    with pytest.raises(GeoSegError, match="bundle not found"):
        geoseg.load_model(Path("no_such_bundle"))


def test_import_geoseg_stays_cheap() -> None:
    code = "import sys, geoseg, geoseg.cli; print(sorted({'torch', 'xarray', 'dask'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_the_readme_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Python API (xarray)") :]
    example = section[section.index("```python\n") + len("```python\n") : section.index("```\n", 10)]
    make_survey(tmp_path / "demo_output" / "plot_a", size=256, seed=0)
    make_random_bundle(tmp_path / "demo_output" / "model", [1, 2, 3], n_classes=4, tile=128, overlap=16)
    run = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "class 1" in run.stdout
    with rasterio.open(tmp_path / "plot_a_classes.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.crs is not None
