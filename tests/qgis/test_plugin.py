"""The installable zip, and the plugin's life in QGIS: load, start, unload through qgis.utils."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import qgis.utils
from qgis.core import Qgis, QgsApplication

from conftest import REPO

ALGORITHMS = {
    "geoseg:segment",
    "geoseg:vectorize",
    "geoseg:evaluate",
    "geoseg:train",
    "geoseg:suggest",
    "geoseg:drift",
    "geoseg:change",
    "geoseg:landscape",
}


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The zip `make plugin` builds, unpacked into a plugin folder as QGIS's "Install from ZIP" does."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(REPO / "tools" / "build_plugin_zip.py"), "--out-dir", str(dist)], check=True)
    [archive] = dist.glob("geoseg_qgis-*.zip")
    plugins = tmp_path_factory.mktemp("plugins")
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert all(n.startswith("geoseg_qgis/") for n in names), names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert {"geoseg_qgis/metadata.txt", "geoseg_qgis/__init__.py", "geoseg_qgis/LICENSE"} <= set(names)
        zipped.extractall(plugins)
    return plugins


def test_plugin_loads_starts_and_unloads_through_qgis_utils(installed_plugin: Path, qgis_iface, qgis_processing):
    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("geoseg")
    if existing is not None:  # another test module registered the provider directly
        registry.removeProvider(existing)
    qgis.utils.plugin_paths.insert(0, str(installed_plugin))
    sys.path.insert(0, str(installed_plugin))
    for name in [m for m in sys.modules if m == "geoseg_qgis" or m.startswith("geoseg_qgis.")]:
        del sys.modules[name]  # load the unpacked copy, not the source tree's
    try:
        qgis.utils.updateAvailablePlugins()
        assert "geoseg_qgis" in qgis.utils.available_plugins
        assert qgis.utils.pluginMetadata("geoseg_qgis", "hasProcessingProvider") == "yes"
        assert qgis.utils.loadPlugin("geoseg_qgis")
        assert qgis.utils.startPlugin("geoseg_qgis")
        assert "geoseg_qgis" in qgis.utils.active_plugins
        assert Path(sys.modules["geoseg_qgis"].__file__).is_relative_to(installed_plugin)

        provider = registry.providerById("geoseg")
        assert provider is not None
        assert {a.id() for a in provider.algorithms()} == ALGORITHMS
        plugin = qgis.utils.plugins["geoseg_qgis"]
        assert plugin.action is not None and plugin.action.text().startswith("Segment with geoseg")

        assert qgis.utils.unloadPlugin("geoseg_qgis")
        assert "geoseg_qgis" not in qgis.utils.active_plugins
        assert registry.providerById("geoseg") is None
        assert plugin.action is None
    finally:
        qgis.utils.plugin_paths.remove(str(installed_plugin))
        sys.path.remove(str(installed_plugin))
        for name in [m for m in sys.modules if m == "geoseg_qgis" or m.startswith("geoseg_qgis.")]:
            del sys.modules[name]


def test_the_action_without_a_raster_layer_asks_for_one(qgis_iface, qgis_processing, qgis_new_project) -> None:
    from geoseg_qgis.plugin import GeoSegPlugin

    plugin = GeoSegPlugin(qgis_iface)
    plugin.initGui()
    try:
        plugin.segment_active_layer()  # no layer is active in a new project
        messages = qgis_iface.messageBar().get_messages(Qgis.Warning)
        assert any("Select a raster layer" in m for m in messages), messages
    finally:
        plugin.unload()
