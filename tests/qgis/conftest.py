"""Fixtures for the plugin's tests: the plugin on sys.path, geoseg's environment, a small model bundle.

These tests run inside QGIS's own Python. geoseg runs, as it does for users, as a subprocess from the
repository's .venv (made by `make test`); the bundle is built there too, since QGIS's Python has no torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN_FOLDER = REPO / "qgis_plugin"
SHARED_DATA = REPO.parent / "shared" / "data"
GEOSEG = REPO / ".venv" / "bin" / "geoseg"
GEOSEG_PYTHON = REPO / ".venv" / "bin" / "python"

sys.path.insert(0, str(PLUGIN_FOLDER))

# A runner started in the background (`make test &`) ignores SIGINT, and the children the cancel tests
# start would inherit that and die without cleaning up. Cancelling is what those tests check, so the
# runner takes Python's usual Ctrl-C handling, which children get back as the default action.
signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not available: {path} (the shared/data folder lies beside the repo)")
    return path


@pytest.fixture(scope="session")
def geoseg_executable() -> str:
    if not GEOSEG.exists():
        pytest.skip(f"{GEOSEG} is missing: run `make test` (it builds geoseg's environment first)")
    os.environ["GEOSEG_EXECUTABLE"] = str(GEOSEG)
    return str(GEOSEG)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory, geoseg_executable: str) -> Path:
    """A seeded random 2-class U-Net for 3-band uint8 rasters, with named, coloured classes."""
    path = tmp_path_factory.mktemp("bundle") / "buildings"
    script = (
        "import json, sys; from pathlib import Path; from tests.conftest import make_random_bundle; "
        "p = make_random_bundle(Path(sys.argv[1]), [1, 2, 3], n_classes=2, tile=128, overlap=16); "
        "meta = json.loads((p / 'geoseg.json').read_text()); "
        "meta['classes'] = [{'id': 0, 'name': 'background', 'color': '#d2b48c'}, "
        "{'id': 1, 'name': 'building', 'color': '#b22222'}]; "
        "(p / 'geoseg.json').write_text(json.dumps(meta))"
    )
    subprocess.run([str(GEOSEG_PYTHON), "-c", script, str(path)], cwd=REPO, check=True)
    return path


@pytest.fixture(scope="session")
def provider(qgis_processing, geoseg_executable: str):
    """The geoseg Processing provider, registered as the plugin registers it."""
    from geoseg_qgis.provider import GeoSegProvider
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    if registry.providerById("geoseg") is None:
        registry.addProvider(GeoSegProvider())
    yield registry.providerById("geoseg")


def leftovers(folder: Path) -> list[str]:
    """Staging folders or partial files a run must never leave behind."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".geoseg-") or ".partial" in p.name)
