"""The parts of `geoseg batch` a user sees without a cluster: what INPUT means, names, manifest, report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from geoseg.batch.inputs import expand_inputs, output_stems
from geoseg.batch.manifest import DONE, FAILED, Fingerprint, Manifest, MosaicRecord, bundle_sha256
from geoseg.batch.report import write_survey_report
from geoseg.errors import InputError


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_inputs_from_files_folders_globs_and_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = touch(tmp_path / "flight1" / "odm_orthophoto.tif")
    b = touch(tmp_path / "flight2" / "sub" / "odm_orthophoto.tif")
    c = touch(tmp_path / "extra" / "c.vrt")
    touch(tmp_path / "flight1" / "notes.md")
    listing = tmp_path / "more.txt"
    listing.write_text("# survey 2026\n\nextra/c.vrt\nflight1/*.tif\nmissing.tif\n")
    monkeypatch.chdir(tmp_path)

    found = expand_inputs(["flight2", str(listing), "flight*/odm_orthophoto.tif"])

    assert found == [b, c, a, tmp_path / "missing.tif"]  # in order, each once, a missing file kept to be reported


def test_an_output_folder_inside_the_survey_is_never_read_as_input(tmp_path: Path) -> None:
    mosaic = touch(tmp_path / "survey" / "plot_a.tif")
    touch(tmp_path / "survey" / "results" / "plot_a_classes.tif")  # the last run's outputs
    assert expand_inputs([tmp_path / "survey"], out_dir=tmp_path / "survey" / "results") == [mosaic]
    assert len(expand_inputs([tmp_path / "survey"])) == 2  # without the output folder named, both are rasters


def test_inputs_that_name_nothing_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no rasters"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.tif")])


def test_clashing_file_names_get_their_folders_in_the_output_name(tmp_path: Path) -> None:
    paths = [tmp_path / "2024/plotA/odm_orthophoto.tif", tmp_path / "2024/plotB/odm_orthophoto.tif",
             tmp_path / "2025/plotA/odm_orthophoto.tif", tmp_path / "2025/single.tif"]  # fmt: skip
    names = output_stems(paths)
    assert names[paths[3]] == "single"
    assert len({names[p] for p in paths}) == 4
    assert names[paths[0]] == "2024__plotA__odm_orthophoto"


def test_resume_trusts_a_record_only_for_the_same_input_bundle_and_existing_outputs(tmp_path: Path) -> None:
    mosaic = touch(tmp_path / "m.tif", b"pixels")
    output = touch(tmp_path / "out" / "m_classes.tif")
    manifest = Manifest.load(tmp_path / "out", "bundle", "hash-1")
    asked = {"confidence": False, "tile": 512}
    manifest.record(MosaicRecord("m", str(mosaic), DONE, Fingerprint.of(mosaic), "hash-1",
                                 outputs={"classes": str(output)}, settings=asked))  # fmt: skip

    reloaded = Manifest.load(tmp_path / "out", "bundle", "hash-1")
    assert reloaded.is_finished("m", Fingerprint.of(mosaic), asked)
    assert not reloaded.is_finished("m", Fingerprint.of(mosaic), {**asked, "confidence": True})  # asked for more
    assert not reloaded.is_finished("m", Fingerprint.of(mosaic))
    assert not Manifest.load(tmp_path / "out", "bundle", "hash-2").is_finished("m", Fingerprint.of(mosaic), asked)
    os.utime(mosaic, ns=(1, 1))  # the mosaic was replaced
    assert not reloaded.is_finished("m", Fingerprint.of(mosaic), asked)
    os.utime(mosaic, ns=(Fingerprint.of(mosaic).mtime_ns, reloaded.records["m"].fingerprint.mtime_ns))
    assert reloaded.is_finished("m", Fingerprint.of(mosaic), asked)
    output.unlink()
    assert not reloaded.is_finished("m", Fingerprint.of(mosaic), asked)


def test_a_damaged_manifest_is_one_clear_error(tmp_path: Path) -> None:
    touch(tmp_path / "geoseg_batch.json", b"{not json")
    with pytest.raises(InputError, match="move it away"):
        Manifest.load(tmp_path, "bundle", "h")


def test_bundle_hash_changes_with_the_weights(tmp_path: Path) -> None:
    for name in ("geoseg.json", "config.json", "model.safetensors"):
        touch(tmp_path / name, name.encode())
    first = bundle_sha256(tmp_path)
    touch(tmp_path / "model.safetensors", b"retrained")
    assert bundle_sha256(tmp_path) != first


def areas(valid_m2: float | None, crust_m2: float | None, crust_pixels: int) -> dict:
    def row(class_id: int, name: str, pixels: int, m2: float | None) -> dict:
        return {"class_id": class_id, "name": name, "pixels": pixels, "area_m2": m2,
                "area_ha": m2 / 1e4 if m2 is not None else None,
                "percent": 100 * m2 / valid_m2 if m2 is not None and valid_m2 else 0.0}  # fmt: skip

    other = None if valid_m2 is None else valid_m2 - crust_m2
    rows = [row(1, "crust", crust_pixels, crust_m2), row(2, "soil", 100 - crust_pixels, other)]
    return {"crs": "EPSG:32633", "valid_pixels": 100, "valid_area_m2": valid_m2, "classes": rows}


def test_survey_report_sums_projected_mosaics_and_lists_failures(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "geoseg_batch.json", "bundle", "h")
    manifest.records = {
        "a": MosaicRecord("a", "/a.tif", DONE, None, "h", runtime_s=2.0, areas=areas(400.0, 100.0, 25)),
        "b": MosaicRecord("b", "/b.tif", DONE, None, "h", runtime_s=3.0, areas=areas(100.0, 75.0, 75)),
        "geo": MosaicRecord("geo", "/geo.tif", DONE, None, "h", runtime_s=1.0, areas=areas(None, None, 50)),
        "bad": MosaicRecord("bad", "/bad.tif", FAILED, None, "h", reason="could not be read"),
    }
    report = write_survey_report(manifest, ["a", "b", "geo", "bad"], tmp_path, merge_polygons=False)

    crust = next(c for c in report.totals["classes"] if c["name"] == "crust")
    assert crust["area_m2"] == 175.0 and crust["area_ha"] == 0.0175
    assert crust["percent"] == pytest.approx(35.0)  # of the 500 m² valid in projected mosaics
    assert crust["pixels"] == 150
    assert report.totals["mosaics_without_m2"] == ["geo"]
    assert (report.totals["done"], report.totals["failed"]) == (3, 1)
    rows = report.csv.read_text().splitlines()
    assert rows[0].startswith("mosaic,status,runtime_s,valid_area_m2,valid_area_ha,crust m2,crust ha,crust %")
    assert rows[4].startswith("bad,failed,") and rows[4].endswith("could not be read")
    assert rows[5].startswith("TOTAL,3 of 4 done,6,500,0.05,175,0.0175,35")
    assert json.loads(report.json.read_text())["mosaics"][3]["reason"] == "could not be read"
