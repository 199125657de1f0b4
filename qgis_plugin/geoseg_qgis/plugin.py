"""The plugin: registers the Processing provider and adds "Segment with geoseg…" for the active raster."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsMapLayerType
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .provider import ICON, GeoSegProvider

MENU = "&geoseg"
SEGMENT_ALGORITHM = "geoseg:segment"


class GeoSegPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: GeoSegProvider | None = None
        self.action: QAction | None = None

    def initProcessing(self) -> None:
        self.provider = GeoSegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        self.action = QAction(QIcon(ICON), "Segment with geoseg…", self.iface.mainWindow())
        self.action.setToolTip("Segment the active raster layer with a geoseg model bundle")
        self.action.triggered.connect(self.segment_active_layer)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU, self.action)

    def unload(self) -> None:
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginMenu(MENU, self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def segment_active_layer(self) -> None:
        """Open Segment raster's dialog (it runs in the background, with progress and Cancel) on the layer."""
        import processing

        layer = self.iface.activeLayer()
        if layer is None or layer.type() != QgsMapLayerType.RasterLayer:
            self.iface.messageBar().pushWarning("geoseg", "Select a raster layer (the orthomosaic) first.")
            return
        processing.execAlgorithmDialog(SEGMENT_ALGORITHM, {"INPUT": layer})
