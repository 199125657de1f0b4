"""The batch manifest: what was asked, what finished, and why the rest did not.

One JSON file in the output folder, rewritten atomically after every mosaic, so whatever stops the
run (a killed client, a power cut) leaves a manifest that describes finished outputs only. A mosaic
counts as done for ``--resume`` when its input (path, size, modification time) and the bundle's hash
are those recorded, and its outputs are still there.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geoseg.errors import InputError
from geoseg.io.raster import atomic_path
from geoseg.model.bundle import bundle_files

MANIFEST_NAME = "geoseg_batch.json"
FORMAT_VERSION = 1

DONE = "done"
FAILED = "failed"


@dataclass(frozen=True)
class Fingerprint:
    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return cls(str(path.absolute()), stat.st_size, stat.st_mtime_ns)


@dataclass
class MosaicRecord:
    id: str
    input: str
    status: str  # done | failed
    fingerprint: Fingerprint | None
    bundle_sha256: str
    reason: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # kind (classes, polygons, areas, …) -> path
    runtime_s: float | None = None
    areas: dict | None = None  # geoseg.polygons.class_areas of the class map
    settings: dict | None = None  # what the outputs were asked with (BatchOptions.result_settings)

    @classmethod
    def from_json(cls, data: dict) -> MosaicRecord:
        fingerprint = Fingerprint(**data["fingerprint"]) if data.get("fingerprint") else None
        return cls(**{**data, "fingerprint": fingerprint})


def bundle_sha256(path: Path) -> str:
    """Hash of what defines the model: the zip itself, or the bundle folder's three files."""
    digest = hashlib.sha256()
    for file in bundle_files(path):
        digest.update(file.name.encode())
        with open(file, "rb") as stream:  # streamed into one digest: manifests of earlier runs keep matching
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class Manifest:
    """Records by mosaic id, saved after each change; safe to update from the finishing thread."""

    def __init__(self, path: Path, bundle: str, bundle_hash: str, records: dict[str, MosaicRecord] | None = None):
        self.path = path
        self.bundle = bundle
        self.bundle_hash = bundle_hash
        self.records: dict[str, MosaicRecord] = records or {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, bundle: str, bundle_hash: str) -> Manifest:
        """The folder's manifest (records kept whatever bundle made them), or a new empty one."""
        path = folder / MANIFEST_NAME
        if not path.exists():
            return cls(path, bundle, bundle_hash)
        try:
            data = json.loads(path.read_text())
            records = {r["id"]: MosaicRecord.from_json(r) for r in data["mosaics"]}
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"is not a readable geoseg batch manifest ({exc}); move it away to start afresh"
            raise InputError(reason, path) from None
        return cls(path, bundle, bundle_hash, records)

    def is_finished(self, mosaic_id: str, fingerprint: Fingerprint | None, settings: dict | None = None) -> bool:
        """Done earlier from the same input and bundle, asked with the same ``settings``, outputs in place."""
        record = self.records.get(mosaic_id)
        return (
            record is not None
            and record.status == DONE
            and fingerprint is not None
            and record.fingerprint == fingerprint
            and record.bundle_sha256 == self.bundle_hash
            and record.settings == settings
            and all(Path(p).exists() for p in record.outputs.values())
        )

    def record(self, record: MosaicRecord) -> None:
        with self._lock:
            self.records[record.id] = record
            self.save()

    def save(self) -> None:
        data = {
            "format_version": FORMAT_VERSION,
            "bundle": self.bundle,
            "bundle_sha256": self.bundle_hash,
            "mosaics": [asdict(r) for r in self.records.values()],
        }
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
