"""Band statistics, scaling/normalization choices, the bundle's input block, quality masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from scipy import ndimage

from geoseg.config import PreprocessConfig, QualityMaskConfig
from geoseg.data import preprocess
from geoseg.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    QUALITY_BLURRED,
    QUALITY_NODATA,
    QUALITY_OK,
    QUALITY_OVEREXPOSED,
    QUALITY_UNDEREXPOSED,
    Normalization,
    choose_normalization,
    compute_band_stats,
)

PERCENTILES = (0, 2, 25, 50, 75, 98, 100)


def _write(path: Path, data: np.ndarray, nodata: float | None = None, alpha: bool = False) -> Path:
    count, h, w = data.shape
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name,
        "crs": CRS.from_epsg(32633), "transform": from_origin(400_000.0, 5_000_000.0, 1.0, 1.0), "nodata": nodata,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if alpha:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return path


def _uint8_rgb(rng: np.random.Generator, h: int = 90, w: int = 110) -> tuple[np.ndarray, np.ndarray]:
    """RGB values 1..255 with a block of nodata pixels (0 in every band)."""
    data = rng.integers(1, 256, (3, h, w), dtype=np.uint8)
    data[:, :, :7] = 0
    data[:, 40:50, 60:80] = 0
    valid = ~(data == 0).all(axis=0)
    return data, valid


def _uint16_band(rng: np.random.Generator, h: int = 100, w: int = 90) -> tuple[np.ndarray, np.ndarray]:
    data = rng.gamma(2.0, 400.0, (1, h, w)).astype(np.uint16) + 1
    data[0, :12, :] = 0
    return data, data[0] != 0


def _check_stats(stats: list, data: np.ndarray, valid: np.ndarray, exact_percentiles: bool) -> None:
    for s, band in zip(stats, data, strict=True):
        v = band[valid].astype(np.float64)
        assert s.count == v.size
        assert s.mean == pytest.approx(v.mean(), rel=1e-9)
        assert s.std == pytest.approx(v.std(), rel=1e-6)
        assert s.min == v.min() and s.max == v.max()
        assert int(s.hist.sum()) == v.size
        for q in PERCENTILES:
            expected = np.percentile(v, q, method="inverted_cdf")
            if exact_percentiles:
                assert s.percentile(q) == expected, q
            else:
                bin_width = s.hist_edges[1] - s.hist_edges[0]
                assert abs(s.percentile(q) - expected) <= bin_width, q


def test_band_stats_uint8_with_nodata(tmp_path: Path) -> None:
    data, valid = _uint8_rgb(np.random.default_rng(0))
    path = _write(tmp_path / "rgb.tif", data, nodata=0)
    _check_stats(compute_band_stats([path], [1, 2, 3]), data, valid, exact_percentiles=True)


def test_band_stats_uint16_with_nodata(tmp_path: Path) -> None:
    data, valid = _uint16_band(np.random.default_rng(1))
    path = _write(tmp_path / "pan.tif", data, nodata=0)
    _check_stats(compute_band_stats([path], [1]), data, valid, exact_percentiles=True)


def test_band_stats_float32_with_alpha(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.normal(0.3, 0.1, (3, 80, 70)).astype(np.float32)
    alpha = np.full((1, 80, 70), 255, dtype=np.float32)
    alpha[0, 50:, 30:] = 0
    rgb[:, 50:, 30:] = 1e6  # garbage under the alpha mask must not count
    path = _write(tmp_path / "float.tif", np.concatenate([rgb, alpha]), alpha=True)
    _check_stats(compute_band_stats([path], [1, 2, 3]), rgb, alpha[0] > 0, exact_percentiles=False)


def test_band_stats_stream_over_blocks_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "STATS_BLOCK", 32)  # many blocks per file
    rng = np.random.default_rng(3)
    (a, valid_a), (b, valid_b) = _uint8_rgb(rng), _uint8_rgb(rng, 70, 45)
    paths = [_write(tmp_path / "a.tif", a, nodata=0), _write(tmp_path / "b.tif", b, nodata=0)]
    calls = []
    stats = compute_band_stats(paths, [3, 1], progress=lambda done, total: calls.append((done, total)))
    assert [s.band for s in stats] == [3, 1]
    both = np.concatenate([a[[2, 0]][:, valid_a], b[[2, 0]][:, valid_b]], axis=1)
    _check_stats(stats, both[:, None, :], np.ones((1, both.shape[1]), dtype=bool), exact_percentiles=True)
    assert calls[-1][0] == calls[-1][1] > 2


# --- normalization choices -----------------------------------------------------------------------


def test_uint8_rgb_pretrained_gets_fixed_range_and_imagenet(tmp_path: Path) -> None:
    data, _ = _uint8_rgb(np.random.default_rng(4))
    stats = compute_band_stats([_write(tmp_path / "rgb.tif", data, nodata=0)], [1, 2, 3])
    norm = choose_normalization(stats, "uint8", PreprocessConfig(), pretrained=True)
    assert norm.scale == [(0.0, 255.0)] * 3
    assert norm.mean == list(IMAGENET_MEAN) and norm.std == list(IMAGENET_STD)


def test_uint16_gets_per_band_percentile_stretch(tmp_path: Path) -> None:
    data, valid = _uint16_band(np.random.default_rng(5))
    stats = compute_band_stats([_write(tmp_path / "pan.tif", data, nodata=0)], [1])
    norm = choose_normalization(stats, "uint16", PreprocessConfig(), pretrained=True)
    v = data[0][valid].astype(np.float64)
    lo, hi = np.percentile(v, 2, method="inverted_cdf"), np.percentile(v, 98, method="inverted_cdf")
    assert norm.scale == [(lo, hi)]
    # one band: ImageNet statistics do not apply, the dataset's own (after scaling) do
    scaled = np.clip((v - lo) / (hi - lo), 0, 1)
    assert norm.mean[0] == pytest.approx(scaled.mean(), rel=1e-9)
    assert norm.std[0] == pytest.approx(scaled.std(), rel=1e-6)


def test_uint16_rgb_percentiles_differ_per_band(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    data = np.stack(
        [rng.integers(100, 1000, (50, 50)), rng.integers(2000, 9000, (50, 50)), rng.integers(0, 300, (50, 50))]
    )
    data = data.astype(np.uint16)
    stats = compute_band_stats([_write(tmp_path / "ms.tif", data)], [1, 2, 3])
    norm = choose_normalization(stats, "uint16", PreprocessConfig(percentiles=(5.0, 95.0)), pretrained=True)
    for (lo, hi), band in zip(norm.scale, data, strict=True):
        assert lo == np.percentile(band, 5, method="inverted_cdf")
        assert hi == np.percentile(band, 95, method="inverted_cdf")
    assert norm.mean == list(IMAGENET_MEAN)  # 3 bands into a pretrained encoder


@pytest.mark.parametrize(("bands", "pretrained"), [([1, 2, 3], False), ([1, 2], True)])
def test_dataset_mean_std_otherwise(tmp_path: Path, bands: list[int], pretrained: bool) -> None:
    data, valid = _uint8_rgb(np.random.default_rng(7))
    stats = compute_band_stats([_write(tmp_path / "rgb.tif", data, nodata=0)], bands)
    norm = choose_normalization(stats, "uint8", PreprocessConfig(), pretrained=pretrained)
    assert norm.scale == [(0.0, 255.0)] * len(bands)
    for i, b in enumerate(bands):
        scaled = data[b - 1][valid] / 255.0
        assert norm.mean[i] == pytest.approx(scaled.mean(), rel=1e-9)
        assert norm.std[i] == pytest.approx(scaled.std(), rel=1e-6)


def test_fixed_scale_and_forced_normalization(tmp_path: Path) -> None:
    data, _ = _uint16_band(np.random.default_rng(8))
    stats = compute_band_stats([_write(tmp_path / "pan.tif", data, nodata=0)], [1])
    cfg = PreprocessConfig(scaling="fixed", scale=(0.0, 4095.0), normalization="dataset")
    assert choose_normalization(stats, "uint16", cfg, pretrained=True).scale == [(0.0, 4095.0)]
    with pytest.raises(ValueError, match="3 bands"):
        choose_normalization(stats, "uint16", PreprocessConfig(normalization="imagenet"), pretrained=True)


# --- the formula and its JSON --------------------------------------------------------------------


def test_apply_follows_the_design_formula() -> None:
    rng = np.random.default_rng(9)
    raw = rng.integers(0, 4096, (3, 20, 30)).astype(np.uint16)
    norm = Normalization([(100.0, 3000.0), (0.0, 4095.0), (500.0, 600.0)], [0.1, 0.5, 0.9], [0.2, 0.3, 0.05])
    out = norm.apply(raw)
    assert out.dtype == np.float32 and out.shape == raw.shape
    for i in range(3):
        lo, hi = norm.scale[i]
        expected = (np.clip((raw[i].astype(np.float64) - lo) / (hi - lo), 0, 1) - norm.mean[i]) / norm.std[i]
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.standardize(norm.scaled(raw)), out)


def test_apply_clips_to_the_scale_range() -> None:
    norm = Normalization([(10.0, 20.0)], [0.0], [1.0])
    raw = np.array([[[0, 10, 15, 20, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(norm.apply(raw)[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0])


def test_json_shared_scale_is_written_as_a_pair() -> None:
    norm = Normalization([(0.0, 255.0)] * 3, list(IMAGENET_MEAN), list(IMAGENET_STD))
    block = json.loads(json.dumps(norm.to_json()))
    assert block == {"scale": [0.0, 255.0], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert Normalization.from_json(block, 3) == norm


def test_json_per_band_scale_is_a_list_of_pairs() -> None:
    norm = Normalization([(1.0, 2.0), (3.0, 40.0)], [0.25, 0.5], [0.1, 0.2])
    block = json.loads(json.dumps(norm.to_json()))
    assert block["scale"] == [[1.0, 2.0], [3.0, 40.0]]
    assert Normalization.from_json(block, 2) == norm


def test_from_json_accepts_integers_as_in_design() -> None:
    norm = Normalization.from_json({"scale": [0, 255], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, 3)
    assert norm.scale == [(0.0, 255.0)] * 3


# --- quality mask --------------------------------------------------------------------------------


def test_quality_codes_flag_each_defect() -> None:
    rng = np.random.default_rng(10)
    scaled = rng.uniform(0.2, 0.8, (3, 200, 200)).astype(np.float32)
    scaled[:, 20:70, 20:70] = 1.0  # blown out
    scaled[:, 20:70, 120:170] = 0.0  # black
    blurred = ndimage.gaussian_filter(scaled, sigma=(0, 4, 4))
    scaled[:, 110:190, 20:100] = blurred[:, 110:190, 20:100]
    valid = np.ones((200, 200), dtype=bool)
    valid[150:190, 150:190] = False
    codes = quality_codes_default(scaled, valid)
    assert codes.dtype == np.uint8 and codes.shape == valid.shape
    assert (codes[20:70, 20:70] == QUALITY_OVEREXPOSED).all()
    assert (codes[20:70, 120:170] == QUALITY_UNDEREXPOSED).all()
    assert (codes[130:170, 40:80] == QUALITY_BLURRED).all()  # the blurred area, away from its border
    assert (codes[150:190, 150:190] == QUALITY_NODATA).all()
    assert (codes[90:100, :] == QUALITY_OK).all()  # sharp texture between the defects
    assert (codes[110:140, 120:140] == QUALITY_OK).all()


def test_quality_saturation_needs_every_band() -> None:
    rng = np.random.default_rng(11)
    scaled = rng.uniform(0.2, 0.8, (3, 60, 60)).astype(np.float32)
    scaled[0, 10:40, 10:40] = 1.0  # only red saturated: not a blown highlight
    codes = quality_codes_default(scaled, np.ones((60, 60), dtype=bool))
    assert (codes[10:40, 10:40] != QUALITY_OVEREXPOSED).all()


def quality_codes_default(scaled: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return preprocess.quality_codes(scaled, valid, QualityMaskConfig(enabled=True))
