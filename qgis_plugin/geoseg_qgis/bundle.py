"""What the plugin reads from a model bundle: its class names and colours (geoseg.json), nothing else."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

META_FILE = "geoseg.json"


@dataclass(frozen=True)
class BundleClass:
    id: int
    name: str
    color: str  # "#rrggbb"


def bundle_path(value: str) -> str:
    """The bundle a user picked: its folder, a zipped bundle, or the geoseg.json inside the folder."""
    path = Path(value.strip()).expanduser()
    return str(path.parent if path.name == META_FILE else path)


def bundle_classes(path: str) -> list[BundleClass]:
    """The bundle's classes; empty when it cannot be read (geoseg itself reports what is wrong)."""
    try:
        return class_entries(json.loads(_meta_text(Path(path)))["classes"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return []


def parse_class_table(text: str) -> list[BundleClass]:
    """The class table geoseg writes into class maps (JSON); empty if unreadable."""
    try:
        return class_entries(json.loads(text))
    except ValueError:
        return []


def class_entries(entries: object) -> list[BundleClass]:
    """``[{"id", "name", "color"}, …]`` as geoseg writes it in bundles and class maps; empty if malformed."""
    try:
        return [BundleClass(int(c["id"]), str(c["name"]), str(c.get("color", "#808080"))) for c in entries]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _meta_text(path: Path) -> str:
    if path.is_dir():
        return (path / META_FILE).read_text(encoding="utf-8")
    with zipfile.ZipFile(path) as archive:
        names = sorted((n for n in archive.namelist() if Path(n).name == META_FILE), key=len)
        if not names:
            raise KeyError(META_FILE)
        return archive.read(names[0]).decode("utf-8")
