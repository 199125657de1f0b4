"""`geoseg drift` and the inference remedies on real tiles: new_brunswick tile 2 as it is (another scene,
same camera) and as another camera would record it, against a bundle with tile 1's training statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.data.preprocess import compute_band_stats
from geoseg.drift.check import band_report
from geoseg.drift.remedies import HistogramMatchedNormalization, remedied_normalization
from geoseg.drift.simulate import CameraShift, write_shifted
from geoseg.infer.run import InferOptions, segment_mosaic
from geoseg.model.bundle import load_bundle
from geoseg.progress import Progress, ProgressMode
from tests.conftest import make_random_bundle, shared_data
from tests.integration.test_cli_errors import cli_env

TILE1 = ("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
TILE2 = ("new_brunswick", "23322E759967N_clipped_1m_2of2.tif")


def with_train_stats(bundle_dir: Path, train_stats: dict) -> Path:
    meta_file = bundle_dir / "geoseg.json"
    meta = json.loads(meta_file.read_text())
    meta["train_stats"] = train_stats
    meta_file.write_text(json.dumps(meta))
    return bundle_dir


@pytest.fixture(scope="module")
def tile1_stats() -> dict:
    stats = compute_band_stats([shared_data(*TILE1)], [1, 2, 3])
    return {"bands": [s.to_json() for s in stats], "dtype": "uint8"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tile1_stats: dict) -> Path:
    """A random lite0 U-Net carrying tile 1's statistics: the drift check needs no trained weights."""
    path = make_random_bundle(tmp_path_factory.mktemp("b") / "bundle", [1, 2, 3], n_classes=4, tile=128)
    return with_train_stats(path, tile1_stats)


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory: pytest.TempPathFactory, tile1_stats: dict) -> Path:
    """The same, as bundles from before histograms were recorded: mean and spread only."""
    bands = [{k: v for k, v in b.items() if k not in ("hist", "hist_edges")} for b in tile1_stats["bands"]]
    path = make_random_bundle(tmp_path_factory.mktemp("old") / "bundle", [1, 2, 3], n_classes=4, tile=128)
    return with_train_stats(path, {"bands": bands, "dtype": "uint8"})


@pytest.fixture(scope="module")
def other_camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shifted(shared_data(*TILE2), tmp_path_factory.mktemp("cam") / "tile2_other_camera.tif", CameraShift())


