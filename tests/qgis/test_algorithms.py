"""The Processing algorithms on real GeoTIFFs, with geoseg really running as a subprocess."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import processing
import pytest
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from conftest import leftovers, shared_data

NODATA = 255


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what the algorithm reported, as the Processing dialog's log would show it."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[str] = []
        self.console: list[str] = []
        self.progress_values: list[float] = []
        self.progressChanged.connect(self.progress_values.append)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)
        super().pushInfo(info)

    def pushConsoleInfo(self, info: str) -> None:
        self.console.append(info)
        super().pushConsoleInfo(info)


class CancelAtFirstProgress(RecordingFeedback):
    """Presses Cancel as soon as geoseg reports its first progress line, as a user would mid-run."""

    def __init__(self) -> None:
        super().__init__()
        self.progressChanged.connect(lambda _: self.cancel())


@pytest.fixture(scope="module")
def mosaic() -> Path:
    return shared_data("building_tiles", "tiled_image_1.tif")


@pytest.fixture(scope="module")
def segmented(provider, bundle: Path, mosaic: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("segment")
    feedback = RecordingFeedback()
    results = processing.run(
        "geoseg:segment",
        {"INPUT": str(mosaic), "MODEL": str(bundle / "geoseg.json"), "OUTPUT": str(out / "classes.tif"),
         "POLYGONS": str(out / "polygons.gpkg"), "CONFIDENCE": str(out / "confidence.tif")},
        feedback=feedback,
    )  # fmt: skip
    return {"results": results, "folder": out, "feedback": feedback}


def test_segment_writes_a_class_raster_on_the_input_grid_with_the_bundles_palette(segmented, mosaic: Path) -> None:
    source = QgsRasterLayer(str(mosaic), "mosaic")
    classes = QgsRasterLayer(segmented["results"]["OUTPUT"], "classes")
    assert classes.isValid()
    assert (classes.width(), classes.height()) == (source.width(), source.height())
    assert classes.extent() == source.extent()
    assert classes.crs() == source.crs()
    assert classes.renderer().type() == "paletted"
    palette = {c.value: (c.label, c.color.name()) for c in classes.renderer().classes()}
    assert palette == {0: ("background", "#d2b48c"), 1: ("building", "#b22222")}
    stats = classes.dataProvider().bandStatistics(1)
    assert stats.minimumValue >= 0 and stats.maximumValue <= 1
    confidence = QgsRasterLayer(segmented["results"]["CONFIDENCE"], "confidence")
    assert (confidence.width(), confidence.height()) == (source.width(), source.height())
    del source, classes, confidence


def test_segment_writes_polygons_in_the_input_crs_styled_by_class(segmented, mosaic: Path) -> None:
    source = QgsRasterLayer(str(mosaic), "mosaic")
    polygons = QgsVectorLayer(segmented["results"]["POLYGONS"], "polygons", "ogr")
    assert polygons.isValid() and polygons.featureCount() > 0
    assert polygons.crs() == source.crs()
    assert {"class_id", "class_name", "area"} <= set(polygons.fields().names())
    assert {f["class_name"] for f in polygons.getFeatures()} <= {"background", "building"}
    assert polygons.renderer().type() == "categorizedSymbol"  # the GeoPackage's default style
    assert {c.label() for c in polygons.renderer().categories()} == {"background", "building"}
    areas = json.loads(Path(segmented["results"]["AREAS"]).read_text())
    assert areas, "the per-class areas JSON is empty"
    assert leftovers(segmented["folder"]) == []
    del source, polygons


def test_segment_drives_the_progress_bar_from_geosegs_json_lines(segmented) -> None:
    values = segmented["feedback"].progress_values
    assert values and values[-1] == pytest.approx(100.0)
    assert values == sorted(values), "progress went backwards"
    started = [i for i in segmented["feedback"].infos if i.startswith("geoseg started")]
    assert started, segmented["feedback"].infos


def test_results_load_as_layers_named_after_the_input(provider, bundle: Path, mosaic: Path, tmp_path: Path) -> None:
    project = QgsProject.instance()
    try:
        # Temporary outputs: the Processing dialog's default
        results = processing.runAndLoadResults(
            "geoseg:segment",
            {"INPUT": str(mosaic), "MODEL": str(bundle), "OUTPUT": "TEMPORARY_OUTPUT", "POLYGONS": "TEMPORARY_OUTPUT"},
        )
        assert results["OUTPUT"].endswith(".tif") and results["POLYGONS"].endswith(".gpkg")
        [classes] = project.mapLayersByName(f"{mosaic.stem} classes")
        [polygons] = project.mapLayersByName(f"{mosaic.stem} polygons")
        assert classes.renderer().type() == "paletted"
        assert [c.label for c in classes.renderer().classes()] == ["background", "building"]
        assert polygons.renderer().type() == "categorizedSymbol"
        del classes, polygons
    finally:
        project.removeAllMapLayers()


def test_area_of_interest_from_a_memory_layer_limits_the_class_map(provider, bundle, mosaic, tmp_path) -> None:
    source = QgsRasterLayer(str(mosaic), "mosaic")
    extent = source.extent()
    west_half = QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.center().x(), extent.yMaximum())
    aoi = QgsVectorLayer(f"Polygon?crs={source.crs().authid()}", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(west_half))
    aoi.dataProvider().addFeatures([feature])
    results = processing.run(
        "geoseg:segment",
        {"INPUT": str(mosaic), "MODEL": str(bundle), "AOI": aoi, "OUTPUT": str(tmp_path / "c.tif"), "POLYGONS": None},
    )  # fmt: skip
    classes = QgsRasterLayer(results["OUTPUT"], "classes")
    block = classes.dataProvider().block(1, extent, classes.width(), classes.height())
    width = classes.width()
    east = [block.value(row, col) for row in range(0, classes.height(), 16) for col in range(width // 2 + 2, width, 16)]
    west = [block.value(row, col) for row in range(0, classes.height(), 16) for col in range(0, width // 2 - 2, 16)]
    assert all(block.isNoData(row, col) for row in range(0, classes.height(), 16)
               for col in range(width // 2 + 2, width, 16)), east[:10]  # fmt: skip
    assert all(v in (0, 1) for v in west)
    assert not (tmp_path / "p.gpkg").exists()
    del source, aoi, classes, block


def test_cancel_stops_geoseg_and_leaves_no_output(provider, bundle: Path, mosaic: Path, tmp_path: Path) -> None:
    feedback = CancelAtFirstProgress()
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run(
            "geoseg:segment",
            {"INPUT": str(mosaic), "MODEL": str(bundle), "BLOCK_SIZE": 64, "OUTPUT": str(tmp_path / "c.tif"),
             "POLYGONS": str(tmp_path / "p.gpkg")},
            feedback=feedback,
        )  # fmt: skip
    assert feedback.progress_values, "cancelled before geoseg reported any progress"
    assert feedback.progress_values[-1] < 90, "geoseg had already finished the class map"
    [pid] = [int(m.group(1)) for i in feedback.infos if (m := re.search(r"process (\d+)", i))]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # geoseg is gone, not left running in the background
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_wrong_bundle_shows_geosegs_one_line_error(provider, mosaic: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_bundle"
    out = str(tmp_path / "c.tif")
    with pytest.raises(QgsProcessingException) as failure:
        processing.run("geoseg:segment", {"INPUT": str(mosaic), "MODEL": str(missing), "OUTPUT": out})
    message = str(failure.value)
    assert message.startswith("geoseg: error:") and str(missing) in message and "bundle" in message
    assert "\n" not in message and "Traceback" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_bundle_for_other_bands_is_refused_readably(provider, bundle: Path, tmp_path: Path) -> None:
    single_band = shared_data("spacenet_atlanta", "sample_geotiff.tif")
    with pytest.raises(QgsProcessingException, match=r"^geoseg: error: .*band"):
        processing.run("geoseg:segment", {"INPUT": str(single_band), "MODEL": str(bundle),
                                          "OUTPUT": str(tmp_path / "c.tif")})  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_vectorize_class_raster_uses_the_class_maps_own_names(segmented, provider, tmp_path: Path) -> None:
    class_map = segmented["results"]["OUTPUT"]
    raw = processing.run("geoseg:vectorize", {"INPUT": class_map, "SIEVE": 0, "OUTPUT": str(tmp_path / "raw.gpkg")})
    results = processing.run(
        "geoseg:vectorize", {"INPUT": class_map, "SIEVE": 0, "MIN_AREA": 1.0, "OUTPUT": str(tmp_path / "v.gpkg")}
    )
    polygons = QgsVectorLayer(results["OUTPUT"], "v", "ogr")
    everything = QgsVectorLayer(raw["OUTPUT"], "raw", "ogr")
    original = QgsVectorLayer(segmented["results"]["POLYGONS"], "p", "ogr")  # sieved at 9 px, the default
    assert 0 < polygons.featureCount() < everything.featureCount()  # small regions dropped
    assert original.featureCount() <= everything.featureCount()
    assert min(f["area"] for f in polygons.getFeatures()) >= 1.0
    assert polygons.crs() == original.crs()
    assert {c.label() for c in polygons.renderer().categories()} <= {"background", "building"}
    del polygons, everything, original


def test_evaluate_against_a_label_raster_reports_miou(segmented, provider, tmp_path: Path) -> None:
    labels = shared_data("building_tiles", "tiled_label_1.tif")
    results = processing.run(
        "geoseg:evaluate",
        {"PREDICTION": segmented["results"]["OUTPUT"], "LABELS": str(labels), "OUTPUT": str(tmp_path / "s.json")},
    )
    scores = json.loads(Path(results["OUTPUT"]).read_text())
    assert results["MIOU"] == pytest.approx(scores["miou"])
    assert 0.0 <= scores["miou"] <= 1.0
    assert {c["class_id"] for c in scores["per_class"]} >= {1}


def test_executable_setting_that_cannot_run_says_where_to_fix_it(provider, bundle, mosaic, tmp_path) -> None:
    from processing.core.ProcessingConfig import ProcessingConfig

    not_a_program = tmp_path / "geoseg"
    not_a_program.write_text("not a program")  # e.g. a deleted environment's leftover
    ProcessingConfig.setSettingValue("GEOSEG_EXECUTABLE", str(not_a_program))
    try:
        with pytest.raises(QgsProcessingException, match=r"cannot run.*Providers → geoseg"):
            processing.run("geoseg:segment", {"INPUT": str(mosaic), "MODEL": str(bundle),
                                              "OUTPUT": str(tmp_path / "c.tif")})  # fmt: skip
    finally:
        ProcessingConfig.setSettingValue("GEOSEG_EXECUTABLE", "")
    assert not (tmp_path / "c.tif").exists()


@pytest.fixture(scope="module")
def trained(provider, mosaic: Path, tmp_path_factory) -> dict:
    """Train from layers, 2 steps from scratch on the building tile and its label raster."""
    folder = tmp_path_factory.mktemp("train")
    feedback = RecordingFeedback()
    results = processing.run(
        "geoseg:train",
        {"IMAGES": [str(mosaic)], "LABELS": str(shared_data("building_tiles", "tiled_label_1.tif")),
         "CLASSES": "0=background\n1=building", "ENCODER": "resnet18", "WEIGHTS": 1, "TILE_SIZE": 128,
         "BATCH_SIZE": 2, "EPOCHS": 1, "MAX_STEPS": 2, "DEVICE": 1, "OUTPUT": str(folder / "model")},
        feedback=feedback,
    )  # fmt: skip
    return {"results": results, "folder": folder, "feedback": feedback}


def test_train_from_layers_writes_a_bundle_that_segment_raster_uses(trained, mosaic: Path, tmp_path: Path) -> None:
    out = trained["folder"] / "model"
    assert Path(trained["results"]["OUTPUT"]) == out
    meta = json.loads((out / "geoseg.json").read_text())
    assert [(c["id"], c["name"]) for c in meta["classes"]] == [(0, "background"), (1, "building")]
    assert meta["tile_size"] == 128
    config = json.loads((out / "train_config.yaml").read_text())
    labels = shared_data("building_tiles", "tiled_label_1.tif")
    assert config["data"]["labels"] == str(labels) and config["model"]["weights"] is None
    assert (trained["folder"] / "model.train").is_dir()
    assert trained["feedback"].progress_values[-1] == pytest.approx(100.0)
    assert leftovers(trained["folder"]) == []
    # the training log shows the U-Net beside the pixel-classifier yardstick, as the bundle records them
    [comparison] = [line for line in trained["feedback"].console if line.startswith("validation mIoU: U-Net")]
    baseline = meta["metrics"]["baseline"]["miou"]
    assert f"pixel classifier {baseline:.3f}" in comparison, comparison

    segmented = processing.run(
        "geoseg:segment", {"INPUT": str(mosaic), "MODEL": str(out), "OUTPUT": str(tmp_path / "c.tif"), "POLYGONS": None}
    )
    classes = QgsRasterLayer(segmented["OUTPUT"], "classes")
    assert [c.label for c in classes.renderer().classes()] == ["background", "building"]
    del classes


def darkened_copy(source: Path, target: Path, factor: float) -> Path:
    """The tile as an underexposing camera would record it, written with GDAL (QGIS's own bindings)."""
    from osgeo import gdal

    gdal.Translate(str(target), str(source), scaleParams=[[0, 255, 0, round(255 * factor)]], outputType=gdal.GDT_Byte)
    return target


def test_check_drift_flags_a_darker_camera_and_not_the_training_tile(trained, mosaic: Path, tmp_path: Path) -> None:
    model = trained["results"]["OUTPUT"]
    same = processing.run("geoseg:drift", {"INPUT": str(mosaic), "MODEL": model, "OUTPUT": str(tmp_path / "a.json")})
    assert same["DRIFTED"] is False, same["VERDICT"]
    dark = darkened_copy(mosaic, tmp_path / "dark.tif", 0.5)
    shifted = processing.run(
        "geoseg:drift",
        {"INPUT": str(dark), "MODEL": model, "OUTPUT": str(tmp_path / "b.json"), "PLOT": str(tmp_path / "b.png")},
    )
    assert shifted["DRIFTED"] is True, shifted["VERDICT"]
    assert json.loads(Path(shifted["OUTPUT"]).read_text())["drifted"] is True
    assert Path(shifted["PLOT"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(tmp_path) == []


def test_segment_with_a_drift_remedy_records_it_in_the_class_map(trained, mosaic: Path, tmp_path: Path) -> None:
    from osgeo import gdal

    dark = darkened_copy(mosaic, tmp_path / "dark.tif", 0.5)
    results = processing.run(
        "geoseg:segment",
        {"INPUT": str(dark), "MODEL": trained["results"]["OUTPUT"], "REMEDY": 2, "OUTPUT": str(tmp_path / "c.tif"),
         "POLYGONS": None},
    )  # fmt: skip
    tag = json.loads(gdal.Open(results["OUTPUT"]).GetMetadataItem("GEOSEG_INPUT"))
    assert tag["remedy"] == "histogram"


def test_train_needs_classes_for_raster_labels(provider, mosaic: Path, tmp_path: Path) -> None:
    labels = shared_data("building_tiles", "tiled_label_1.tif")
    with pytest.raises(QgsProcessingException, match="Classes: list the label values"):
        processing.run("geoseg:train", {"IMAGES": [str(mosaic)], "LABELS": str(labels), "OUTPUT": str(tmp_path / "m")})
    with pytest.raises(QgsProcessingException, match="'background' is not value=name"):
        processing.run("geoseg:train", {"IMAGES": [str(mosaic)], "LABELS": str(labels), "CLASSES": "background",
                                        "OUTPUT": str(tmp_path / "m")})  # fmt: skip
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_change_between_class_maps_loads_the_change_map_and_its_table(segmented, provider, tmp_path: Path) -> None:
    """A class map against itself: every transition is persistence; the change map and table load as layers."""
    project = QgsProject.instance()
    classes = segmented["results"]["OUTPUT"]
    try:
        results = processing.runAndLoadResults(
            "geoseg:change", {"BEFORE": classes, "AFTER": classes, "OUTPUT": str(tmp_path / "change")}
        )
        document = json.loads((tmp_path / "change" / "transitions.json").read_text())
        pixels = document["pixels"]
        assert sum(map(sum, pixels)) == sum(pixels[i][i] for i in range(len(pixels))) > 0
        [change_map] = project.mapLayersByName("change map")
        [table] = project.mapLayersByName("transitions")
        assert change_map.renderer().type() == "paletted"  # the colour table geoseg wrote
        assert table.featureCount() == len(pixels) ** 2
        assert results["CHANGE_MAP"].endswith("change.tif")
        del change_map, table
    finally:
        project.removeAllMapLayers()
    assert leftovers(tmp_path) == []


def test_landscape_metrics_per_zone_from_a_memory_layer(segmented, provider, tmp_path: Path) -> None:
    """Two plots drawn in QGIS (a memory layer): one block of rows per plot, in the table that loads."""
    classes = QgsRasterLayer(segmented["results"]["OUTPUT"], "classes")
    extent = classes.extent()
    middle = (extent.xMinimum() + extent.xMaximum()) / 2
    plots = QgsVectorLayer(f"Polygon?crs={classes.crs().authid()}&field=plot:string", "plots", "memory")
    for name, box in (
        ("west", QgsRectangle(extent.xMinimum(), extent.yMinimum(), middle, extent.yMaximum())),
        ("east", QgsRectangle(middle, extent.yMinimum(), extent.xMaximum(), extent.yMaximum())),
    ):
        feature = QgsFeature(plots.fields())
        feature.setAttribute("plot", name)
        feature.setGeometry(QgsGeometry.fromRect(box))
        plots.dataProvider().addFeature(feature)
    results = processing.run(
        "geoseg:landscape",
        {"INPUT": segmented["results"]["OUTPUT"], "ZONES": plots, "ZONE_FIELD": "plot",
         "OUTPUT": str(tmp_path / "metrics.csv")},
    )  # fmt: skip
    table = QgsVectorLayer(results["OUTPUT"], "metrics", "ogr")
    zones = {f["zone"] for f in table.getFeatures()}
    assert zones == {"west", "east"}
    assert "edge_density" in table.fields().names() and "convex_edge_share" in table.fields().names()
    del table, plots, classes
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("table", ["good", "damaged"])
def test_the_plugins_class_table_reader_agrees_with_geosegs(segmented, tmp_path: Path, table: str) -> None:
    """The plugin cannot import geoseg, so it reads the class map's GEOSEG_CLASSES tag itself: on the same
    file it must give what geoseg's own lenient reader (io/classmap.py, class_names) gives."""
    import shutil
    import subprocess

    from geoseg_qgis.styling import class_map_classes
    from osgeo import gdal

    from conftest import GEOSEG_PYTHON

    path = tmp_path / "classes.tif"
    shutil.copy(segmented["results"]["OUTPUT"], path)
    if table == "damaged":
        dataset = gdal.Open(str(path), gdal.GA_Update)
        dataset.SetMetadataItem("GEOSEG_CLASSES", "[{'id': 1")  # not JSON: geoseg falls back to band tags
        dataset = None
    script = (
        "import json, sys, rasterio\nfrom geoseg.io.classmap import class_names\n"
        "with rasterio.open(sys.argv[1]) as ds:\n    print(json.dumps(class_names(ds)))\n"
    )
    run = subprocess.run([str(GEOSEG_PYTHON), "-c", script, str(path)], capture_output=True, text=True, check=True)
    geosegs = {int(k): v for k, v in json.loads(run.stdout).items()}
    plugins = {c.id: c.name for c in class_map_classes(str(path))}
    assert plugins == geosegs and len(plugins) == 2  # background, building: from the band tags when damaged


def test_suggest_where_to_label_loads_ranked_windows_off_the_labels(provider, bundle, mosaic, tmp_path) -> None:
    labels = QgsRasterLayer(str(shared_data("building_tiles", "tiled_label_1.tif")), "labels")  # roofs = 1
    project = QgsProject.instance()
    try:
        feedback = RecordingFeedback()
        results = processing.runAndLoadResults(
            "geoseg:suggest",
            {"INPUT": str(mosaic), "MODEL": str(bundle), "LABELS": [labels], "COUNT": 3, "SIZE": "48",
             "SEED": 2, "OUTPUT": str(tmp_path / "to_label.gpkg")},
            feedback=feedback,
        )  # fmt: skip
        assert results["OUTPUT"] == str(tmp_path / "to_label.gpkg")
        [windows] = project.mapLayersByName(f"{mosaic.stem} to label")
        assert windows.isValid() and windows.featureCount() == 3
        assert windows.crs() == QgsRasterLayer(str(mosaic), "m").crs()
        features = sorted(windows.getFeatures(), key=lambda f: f["rank"])
        assert [f["rank"] for f in features] == [1, 2, 3]
        scores = [f["score"] for f in features]
        assert scores == sorted(scores, reverse=True)
        pixel = labels.rasterUnitsPerPixelX()
        for feature in features:
            box = feature.geometry().boundingBox()
            assert box.width() == pytest.approx(48 * pixel)
            # no roof pixel inside: sample the label raster at every pixel centre of the window
            provider_ = labels.dataProvider()
            for i in range(48):
                for j in range(0, 48, 4):
                    x = box.xMinimum() + (j + 0.5) * pixel
                    y = box.yMaximum() - (i + 0.5) * pixel
                    value, ok = provider_.sample(QgsPointXY(x, y), 1)
                    assert not (ok and value == 1)  # 0, background, is tagged nodata: not ok
        assert feedback.progress_values[-1] == pytest.approx(100.0)
        assert leftovers(tmp_path) == []
        del windows, features
    finally:
        project.removeAllMapLayers()
        del labels
