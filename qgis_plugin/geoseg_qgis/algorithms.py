"""The Processing algorithms: each builds a geoseg command line, runs it, and publishes what it wrote.

geoseg writes into a hidden staging folder beside the destination; only a run that finishes moves its
files to the names the user chose. A cancelled or failed run removes the staging folder, so nothing
half-written is ever left where a user would look.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputBoolean,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from .bundle import BundleClass, bundle_classes, bundle_path
from .runner import GeoSegCancelled, GeoSegFailed, GeoSegNotFound, resolve_command, run_geoseg
from .settings import executable_setting
from .styling import ResultStyler, class_map_classes, save_default_style, save_default_vector_style

DEVICES = ["auto", "cpu", "cuda"]
REMEDIES = ["none", "mosaic-stats", "histogram"]
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
CONNECTIVITY = ["4", "8"]


class GeoSegAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: run geoseg with progress and cancel, stage outputs, fail with geoseg's message."""

    # Share of the progress bar each geoseg stage fills; stages not listed fill all of it.
    stage_ranges: ClassVar[dict[str, tuple[float, float]]] = {}

    def createInstance(self) -> GeoSegAlgorithm:
        return type(self)()

    def tr(self, text: str) -> str:
        return text

    def run_geoseg(self, args: list[str], feedback: QgsProcessingFeedback) -> None:
        try:
            command = resolve_command(executable_setting())
        except GeoSegNotFound as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushCommandInfo(" ".join([*command, *args]))
        stage_shown: list[str] = []

        def progress(stage: str, done: int, total: int) -> None:
            if not stage_shown or stage_shown[-1] != stage:
                stage_shown.append(stage)
                feedback.setProgressText(f"geoseg: {stage}")
            start, end = self.stage_ranges.get(stage, (0.0, 100.0))
            feedback.setProgress(start + (end - start) * done / max(total, 1))

        try:
            run_geoseg(command, args, on_progress=progress, on_message=feedback.pushConsoleInfo,
                       is_cancelled=feedback.isCanceled,
                       on_start=lambda pid: feedback.pushInfo(f"geoseg started (process {pid})"))  # fmt: skip
        except (GeoSegFailed, GeoSegNotFound, GeoSegCancelled) as exc:
            raise QgsProcessingException(str(exc)) from None


