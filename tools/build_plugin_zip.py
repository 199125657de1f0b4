"""Build the QGIS plugin's installable zip (QGIS → Plugins → Manage and Install → Install from ZIP).

    python3 tools/build_plugin_zip.py [--out-dir dist]

The zip holds one folder, geoseg_qgis/, as QGIS expects; caches and editor files are left out.
Runs on any Python 3 (no QGIS, no geoseg needed).
"""

from __future__ import annotations

import argparse
import configparser
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "qgis_plugin" / "geoseg_qgis"
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = {".pyc", ".pyo", ".orig", ".swp"}


def plugin_version() -> str:
    metadata = configparser.ConfigParser()
    metadata.read(PLUGIN / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def plugin_files() -> list[Path]:
    return sorted(
        path
        for path in PLUGIN.rglob("*")
        if path.is_file() and not SKIPPED_PARTS.intersection(path.parts) and path.suffix not in SKIPPED_SUFFIXES
    )


def build_zip(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"geoseg_qgis-{plugin_version()}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files():
            archive.write(path, Path(PLUGIN.name) / path.relative_to(PLUGIN))
    partial.replace(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist", help="Folder for the zip (default: dist/).")
    target = build_zip(parser.parse_args().out_dir)
    print(f"plugin zip: {target} (QGIS: Plugins → Manage and Install Plugins → Install from ZIP)")


if __name__ == "__main__":
    main()
