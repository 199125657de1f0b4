"""`qgis_process.bin run geoseg:segment` from a shell, with the plugin installed in a fresh QGIS profile."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from qgis.core import QgsRasterLayer

from conftest import PLUGIN_FOLDER, leftovers, shared_data

QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")  # the `qgis_process` wrapper needs a display; .bin does not


@pytest.fixture
def qgis_process_env(tmp_path: Path, geoseg_executable: str) -> dict[str, str]:
    if not QGIS_PROCESS.exists():
        pytest.skip(f"{QGIS_PROCESS} not installed (Debian package qgis)")
    profile = str(tmp_path / "profile")  # a fresh QGIS profile: the plugin is not enabled there yet
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=profile, QGIS_OPTIONS_PATH=profile,
               QGIS_PLUGINPATH=str(PLUGIN_FOLDER), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(tmp_path / "runtime"), GEOSEG_EXECUTABLE=geoseg_executable)  # fmt: skip
    (tmp_path / "runtime").mkdir(mode=0o700)
    enabled = subprocess.run([str(QGIS_PROCESS), "plugins", "enable", "geoseg_qgis"], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env


def test_qgis_process_runs_segment_raster(qgis_process_env: dict, bundle: Path, tmp_path: Path) -> None:
    mosaic = shared_data("building_tiles", "tiled_image_1.tif")
    out = tmp_path / "out"
    run = subprocess.run(
        [str(QGIS_PROCESS), "--json", "run", "geoseg:segment", "--", f"INPUT={mosaic}", f"MODEL={bundle}",
         f"OUTPUT={out / 'classes.tif'}", f"POLYGONS={out / 'polygons.gpkg'}"],
        env=qgis_process_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(run.stdout[run.stdout.index("{") :])["results"]
    assert Path(results["OUTPUT"]) == out / "classes.tif"
    classes = QgsRasterLayer(results["OUTPUT"], "classes")
    source = QgsRasterLayer(str(mosaic), "mosaic")
    assert (classes.width(), classes.height(), classes.crs()) == (source.width(), source.height(), source.crs())
    assert classes.renderer().type() == "paletted"  # from the .qml saved beside it
    assert (out / "polygons.gpkg").is_file()
    assert leftovers(out) == []
    del classes, source


def test_qgis_process_lists_the_algorithms_with_help(qgis_process_env: dict) -> None:
    shown = subprocess.run([str(QGIS_PROCESS), "help", "geoseg:segment"], env=qgis_process_env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    for parameter in ("INPUT", "MODEL", "AOI", "TILE", "OVERLAP", "BATCH_SIZE", "DEVICE", "OUTPUT", "POLYGONS"):
        assert parameter in shown.stdout


def test_the_qgis_process_example_segments_a_raster(qgis_process_env: dict, bundle: Path, tmp_path: Path) -> None:
    mosaic = shared_data("building_tiles", "tiled_image_1.tif")
    out = tmp_path / "example"
    script = PLUGIN_FOLDER.parent / "examples" / "qgis_process_segment.sh"
    run = subprocess.run(["bash", str(script), str(mosaic), str(bundle), str(out)], capture_output=True, text=True,
                         env=dict(qgis_process_env, QGIS_PROCESS=str(QGIS_PROCESS)), timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    classes = QgsRasterLayer(str(out / "classes.tif"), "classes")
    source = QgsRasterLayer(str(mosaic), "mosaic")
    assert (classes.width(), classes.height(), classes.crs()) == (source.width(), source.height(), source.crs())
    assert (out / "polygons.gpkg").is_file() and (out / "classes.qml").is_file()
    del classes, source