def drift_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geoseg", "drift", *map(str, args)], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_drift_flags_another_camera_but_not_another_scene(tmp_path: Path, bundle: Path, other_camera: Path) -> None:
    same = drift_cli(shared_data(*TILE2), "--model", bundle, "--json", "same.json", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert "\nno drift: the bands match the training data (band 1: distance" in "\n" + same.stdout
    other = drift_cli(other_camera, "--model", bundle, "--json", "other.json", "--plot", "other.png", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    verdict = next(line for line in other.stdout.splitlines() if line.startswith("drift: "))
    assert "training sd from the training data" in verdict and "--remedy histogram" in verdict

    same_doc = json.loads((tmp_path / "same.json").read_text())
    other_doc = json.loads((tmp_path / "other.json").read_text())
    assert same_doc["drifted"] is False and other_doc["drifted"] is True
    assert max(b["distance_sd"] for b in same_doc["bands"]) < 1.0 < max(b["distance_sd"] for b in other_doc["bands"])
    for band in other_doc["bands"]:
        assert len(band["train_hist"]["hist"]) + 1 == len(band["train_hist"]["hist_edges"])
        assert sum(band["mosaic_hist"]["hist"]) == 326 * 482  # every pixel of the tile (it is small)
    confidence = other_doc["low_confidence"]
    assert 0.0 <= confidence["share"] <= 1.0 and confidence["threshold"] == 0.5 and confidence["windows"] >= 4
    assert (tmp_path / "other.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_bundles_without_histograms_fall_back_to_mean_and_spread(old_bundle: Path, other_camera: Path) -> None:
    meta = load_bundle(old_bundle).meta
    same, other = band_report(shared_data(*TILE2), meta), band_report(other_camera, meta)
    assert all(b.distance is None for b in same.bands + other.bands)
    assert not same.drifted and other.drifted
    assert "distance" not in other.verdict() and "mean -1.44 sd" in other.verdict()


def test_histogram_remedy_gives_tile1_quantiles_and_is_recorded(tmp_path: Path, bundle: Path,
                                                                other_camera: Path) -> None:  # fmt: skip
    loaded = load_bundle(bundle)
    report = band_report(other_camera, loaded.meta)
    normalization = remedied_normalization(loaded.meta.normalization, "histogram", report, bundle, other_camera)
    assert isinstance(normalization, HistogramMatchedNormalization)
    with rasterio.open(shared_data(*TILE1)) as t1, rasterio.open(other_camera) as cam:
        tile1, shifted = t1.read(), cam.read()
    matched = normalization.matched(shifted)
    q = np.linspace(0.05, 0.95, 19)
    for band in range(3):
        gap_before = np.abs(np.quantile(shifted[band], q) - np.quantile(tile1[band], q)).max()
        gap_after = np.abs(np.quantile(matched[band], q) - np.quantile(tile1[band], q)).max()
        assert gap_before > 20 and gap_after <= 3.0, (band, gap_before, gap_after)

    out = tmp_path / "classes.tif"
    segment_mosaic(other_camera, bundle, out, InferOptions(remedy="histogram", workers=1),
                   progress=Progress(ProgressMode.none))  # fmt: skip
    with rasterio.open(out) as ds:
        recorded = json.loads(ds.tags()["GEOSEG_INPUT"])
    assert recorded["remedy"] == "histogram"
    assert len(recorded["curves"]) == 3 and recorded["drift"]["drifted"] is True
    assert "train_hist" not in recorded["drift"]["bands"][0]  # the tag stays small


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_drift_cli_errors_are_one_line(tmp_path: Path, bundle: Path, old_bundle: Path) -> None:
    tile2 = shared_data(*TILE2)
    one_line_error(drift_cli(tmp_path / "missing.tif", "--model", bundle, cwd=tmp_path),
                   "missing.tif", "file not found")  # fmt: skip
    one_line_error(drift_cli(tile2, "--model", tmp_path / "nobundle", cwd=tmp_path), "nobundle", "not found")
    one_line_error(drift_cli(tile2, "--model", old_bundle, "--remedy", "histogram", cwd=tmp_path),
                   "no training histograms", "--remedy mosaic-stats")  # fmt: skip
    (tmp_path / "d.json").write_text("{}")
    one_line_error(drift_cli(tile2, "--model", bundle, "--json", "d.json", cwd=tmp_path), "d.json", "--overwrite")
    one_line_error(drift_cli(tile2, "--model", bundle, "--remedy", "gamma", cwd=tmp_path), "--remedy")
    assert (tmp_path / "d.json").read_text() == "{}"


def test_mosaic_stats_refuses_a_band_without_spread(tmp_path: Path, bundle: Path) -> None:
    """A band stuck at one value (a dead sensor channel) would be stretched without bound: refused, named."""
    with rasterio.open(shared_data(*TILE2)) as src:
        data, profile = src.read(), src.profile
    data[1] = 128
    flat = tmp_path / "flat_green.tif"
    with rasterio.open(flat, "w", **profile) as dst:
        dst.write(data)
    one_line_error(drift_cli(flat, "--model", bundle, "--remedy", "mosaic-stats", cwd=tmp_path),
                   "flat_green.tif", "band 2 has no spread", "--remedy histogram")  # fmt: skip


def test_nan_in_a_float_mosaic(tmp_path: Path, bundle: Path) -> None:
    """A NaN patch is nodata, not a poisoned distance; an all-NaN mosaic is refused; the JSON never holds NaN."""
    with rasterio.open(shared_data(*TILE2)) as src:
        data, profile = src.read().astype(np.float32), src.profile | {"dtype": "float32", "nodata": None}
    data[:, 100:160, 100:160] = np.nan
    patched, empty = tmp_path / "patched.tif", tmp_path / "all_nan.tif"
    with rasterio.open(patched, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(empty, "w", **profile) as dst:
        dst.write(np.full_like(data, np.nan))
    done = drift_cli(patched, "--model", bundle, "--json", "p.json", "--no-model", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "p.json").read_text()
    assert "NaN" not in text and "nan" not in done.stdout.lower().replace("nan ", "")
    distances = [b["distance_sd"] for b in json.loads(text)["bands"]]
    assert all(d is not None and 0 <= d < 1.0 for d in distances)  # tile 2 against tile 1: another scene only
    one_line_error(drift_cli(empty, "--model", bundle, "--json", "e.json", cwd=tmp_path), "all_nan.tif",
                   "no valid pixel")  # fmt: skip
    assert not (tmp_path / "e.json").exists()
