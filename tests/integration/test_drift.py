"""The drift check at inference, on real tiles: another scene passes, a different camera's look is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.data.preprocess import compute_band_stats
from geoseg.drift import drift_report, matched_normalization, mosaic_band_stats
from geoseg.infer.run import InferOptions, segment_mosaic
from geoseg.model.bundle import load_bundle
from geoseg.progress import Progress, ProgressMode
from tests.conftest import make_random_bundle, shared_data


@pytest.fixture(scope="module")
def tile1_stats() -> dict:
    tile1 = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    return {"bands": [s.to_json() for s in compute_band_stats([tile1], [1, 2, 3])], "dtype": "uint8"}


def camera_shift(source: Path, out: Path) -> Path:
    """Tile 2 as another camera would record it: brighter midtones (gamma 0.6) and a warmer white balance."""
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read().astype(np.float64) / 255
    shifted = data**0.6 * np.array([1.1, 1.0, 0.8])[:, None, None]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.clip(np.rint(shifted * 255), 1, 255).astype(np.uint8))
    return out


def test_another_scene_is_not_drift_but_another_camera_is(tmp_path: Path, tile1_stats: dict) -> None:
    tile2 = shared_data("new_brunswick", "23322E759967N_clipped_1m_2of2.tif")
    same_camera = drift_report(tile2, [1, 2, 3], tile1_stats)
    assert same_camera is not None and not same_camera.drifted, same_camera.verdict()
    other_camera = drift_report(camera_shift(tile2, tmp_path / "shifted.tif"), [1, 2, 3], tile1_stats)
    assert other_camera is not None and other_camera.drifted
    assert "drift: band" in other_camera.verdict()


def test_mosaic_stats_maps_bands_onto_training_and_is_recorded(tmp_path: Path, tile1_stats: dict) -> None:
    shifted = camera_shift(shared_data("new_brunswick", "23322E759967N_clipped_1m_2of2.tif"), tmp_path / "s.tif")
    bundle_dir = make_random_bundle(tmp_path / "b", [1, 2, 3], n_classes=3, tile=128, overlap=16)
    meta_file = bundle_dir / "geoseg.json"
    meta = json.loads(meta_file.read_text())
    meta["train_stats"] = tile1_stats
    meta_file.write_text(json.dumps(meta))
    bundle = load_bundle(bundle_dir)
    report = drift_report(shifted, [1, 2, 3], bundle.meta.train_stats)
    matched = matched_normalization(bundle.meta.normalization, report)
    # After the affine map, the mosaic's scaled mean equals what training's raw mean scales to.
    for band, (mean, _), (lo, hi) in zip(
        report.bands, mosaic_band_stats(shifted, [1, 2, 3]), matched.scale, strict=True
    ):
        assert (mean - lo) / (hi - lo) == pytest.approx(band.train_mean / 255, abs=1e-6)

    out = tmp_path / "classes.tif"
    result = segment_mosaic(
        shifted, bundle_dir, out, InferOptions(remedy="mosaic-stats"), progress=Progress(ProgressMode.none)
    )
    assert result.drift is not None and result.drift.drifted
    with rasterio.open(out) as ds:
        recorded = json.loads(ds.tags()["GEOSEG_INPUT"])
    assert recorded["remedy"] == "mosaic-stats"
    assert recorded["drift"]["drifted"] is True
    assert recorded["normalization"]["scale"] != [0.0, 255.0]
