"""Class names and colours on result layers: a paletted class raster and polygons categorized by class."""

from __future__ import annotations

from typing import ClassVar

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from .bundle import BundleClass, parse_class_table

CLASS_FIELD = "class_id"
CLASSES_TAG = "GEOSEG_CLASSES"


def paletted_renderer(layer: QgsRasterLayer, classes: list[BundleClass]) -> QgsPalettedRasterRenderer:
    entries = [QgsPalettedRasterRenderer.Class(c.id, QColor(c.color), c.name) for c in classes]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)


def categorized_renderer(classes: list[BundleClass]) -> QgsCategorizedSymbolRenderer:
    categories = []
    for c in classes:
        symbol = QgsFillSymbol.createSimple({"color": c.color, "outline_color": "#00000000", "outline_width": "0"})
        categories.append(QgsRendererCategory(c.id, symbol, c.name))
    return QgsCategorizedSymbolRenderer(CLASS_FIELD, categories)


def class_map_classes(path: str) -> list[BundleClass]:
    """The classes of a geoseg class map, for when no bundle is given: its class table (GEOSEG_CLASSES tag),
    else (no table, an empty or a damaged one) the band's CLASS_<id> names with the colour table's colours.
    geoseg's own reader (geoseg/io/classmap.py, class_names) follows the same rule; a test compares them."""
    from osgeo import gdal

    dataset = gdal.OpenEx(path, gdal.OF_RASTER)
    if dataset is None:
        return []
    classes = parse_class_table(dataset.GetMetadataItem(CLASSES_TAG) or "")
    if not classes:
        band = dataset.GetRasterBand(1)
        colors = band.GetColorTable()
        for key, name in sorted((band.GetMetadata() or {}).items()):
            if key.startswith("CLASS_") and key[6:].isdigit():
                class_id = int(key[6:])
                known = colors is not None and class_id < colors.GetCount()
                red, green, blue = colors.GetColorEntry(class_id)[:3] if known else (128, 128, 128)
                classes.append(BundleClass(class_id, name, f"#{red:02x}{green:02x}{blue:02x}"))
    dataset = None
    return sorted(classes, key=lambda c: c.id)


def style_layer(layer: QgsMapLayer, classes: list[BundleClass]) -> None:
    if not classes:
        return
    if isinstance(layer, QgsRasterLayer):
        layer.setRenderer(paletted_renderer(layer, classes))
    elif isinstance(layer, QgsVectorLayer) and layer.fields().indexOf(CLASS_FIELD) >= 0:
        layer.setRenderer(categorized_renderer(classes))
    layer.triggerRepaint()


def save_default_style(path: str, classes: list[BundleClass]) -> None:
    """A .qml beside the class map, so it opens styled anywhere (drag and drop, qgis_process outputs)."""
    if not classes:
        return
    layer = QgsRasterLayer(path, "classes", "gdal")
    if not layer.isValid():
        return
    layer.setRenderer(paletted_renderer(layer, classes))
    layer.saveDefaultStyle()
    del layer


def save_default_vector_style(path: str, classes: list[BundleClass]) -> None:
    """The categorized style stored in the GeoPackage as its default, for the same reason."""
    if not classes:
        return
    layer = QgsVectorLayer(path, "polygons", "ogr")
    if not layer.isValid():
        return
    layer.setRenderer(categorized_renderer(classes))
    layer.saveStyleToDatabase("geoseg classes", "class colours from the model bundle", True, "")
    del layer


class ResultStyler(QgsProcessingLayerPostProcessorInterface):
    """Names a loaded result after its input and gives it the classes' colours and names."""

    # Processing keeps only a pointer: the Python objects must outlive the algorithm run.
    _alive: ClassVar[list[ResultStyler]] = []

    def __init__(self, classes: list[BundleClass]) -> None:
        super().__init__()
        self.classes = classes

    @classmethod
    def attach(cls, context: QgsProcessingContext, path: str, name: str, classes: list[BundleClass]) -> None:
        if not path or not context.willLoadLayerOnCompletion(path):
            return
        details = context.layerToLoadOnCompletionDetails(path)
        details.name = name
        styler = cls(classes)
        cls._alive.append(styler)
        details.setPostProcessor(styler)

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback):
        style_layer(layer, self.classes)
