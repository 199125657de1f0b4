"""The survey report of a batch: area per class for each mosaic and for the survey, as CSV and JSON.

Areas come from each mosaic's `_areas.json` (recorded in the manifest): m² and ha where the mosaic's
CRS is projected, null where it is geographic (those mosaics count in pixels only, not in the m²
totals). Percentages are of the valid (non-nodata) area. The optional merged polygon layer holds every
finished mosaic's polygons with a ``mosaic`` field, in the CRS of the first one.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from geoseg.batch.manifest import DONE, Manifest, MosaicRecord
from geoseg.io.raster import atomic_path

REPORT_STEM = "survey_report"
MERGED_POLYGONS = "survey_polygons.gpkg"


@dataclass(frozen=True)
class SurveyReport:
    json: Path
    csv: Path
    polygons: Path | None
    totals: dict


def write_survey_report(manifest: Manifest, ids: list[str], out_dir: Path, merge_polygons: bool) -> SurveyReport:
    records = [manifest.records[i] for i in ids if i in manifest.records]
    class_names = _class_names(records)
    totals = _totals(records, class_names)
    data = {
        "bundle": manifest.bundle,
        "bundle_sha256": manifest.bundle_hash,
        "mosaics": [_mosaic_row(r) for r in records],
        "total": totals,
    }
    json_path, csv_path = out_dir / f"{REPORT_STEM}.json", out_dir / f"{REPORT_STEM}.csv"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as stream:
        _write_csv(stream, records, class_names, totals)
    merged = _merge_polygons(records, out_dir / MERGED_POLYGONS) if merge_polygons else None
    return SurveyReport(json_path, csv_path, merged, totals)


def _class_names(records: list[MosaicRecord]) -> dict[int, str]:
    names: dict[int, str] = {}
    for record in records:
        for row in (record.areas or {}).get("classes", []):
            names.setdefault(int(row["class_id"]), row["name"])
    return dict(sorted(names.items()))


def _mosaic_row(record: MosaicRecord) -> dict:
    areas = record.areas or {}
    return {
        "id": record.id,
        "input": record.input,
        "status": record.status,
        "reason": record.reason,
        "runtime_s": record.runtime_s,
        "crs": areas.get("crs"),
        "valid_pixels": areas.get("valid_pixels"),
        "valid_area_m2": areas.get("valid_area_m2"),
        "classes": [
            {k: row[k] for k in ("class_id", "name", "pixels", "area_m2", "area_ha", "percent")}
            for row in areas.get("classes", [])
        ],
    }


def _totals(records: list[MosaicRecord], class_names: dict[int, str]) -> dict:
    done = [r for r in records if r.status == DONE and r.areas]
    in_m2 = [r for r in done if r.areas.get("valid_area_m2") is not None]
    valid_m2 = sum(r.areas["valid_area_m2"] for r in in_m2)
    classes = []
    for class_id, name in class_names.items():
        pixels = sum(_class_row(r, class_id).get("pixels", 0) for r in done)
        area_m2 = sum(_class_row(r, class_id).get("area_m2") or 0.0 for r in in_m2)
        classes.append({
            "class_id": class_id, "name": name, "pixels": pixels, "area_m2": area_m2, "area_ha": area_m2 / 10_000,
            "percent": 100.0 * area_m2 / valid_m2 if valid_m2 else None,
        })  # fmt: skip
    return {
        "mosaics": len(records),
        "done": len(done),
        "failed": sum(r.status != DONE for r in records),
        "runtime_s": round(sum(r.runtime_s or 0.0 for r in done), 2),
        "valid_area_m2": valid_m2,
        "valid_area_ha": valid_m2 / 10_000,
        "mosaics_without_m2": [r.id for r in done if r not in in_m2],
        "classes": classes,
    }


def _class_row(record: MosaicRecord, class_id: int) -> dict:
    return next((row for row in record.areas.get("classes", []) if int(row["class_id"]) == class_id), {})


def _write_csv(stream, records: list[MosaicRecord], class_names: dict[int, str], totals: dict) -> None:
    header = ["mosaic", "status", "runtime_s", "valid_area_m2", "valid_area_ha"]
    for name in class_names.values():
        header += [f"{name} m2", f"{name} ha", f"{name} %"]
    header += ["input", "reason"]
    writer = csv.writer(stream)
    writer.writerow(header)
    for record in records:
        areas = record.areas or {}
        valid = areas.get("valid_area_m2")
        row = [record.id, record.status, _num(record.runtime_s), _num(valid), _num(valid / 10_000 if valid else None)]
        for class_id in class_names:
            cell = _class_row(record, class_id) if record.areas else {}
            row += [_num(cell.get("area_m2")), _num(cell.get("area_ha")), _num(cell.get("percent"))]
        writer.writerow([*row, record.input, record.reason or ""])
    row = ["TOTAL", f"{totals['done']} of {totals['mosaics']} done", _num(totals["runtime_s"]),
           _num(totals["valid_area_m2"]), _num(totals["valid_area_ha"])]  # fmt: skip
    for cell in totals["classes"]:
        row += [_num(cell["area_m2"]), _num(cell["area_ha"]), _num(cell["percent"])]
    writer.writerow([*row, "", ""])


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _merge_polygons(records: list[MosaicRecord], out: Path) -> Path | None:
    """Every finished mosaic's polygons in one layer, appended one mosaic at a time."""
    import pyogrio

    sources = [(r.id, Path(r.outputs["polygons"])) for r in records if r.status == DONE and "polygons" in r.outputs]
    if not sources:
        return None
    crs = None
    with atomic_path(out) as tmp:
        tmp.unlink()
        for index, (mosaic_id, path) in enumerate(sources):
            frame = pyogrio.read_dataframe(path)
            crs = crs or frame.crs
            frame = frame.to_crs(crs) if frame.crs != crs else frame
            frame.insert(0, "mosaic", mosaic_id)
            pyogrio.write_dataframe(frame, tmp, layer="classes", driver="GPKG", append=index > 0)
    return out
