"""The geoseg Processing provider: its algorithms in the Toolbox, qgis_process and models."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .settings import add_settings, remove_settings

ICON = str(Path(__file__).with_name("icon.svg"))


class GeoSegProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "geoseg"

    def name(self) -> str:
        return "geoseg"

    def longName(self) -> str:
        return "geoseg: segment orthomosaics with U-Net model bundles"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def load(self) -> bool:
        add_settings(self.name())
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        remove_settings()

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        return ["gpkg"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:
        return "gpkg"

    def defaultRasterFileExtension(self) -> str:
        return "tif"