class SegmentRaster(GeoSegAlgorithm):
    INPUT, MODEL, AOI = "INPUT", "MODEL", "AOI"
    TILE, OVERLAP, BATCH_SIZE, BLOCK_SIZE = "TILE", "OVERLAP", "BATCH_SIZE", "BLOCK_SIZE"
    DEVICE, PRECISION, MIN_AREA, SIMPLIFY, REMEDY = "DEVICE", "PRECISION", "MIN_AREA", "SIMPLIFY", "REMEDY"
    SIEVE = "SIEVE"
    OUTPUT, POLYGONS, CONFIDENCE, AREAS = "OUTPUT", "POLYGONS", "CONFIDENCE", "AREAS"
    stage_ranges: ClassVar[dict[str, tuple[float, float]]] = {"segment": (0.0, 90.0), "polygons": (90.0, 100.0)}

    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:
        return "Segment raster"

    def shortHelpString(self) -> str:
        return (
            "Runs a geoseg model bundle over a raster layer (an orthomosaic of any size) and loads the class map "
            "and, if asked, its polygons, coloured and named by the bundle's classes.<br><br>"
            "<b>Model bundle</b>: the folder written by <i>geoseg train</i>, or the path of a zipped bundle. "
            "The raster must be a file (GeoTIFF, VRT…) with the bands the bundle was trained on.<br>"
            "<b>Area of interest</b>: outside it the class map is nodata.<br>"
            "<b>Drift remedy</b>: for imagery from another camera, season or light (run <i>Check drift</i> "
            "first): <i>histogram</i> matches each band's histogram to the training data's, <i>mosaic-stats</i> "
            "normalizes each band with the mosaic's own mean and spread.<br>"
            "Tile, overlap and batch size default to the bundle's; the result never depends on block size.<br><br>"
            "geoseg runs as a separate program (Processing → Options → Providers → geoseg sets which), so QGIS "
            "stays responsive; Cancel stops it and leaves no output."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster (orthomosaic)"))
        self.addParameter(_model_parameter(self.MODEL, optional=False))
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.AOI, "Area of interest", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(_integer(self.TILE, "Tile size (px; default: the bundle's)", None, 32))
        self.addParameter(_integer(self.OVERLAP, "Tile overlap (px; default: the bundle's)", None, 0))
        self.addParameter(_integer(self.BATCH_SIZE, "Batch size (default: 1 on CPU, 8 on GPU)", None, 1))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0))
        self.addParameter(_remedy_parameter(self.REMEDY))
        advanced = [
            QgsProcessingParameterEnum(self.PRECISION, "Precision", PRECISIONS, defaultValue=0),
            _integer(self.BLOCK_SIZE, "Block size (px; memory per worker)", 1024, 64),
            _integer(self.SIEVE, SIEVE_LABEL, SIEVE_DEFAULT, 0),
            _distance(self.MIN_AREA, "Drop polygons smaller than (CRS units², m² if projected)"),
            _distance(self.SIMPLIFY, "Simplify polygons (tolerance, CRS units)"),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Class map"))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.POLYGONS, "Polygons", QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=True
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.CONFIDENCE, "Confidence (percent)", optional=True, createByDefault=False
            )
        )
        self.addOutput(QgsProcessingOutputFile(self.AREAS, "Per-class areas (JSON)"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        source = _file_source(layer, "Raster")
        model = bundle_path(self.parameterAsFile(parameters, self.MODEL, context))
        classes_out = _destination(self.parameterAsOutputLayer(parameters, self.OUTPUT, context), ".tif", "Class map")
        polygons_out = _destination(self.parameterAsOutputLayer(parameters, self.POLYGONS, context), ".gpkg",
                                    "Polygons", required=False)  # fmt: skip
        confidence_out = _destination(self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context), ".tif",
                                      "Confidence", required=False)  # fmt: skip
        stem = Path(source).stem
        with _Staging(classes_out) as staging:
            args = ["infer", source, "--model", model, "--out-dir", str(staging.folder), "--progress", "json",
                    "--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                    "--precision", PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
                    "--remedy", REMEDIES[self.parameterAsEnum(parameters, self.REMEDY, context)],
                    "--block-size", str(self.parameterAsInt(parameters, self.BLOCK_SIZE, context)),
                    "--sieve", str(self.parameterAsInt(parameters, self.SIEVE, context)),
                    "--min-area", repr(self.parameterAsDouble(parameters, self.MIN_AREA, context)),
                    "--simplify", repr(self.parameterAsDouble(parameters, self.SIMPLIFY, context))]  # fmt: skip
            for name, option in ((self.TILE, "--tile"), (self.OVERLAP, "--overlap"), (self.BATCH_SIZE, "--batch-size")):
                if parameters.get(name) is not None:
                    args += [option, str(self.parameterAsInt(parameters, name, context))]
            aoi = self.parameterAsVectorLayer(parameters, self.AOI, context)
            if aoi is not None:
                args += ["--aoi", staging.export_polygons(aoi, context)]
            if not polygons_out:
                args.append("--no-polygons")
            if confidence_out:
                args.append("--confidence")
            self.run_geoseg(args, feedback)
            areas_out = str(Path(classes_out).with_name(Path(classes_out).stem + "_areas.json"))
            staging.publish(f"{stem}_classes.tif", classes_out)
            staging.publish(f"{stem}_areas.json", areas_out)
            if polygons_out:
                staging.publish(f"{stem}_polygons.gpkg", polygons_out)
            if confidence_out:
                staging.publish(f"{stem}_confidence.tif", confidence_out)

        classes = bundle_classes(model)
        save_default_style(classes_out, classes)
        if polygons_out:
            save_default_vector_style(polygons_out, classes)
        ResultStyler.attach(context, classes_out, f"{layer.name()} classes", classes)
        ResultStyler.attach(context, polygons_out, f"{layer.name()} polygons", classes)
        ResultStyler.attach(context, confidence_out, f"{layer.name()} confidence", [])
        return {self.OUTPUT: classes_out, self.POLYGONS: polygons_out or None,
                self.CONFIDENCE: confidence_out or None, self.AREAS: areas_out}  # fmt: skip


class VectorizeClassRaster(GeoSegAlgorithm):
    INPUT, MODEL, SIEVE, MIN_AREA, SIMPLIFY, CONNECTIVITY, OUTPUT = (
        "INPUT", "MODEL", "SIEVE", "MIN_AREA", "SIMPLIFY", "CONNECTIVITY", "OUTPUT"
    )  # fmt: skip

    def name(self) -> str:
        return "vectorize"

    def displayName(self) -> str:
        return "Vectorize class raster"

    def shortHelpString(self) -> str:
        return (
            "Polygons from a class map: one polygon per connected region of a class, with class_id, class_name "
            "and area (m² in projected CRSs). Simplification keeps borders between classes shared. Class names "
            "and colours come from the model bundle if given, else from the class map's own table."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class map"))
        self.addParameter(_model_parameter(self.MODEL, optional=True))
        self.addParameter(_integer(self.SIEVE, SIEVE_LABEL, SIEVE_DEFAULT, 0))
        self.addParameter(_distance(self.MIN_AREA, "Drop polygons smaller than (CRS units², m² if projected)"))
        self.addParameter(_distance(self.SIMPLIFY, "Simplify (tolerance, CRS units)"))
        connect_by = ["edges (4)", "edges and corners (8)"]  # CONNECTIVITY, in words
        self.addParameter(QgsProcessingParameterEnum(self.CONNECTIVITY, "Pixels connect by", connect_by, False, 0))
        self.addParameter(
            QgsProcessingParameterVectorDestination(self.OUTPUT, "Polygons", QgsProcessing.TypeVectorPolygon)
        )

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        source = _file_source(layer, "Class map")
        out = _destination(self.parameterAsOutputLayer(parameters, self.OUTPUT, context), ".gpkg", "Polygons")
        model_value = self.parameterAsFile(parameters, self.MODEL, context)
        model = bundle_path(model_value) if model_value else ""
        with _Staging(out) as staging:
            connectivity = CONNECTIVITY[self.parameterAsEnum(parameters, self.CONNECTIVITY, context)]
            args = ["vectorize", source, "--out", str(staging.folder / "polygons.gpkg"), "--progress", "json",
                    "--sieve", str(self.parameterAsInt(parameters, self.SIEVE, context)),
                    "--min-area", repr(self.parameterAsDouble(parameters, self.MIN_AREA, context)),
                    "--simplify", repr(self.parameterAsDouble(parameters, self.SIMPLIFY, context)),
                    "--connectivity", connectivity]  # fmt: skip
            if model:
                args += ["--model", model]
            self.run_geoseg(args, feedback)
            staging.publish("polygons.gpkg", out)
        classes = bundle_classes(model) if model else class_map_classes(source)
        save_default_vector_style(out, classes)
        ResultStyler.attach(context, out, f"{layer.name()} polygons", classes)
        return {self.OUTPUT: out}


class EvaluateAgainstLabels(GeoSegAlgorithm):
    PREDICTION, LABELS, LABEL_FIELD, OUTPUT, MIOU = "PREDICTION", "LABELS", "LABEL_FIELD", "OUTPUT", "MIOU"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:
        return "Evaluate against labels"

    def shortHelpString(self) -> str:
        return (
            "Scores a class map against reference labels (a raster of class values, or polygons with a class "
            "field): per-class IoU, F1, precision and recall, and mIoU, counting only pixels labelled in the "
            "labels and valid in the class map. The table appears in the log; the scores are saved as JSON."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION, "Class map"))
        self.addParameter(QgsProcessingParameterMapLayer(self.LABELS, "Reference labels (raster or polygons)"))
        self.addParameter(
            QgsProcessingParameterString(self.LABEL_FIELD, "Class field (for polygon labels)", optional=True)
        )
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Scores", "JSON files (*.json)"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "mIoU"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        prediction = _file_source(self.parameterAsRasterLayer(parameters, self.PREDICTION, context), "Class map")
        labels = _file_source(self.parameterAsLayer(parameters, self.LABELS, context), "Reference labels")
        field = self.parameterAsString(parameters, self.LABEL_FIELD, context).strip()
        out = _destination(self.parameterAsFileOutput(parameters, self.OUTPUT, context), ".json", "Scores")
        with _Staging(out) as staging:
            args = ["evaluate", prediction, labels, "--json", str(staging.folder / "scores.json")]
            if field:
                args += ["--label-field", field]
            self.run_geoseg(args, feedback)
            staging.publish("scores.json", out)
        miou = json.loads(Path(out).read_text(encoding="utf-8")).get("miou")
        feedback.pushInfo(f"mIoU: {miou}")
        return {self.OUTPUT: out, self.MIOU: miou}


class TrainFromLayers(GeoSegAlgorithm):
    IMAGES, LABELS, LABEL_FIELD, CLASSES = "IMAGES", "LABELS", "LABEL_FIELD", "CLASSES"
    ENCODER, WEIGHTS, WEIGHTS_FILE, DEVICE = "ENCODER", "WEIGHTS", "WEIGHTS_FILE", "DEVICE"
    TILE_SIZE, BATCH_SIZE, EPOCHS, MAX_STEPS, OUTPUT = "TILE_SIZE", "BATCH_SIZE", "EPOCHS", "MAX_STEPS", "OUTPUT"
    WEIGHT_CHOICES: ClassVar[list[str]] = ["ImageNet (downloaded once, then cached)", "none (train from scratch)"]

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:
        return "Train from layers"

    def shortHelpString(self) -> str:
        return (
            "Trains a U-Net on orthomosaic layers and a label layer (polygons with a class field, or a raster of "
            "class values) and writes a model bundle folder for Segment raster. The training config geoseg used "
            "is saved in the bundle (train_config.yaml), so the run can be repeated with <i>geoseg train</i>; "
            "checkpoints and the metrics log go to <i>bundle</i>.train."
            "<br><br><b>Classes</b>: label value = name, one per line or comma separated (e.g. "
            "<i>1=bare soil, 2=crust</i>); other values are ignored. Left empty with polygon labels, every value "
            "of the class field becomes a class. Training can take hours on a CPU: <i>Maximum steps</i> makes a "
            "quick trial."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterMultipleLayers(self.IMAGES, "Orthomosaics", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMapLayer(self.LABELS, "Labels (polygons or a raster)"))
        self.addParameter(
            QgsProcessingParameterString(self.LABEL_FIELD, "Class field (for polygon labels)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterString(self.CLASSES, "Classes (value=name, …)", multiLine=True, optional=True)
        )
        self.addParameter(QgsProcessingParameterString(self.ENCODER, "Encoder", defaultValue="resnet34"))
        self.addParameter(QgsProcessingParameterEnum(self.WEIGHTS, "Encoder weights", self.WEIGHT_CHOICES, False, 0))
        self.addParameter(
            QgsProcessingParameterFile(self.WEIGHTS_FILE, "Encoder weights file (instead; offline use)", optional=True)
        )
        self.addParameter(_integer(self.TILE_SIZE, "Tile size (px; empty: fitted to the labels)", None, 32))
        self.addParameter(_integer(self.BATCH_SIZE, "Batch size", 8, 1))
        self.addParameter(_integer(self.EPOCHS, "Epochs (empty: steps fitted to the labelled area)", None, 1))
        self.addParameter(_integer(self.MAX_STEPS, "Maximum steps (a quick trial)", None, 1))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Model bundle"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        images = [_file_source(layer, "Orthomosaics") for layer in
                  self.parameterAsLayerList(parameters, self.IMAGES, context)]  # fmt: skip
        if not images:
            raise QgsProcessingException("Orthomosaics: choose at least one raster layer")
        labels_layer = self.parameterAsLayer(parameters, self.LABELS, context)
        labels = _file_source(labels_layer, "Labels")
        field = self.parameterAsString(parameters, self.LABEL_FIELD, context).strip()
        classes = parse_classes(self.parameterAsString(parameters, self.CLASSES, context))
        if not classes:
            classes = _field_values(labels_layer, field)
        out = os.path.normpath(self.parameterAsString(parameters, self.OUTPUT, context))
        if os.path.isdir(out) and os.listdir(out):
            raise QgsProcessingException(f"Model bundle: {out} is not empty; choose a new or empty folder")
        weights_file = self.parameterAsFile(parameters, self.WEIGHTS_FILE, context)
        weights = weights_file or ("imagenet" if self.parameterAsEnum(parameters, self.WEIGHTS, context) == 0 else None)
        data = {"images": images, "labels": labels, "classes": classes}
        if field:
            data["label_field"] = field
        config = {
            "data": data,
            "model": {"encoder": self.parameterAsString(parameters, self.ENCODER, context).strip(), "weights": weights},
            "train": {"batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context)},
        }  # fmt: skip
        for key, name in (("tile_size", self.TILE_SIZE), ("epochs", self.EPOCHS)):
            if parameters.get(name) is not None:  # else geoseg's recipe fits it to the labelled area
                config["train"][key] = self.parameterAsInt(parameters, name, context)
        with _Staging(out) as staging:
            config_path = staging.folder / "train_config.yaml"
            config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
            args = ["train", str(config_path), "--out", str(staging.folder / "bundle"), "--progress", "json",
                    "--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]]  # fmt: skip
            if parameters.get(self.MAX_STEPS) is not None:
                args += ["--max-steps", str(self.parameterAsInt(parameters, self.MAX_STEPS, context))]
            self.run_geoseg(args, feedback)
            staging.publish_folder("bundle", out)
            staging.publish("train_config.yaml", os.path.join(out, "train_config.yaml"))
            if (staging.folder / "bundle.train").is_dir() and not os.path.exists(f"{out}.train"):
                staging.publish_folder("bundle.train", f"{out}.train")  # checkpoints and the metrics log
        return {self.OUTPUT: out}


class ChangeBetweenClassMaps(GeoSegAlgorithm):
    BEFORE, AFTER, MODEL, OUTPUT, CHANGE_MAP, TRANSITIONS = (
        "BEFORE", "AFTER", "MODEL", "OUTPUT", "CHANGE_MAP", "TRANSITIONS"
    )  # fmt: skip

    def name(self) -> str:
        return "change"

    def displayName(self) -> str:
        return "Change between class maps"

    def shortHelpString(self) -> str:
        return (
            "What changed between two surveys of the same place: the later class map is read onto the earlier "
            "one's grid (nearest neighbour) and only pixels valid in both count. Writes into the output folder a "
            "transition matrix (transitions.csv in pixels, m² and ha; transitions.json with gain, loss, net change "
            "and persistence per class), a change map (change.tif: unchanged pixels grey, changed ones in the "
            "colour of their new class) and a chart (change.png). The change map and the table load as layers."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.BEFORE, "Earlier class map"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.AFTER, "Later class map"))
        self.addParameter(_model_parameter(self.MODEL, optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer(self.CHANGE_MAP, "Change map"))
        self.addOutput(QgsProcessingOutputFile(self.TRANSITIONS, "Transitions (CSV)"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        before = _file_source(self.parameterAsRasterLayer(parameters, self.BEFORE, context), "Earlier class map")
        after = _file_source(self.parameterAsRasterLayer(parameters, self.AFTER, context), "Later class map")
        model_value = self.parameterAsFile(parameters, self.MODEL, context)
        out = os.path.normpath(self.parameterAsString(parameters, self.OUTPUT, context))
        if os.path.isdir(out) and os.listdir(out):
            raise QgsProcessingException(f"Output folder: {out} is not empty; choose a new or empty folder")
        with _Staging(out) as staging:
            args = ["change", before, after, "--out-dir", str(staging.folder / "change")]
            if model_value:
                args += ["--model", bundle_path(model_value)]
            self.run_geoseg(args, feedback)
            staging.publish_folder("change", out)
        change_map, table = os.path.join(out, "change.tif"), os.path.join(out, "transitions.csv")
        _load_on_completion(context, change_map, "change map", self.CHANGE_MAP)
        _load_on_completion(context, table, "transitions", self.TRANSITIONS)
        return {self.OUTPUT: out, self.CHANGE_MAP: change_map, self.TRANSITIONS: table}


class LandscapeMetrics(GeoSegAlgorithm):
    INPUT, MODEL, LEVEL, ZONES, ZONE_FIELD, OUTPUT = "INPUT", "MODEL", "LEVEL", "ZONES", "ZONE_FIELD", "OUTPUT"
    LEVELS: ClassVar[list[str]] = ["class", "landscape", "patch"]

    def name(self) -> str:
        return "landscape"

    def displayName(self) -> str:
        return "Landscape metrics"

    def shortHelpString(self) -> str:
        return (
            "FRAGSTATS-style metrics of a class map, computed by pylandstats: per class the cover, number of "
            "patches, mean patch area (ha), edge density (m/ha), landscape shape index, largest patch index, and "
            "the convex and concave shares of its edges; or the whole landscape (with Shannon diversity), or each "
            "patch. With zones (plots), each zone is measured on its own. The class map needs a projected CRS. "
            "The table loads as a layer."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class map"))
        self.addParameter(_model_parameter(self.MODEL, optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.LEVEL, "Level", self.LEVELS, False, 0))
        polygons = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterVectorLayer(self.ZONES, "Zones (plots)", polygons, optional=True))
        self.addParameter(
            QgsProcessingParameterField(
                self.ZONE_FIELD, "Zone name field", parentLayerParameterName=self.ZONES, optional=True
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Metrics", "CSV files (*.csv)"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        source = _file_source(self.parameterAsRasterLayer(parameters, self.INPUT, context), "Class map")
        out = _destination(self.parameterAsFileOutput(parameters, self.OUTPUT, context), ".csv", "Metrics")
        model_value = self.parameterAsFile(parameters, self.MODEL, context)
        zones = self.parameterAsVectorLayer(parameters, self.ZONES, context)
        field = self.parameterAsString(parameters, self.ZONE_FIELD, context).strip()
        if zones is not None and not field:
            raise QgsProcessingException("Zone name field: choose the field that names each zone")
        with _Staging(out) as staging:
            args = ["landscape", source, "--out", str(staging.folder / "metrics.csv"),
                    "--level", self.LEVELS[self.parameterAsEnum(parameters, self.LEVEL, context)]]  # fmt: skip
            if model_value:
                args += ["--model", bundle_path(model_value)]
            if zones is not None:
                args += ["--by", staging.export_polygons(zones, context), "--zone-field", field]
            self.run_geoseg(args, feedback)
            staging.publish("metrics.csv", out)
        _load_on_completion(context, out, "landscape metrics", self.OUTPUT)
        return {self.OUTPUT: out}


def _load_on_completion(context: QgsProcessingContext, path: str, name: str, output: str) -> None:
    """Add ``path`` (a raster, or a CSV table) to the project when the algorithm ends, as Processing does."""
    hint = QgsProcessingUtils.LayerHint.Raster if path.endswith(".tif") else QgsProcessingUtils.LayerHint.Vector
    details = QgsProcessingContext.LayerDetails(name, context.project(), output, hint)
    context.addLayerToLoadOnCompletion(path, details)


def parse_classes(text: str) -> dict[str, str]:
    """``1=bare soil, 2=crust`` (or one ``value: name`` a line) as the config's value -> name mapping."""
    classes: dict[str, str] = {}
    for item in (part.strip() for part in text.replace("\n", ",").split(",")):
        if not item:
            continue
        value, separator, name = item.partition("=") if "=" in item else item.partition(":")
        if not separator or not value.strip() or not name.strip():
            raise QgsProcessingException(f"Classes: '{item}' is not value=name (e.g. 1=bare soil, 2=crust)")
        classes[value.strip()] = name.strip()
    return classes


def _field_values(layer, field: str) -> dict[str, str]:
    """Every value of the polygon labels' class field as a class named after itself."""
    if not isinstance(layer, QgsVectorLayer) or not field:
        raise QgsProcessingException("Classes: list the label values and names, e.g. 0=background, 1=building")
    index = layer.fields().indexOf(field)
    if index < 0:
        raise QgsProcessingException(f"Class field: '{field}' is not a field of {layer.name()}")
    values = sorted(str(v) for v in layer.uniqueValues(index) if v is not None and str(v) != "NULL")
    return {value: value for value in values}


class CheckDrift(GeoSegAlgorithm):
    INPUT, MODEL, REMEDY, OUTPUT, PLOT, DRIFTED, VERDICT = (
        "INPUT", "MODEL", "REMEDY", "OUTPUT", "PLOT", "DRIFTED", "VERDICT"
    )  # fmt: skip

    def name(self) -> str:
        return "drift"

    def displayName(self) -> str:
        return "Check drift"

    def shortHelpString(self) -> str:
        return (
            "Is this raster out of the model's training distribution (another camera, season or light)? Each "
            "band's histogram is compared with the one recorded at training, and the model runs on a sample of "
            "windows to measure how often it is unsure. Takes seconds on any size. The verdict goes to the log "
            "and the DRIFTED output; the details are saved as JSON, and a PNG shows each band's histograms "
            "side by side. With a <b>remedy</b>, the confidence is measured as Segment raster would feed the "
            "model with that remedy."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster (orthomosaic)"))
        self.addParameter(_model_parameter(self.MODEL, optional=False))
        self.addParameter(_remedy_parameter(self.REMEDY))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Details", "JSON files (*.json)"))
        self.addParameter(
            QgsProcessingParameterFileDestination(self.PLOT, "Histograms", "PNG images (*.png)", optional=True)
        )
        self.addOutput(QgsProcessingOutputBoolean(self.DRIFTED, "Drifted"))
        self.addOutput(QgsProcessingOutputString(self.VERDICT, "Verdict"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        source = _file_source(self.parameterAsRasterLayer(parameters, self.INPUT, context), "Raster")
        model = bundle_path(self.parameterAsFile(parameters, self.MODEL, context))
        out = _destination(self.parameterAsFileOutput(parameters, self.OUTPUT, context), ".json", "Details")
        plot = _destination(self.parameterAsFileOutput(parameters, self.PLOT, context), ".png", "Histograms",
                            required=False)  # fmt: skip
        with _Staging(out) as staging:
            args = ["drift", source, "--model", model, "--json", str(staging.folder / "drift.json"),
                    "--remedy", REMEDIES[self.parameterAsEnum(parameters, self.REMEDY, context)]]  # fmt: skip
            if plot:
                args += ["--plot", str(staging.folder / "drift.png")]
            self.run_geoseg(args, feedback)
            staging.publish("drift.json", out)
            if plot:
                staging.publish("drift.png", plot)
        report = json.loads(Path(out).read_text(encoding="utf-8"))
        verdict = str(report.get("verdict", ""))
        (feedback.reportError if report.get("drifted") else feedback.pushInfo)(verdict)
        return {self.OUTPUT: out, self.PLOT: plot or None, self.DRIFTED: bool(report.get("drifted")),
                self.VERDICT: verdict}  # fmt: skip


class SuggestWhereToLabel(GeoSegAlgorithm):
    INPUT, MODEL, LABELS, MASK, COUNT, SIZE = "INPUT", "MODEL", "LABELS", "MASK", "COUNT", "SIZE"
    STRATEGY, SEED, DEVICE, OUTPUT = "STRATEGY", "SEED", "DEVICE", "OUTPUT"
    STRATEGIES: ClassVar[list[str]] = ["uncertainty", "random"]
    stage_ranges: ClassVar[dict[str, tuple[float, float]]] = {"segment": (0.0, 90.0), "rank windows": (90.0, 100.0)}

    def name(self) -> str:
        return "suggest"

    def displayName(self) -> str:
        return "Suggest where to label"

    def shortHelpString(self) -> str:
        return (
            "The windows of a raster where new labels would teach the model most, as squares to label next, "
            "ranked (rank 1 first). The model segments the raster; a window's <b>score</b> is the mean of "
            "1 − the probability of each pixel's chosen class (higher: the model is less sure). Windows are "
            "spread out, and none holds a pixel that is nodata, masked or already labelled.<br><br>"
            "<b>Labels you already have</b>: polygon, line or label-raster layers. <b>Mask</b>: polygons, or a "
            "raster where every value but 0 is excluded (geoseg quality-mask's output).<br>"
            "<b>Window size</b>: pixels (256) or metres (40m); default the model's tile size. <b>Seed</b>: the "
            "same seed gives the same windows.<br><br>"
            "Then label inside the squares, add them to your labels and train again (Train from layers)."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster (orthomosaic)"))
        self.addParameter(_model_parameter(self.MODEL, optional=False))
        self.addParameter(_integer(self.COUNT, "Number of windows", 20, 1))
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.LABELS, "Labels you already have", QgsProcessing.TypeMapLayer, optional=True
            )
        )
        self.addParameter(QgsProcessingParameterMapLayer(self.MASK, "Mask (areas to keep out of)", optional=True))
        self.addParameter(QgsProcessingParameterString(self.SIZE, "Window size (px, or metres as 40m)", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.STRATEGY, "Strategy", self.STRATEGIES, defaultValue=0))
        self.addParameter(_integer(self.SEED, "Seed", 0, 0))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0))
        self.addParameter(
            QgsProcessingParameterVectorDestination(self.OUTPUT, "Windows to label", QgsProcessing.TypeVectorPolygon)
        )

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        source = _file_source(layer, "Raster")
        model = bundle_path(self.parameterAsFile(parameters, self.MODEL, context))
        out = _destination(self.parameterAsOutputLayer(parameters, self.OUTPUT, context), ".gpkg", "Windows to label")
        with _Staging(out) as staging:
            args = ["suggest", source, "--model", model, "-o", str(staging.folder / "to_label.gpkg"),
                    "-n", str(self.parameterAsInt(parameters, self.COUNT, context)),
                    "--seed", str(self.parameterAsInt(parameters, self.SEED, context)),
                    "--strategy", self.STRATEGIES[self.parameterAsEnum(parameters, self.STRATEGY, context)],
                    "--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                    "--progress", "json"]  # fmt: skip
            size = self.parameterAsString(parameters, self.SIZE, context).strip()
            if size:
                args += ["--size", size]
            for index, labels in enumerate(self.parameterAsLayerList(parameters, self.LABELS, context)):
                args += ["--labels", staging.file_or_export(labels, f"labels_{index}", context, "Labels")]
            mask = self.parameterAsLayer(parameters, self.MASK, context)
            if mask is not None:
                args += ["--mask", staging.file_or_export(mask, "mask", context, "Mask")]
            self.run_geoseg(args, feedback)
            staging.publish("to_label.gpkg", out)
        if context.willLoadLayerOnCompletion(out):
            context.layerToLoadOnCompletionDetails(out).name = f"{layer.name()} to label"
        return {self.OUTPUT: out}


def _remedy_parameter(name: str) -> QgsProcessingParameterEnum:
    return QgsProcessingParameterEnum(name, "Drift remedy", REMEDIES, False, 0)


def _model_parameter(name: str, optional: bool) -> QgsProcessingParameterFile:
    # A folder chooser, as bundles are folders; a zipped bundle's path (or the geoseg.json inside a bundle)
    # is accepted too where the path is typed or comes from a script, a model or qgis_process.
    return QgsProcessingParameterFile(name, "Model bundle (a geoseg train folder, or .zip)",
                                      QgsProcessingParameterFile.Folder, optional=optional)  # fmt: skip


SIEVE_DEFAULT = 9  # geoseg's own default (geoseg.polygons.DEFAULT_SIEVE); QGIS's Python never imports geoseg
SIEVE_LABEL = "Merge regions smaller than (px) into their largest neighbour first (0: keep every region)"


def _integer(name: str, label: str, default: int | None, minimum: int) -> QgsProcessingParameterNumber:
    """An integer option; with no default it is optional and geoseg's own default applies."""
    return QgsProcessingParameterNumber(name, label, QgsProcessingParameterNumber.Integer, default, default is None,
                                        minimum)  # fmt: skip


def _distance(name: str, label: str) -> QgsProcessingParameterNumber:
    return QgsProcessingParameterNumber(name, label, QgsProcessingParameterNumber.Double, 0.0, False, 0.0)


def _file_source(layer, what: str) -> str:
    """The file behind a layer; geoseg reads files, not QGIS's in-memory or web layers."""
    if layer is None:
        raise QgsProcessingException(f"{what}: no layer given")
    path = layer.source().split("|")[0]
    if not os.path.isfile(path):
        raise QgsProcessingException(
            f"{what}: layer '{layer.name()}' is not a file geoseg can read ({layer.source()[:120]}); "
            "save it as a GeoTIFF or GeoPackage first"
        )
    return path


def _destination(path: str, extension: str, what: str, required: bool = True) -> str:
    if not path:
        if required:
            raise QgsProcessingException(f"{what}: choose a file to write")
        return ""
    if Path(path).suffix.lower() not in {extension, ".tiff" if extension == ".tif" else extension}:
        raise QgsProcessingException(f"{what}: geoseg writes {extension} files; choose a name ending in {extension}")
    return path


class _Staging:
    """A hidden folder beside a destination, removed whatever happens; ``publish`` moves a finished file out."""

    def __init__(self, destination: str) -> None:
        parent = Path(destination).parent
        parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=".geoseg-", dir=parent))

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def publish(self, name: str, destination: str) -> None:
        staged = self.folder / name
        if not staged.is_file():
            raise QgsProcessingException(f"geoseg finished but wrote no {name}")
        os.replace(staged, destination)  # same folder tree: atomic, never a half-written destination

    def publish_folder(self, name: str, destination: str) -> None:
        staged = self.folder / name
        if not staged.is_dir():
            raise QgsProcessingException(f"geoseg finished but wrote no {name}")
        if os.path.isdir(destination):
            os.rmdir(destination)  # empty (checked before the run); a rename cannot replace a folder elsewhere
        os.replace(staged, destination)

    def file_or_export(self, layer, name: str, context: QgsProcessingContext, what: str) -> str:
        """A raster layer's file, or any vector layer exported as a GeoPackage."""
        if isinstance(layer, QgsVectorLayer):
            return self.export_polygons(layer, context, name, what)
        return _file_source(layer, what)

    def export_polygons(self, layer: QgsVectorLayer, context: QgsProcessingContext, name: str = "aoi",
                        what: str = "Area of interest") -> str:  # fmt: skip
        """Any vector layer (memory, database, a selection) as a GeoPackage geoseg can read."""
        path = str(self.folder / f"{name}.gpkg")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context.transformContext(), options)
        if error != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(f"{what}: could not be exported ({message})")
        return path


ALGORITHMS: list[type[GeoSegAlgorithm]] = [
    SegmentRaster, VectorizeClassRaster, EvaluateAgainstLabels, TrainFromLayers, CheckDrift, ChangeBetweenClassMaps,
    LandscapeMetrics, SuggestWhereToLabel,
]  # fmt: skip
__all__ = ["ALGORITHMS", "BundleClass"]
