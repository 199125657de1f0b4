"""The files `geoseg infer` (and `geoseg batch`, per mosaic) writes around a class map.

Their formats: docs/formats.md, "Class map" and "Polygons and areas".
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from geoseg.io.raster import atomic_path
from geoseg.polygons import DEFAULT_SIEVE, class_areas, vectorize_class_map


@dataclass(frozen=True)
class OutputPaths:
    classes: Path
    areas: Path
    polygons: Path | None
    confidence: Path | None

    @classmethod
    def for_stem(cls, folder: Path, stem: str, polygons: bool, confidence: bool) -> OutputPaths:
        return cls(
            classes=folder / f"{stem}_classes.tif",
            areas=folder / f"{stem}_areas.json",
            polygons=folder / f"{stem}_polygons.gpkg" if polygons else None,
            confidence=folder / f"{stem}_confidence.tif" if confidence else None,
        )

    def as_dict(self) -> dict[str, str]:
        pairs = {"classes": self.classes, "areas": self.areas, "polygons": self.polygons, "confidence": self.confidence}
        return {kind: str(path) for kind, path in pairs.items() if path is not None}

    def existing(self) -> list[Path]:
        return [Path(p) for p in self.as_dict().values() if Path(p).exists()]


@dataclass(frozen=True)
class FinishedOutputs:
    areas: dict
    polygons: int | None  # how many were written, None when polygons were not asked for
    merged_pixels: int = 0  # pixels of regions under the sieve size, polygonized as a neighbour's class


def finish_outputs(paths: OutputPaths, min_area: float, simplify: float, overwrite: bool,
                   cancel: threading.Event | None = None, sieve: int = DEFAULT_SIEVE,
                   polygon_workers: int = 1) -> FinishedOutputs:  # fmt: skip
    """Polygons (streamed from the written class map) and the per-class areas, each written atomically.

    ``cancel`` set from another thread stops the polygons part-way (:class:`~geoseg.errors.Cancelled`).
    ``polygon_workers`` processes sieve and polygonize the strips of a large map (``vectorize_class_map``).
    """
    n_polygons, merged = None, 0
    if paths.polygons is not None:
        vectors = vectorize_class_map(paths.classes, paths.polygons, min_area=min_area, simplify=simplify,
                                      overwrite=overwrite, cancel=cancel, sieve=sieve,
                                      workers=polygon_workers)  # fmt: skip
        n_polygons, merged = vectors.n_polygons, vectors.merged_pixels
    areas = class_areas(paths.classes)
    with atomic_path(paths.areas) as tmp:
        tmp.write_text(json.dumps(areas, indent=2) + "\n")
    return FinishedOutputs(areas, n_polygons, merged)
