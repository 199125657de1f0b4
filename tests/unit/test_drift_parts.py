"""Histograms (distance, matching), the energy-based adaptation term and the adaptation config, on arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from geoseg.adaptation import energy_term, free_energy
from geoseg.config import IGNORE_INDEX, parse_config
from geoseg.data.histogram import Histogram, MatchCurve, wasserstein
from geoseg.data.preprocess import Normalization
from geoseg.drift.remedies import HistogramMatchedNormalization
from geoseg.errors import ConfigError

QUANTILES = np.linspace(0.02, 0.98, 25)


def skewed_uint8(rng: np.random.Generator, n: int, a: float, b: float) -> np.ndarray:
    return np.rint(rng.beta(a, b, n) * 255).astype(np.uint8)


def test_integer_bins_are_centred_on_whole_values() -> None:
    hist = Histogram.of_values(np.array([3, 4, 4, 10], dtype=np.uint8), integer=True)
    assert hist.edges[0] == 2.5 and hist.edges[-1] == 10.5
    assert hist.counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 1]
    assert hist.mean() == pytest.approx(np.mean([3, 4, 4, 10]))


def test_wasserstein_agrees_with_scipy_and_a_shift_moves_it_by_the_shift() -> None:
    rng = np.random.default_rng(0)
    a = skewed_uint8(rng, 50_000, 2, 5)
    b = skewed_uint8(rng, 40_000, 5, 2)
    ours = wasserstein(Histogram.of_values(a, True), Histogram.of_values(b, True))
    assert ours == pytest.approx(wasserstein_distance(a, b), rel=0.01)
    shifted = (a.astype(np.int64) + 17).astype(np.uint16)
    assert wasserstein(Histogram.of_values(a, True), Histogram.of_values(shifted, True)) == pytest.approx(17, abs=0.05)


def test_histogram_matching_gives_the_training_quantiles() -> None:
    rng = np.random.default_rng(1)
    training = skewed_uint8(rng, 80_000, 2, 2)
    mosaic = skewed_uint8(rng, 60_000, 1.2, 4)  # a darker, more skewed camera
    curve = MatchCurve.between(Histogram.of_values(mosaic, True), Histogram.of_values(training, True))
    matched = curve.apply(mosaic)
    before = np.abs(np.quantile(mosaic, QUANTILES) - np.quantile(training, QUANTILES)).max()
    after = np.abs(np.quantile(matched, QUANTILES) - np.quantile(training, QUANTILES)).max()
    assert before > 40
    assert after <= 2.0  # grey levels; where a dense dark mosaic level spreads over a sparse training range
    # Exact up to the mosaic's own discreteness: each of its grey levels maps to one value, so a quantile
    # can miss by at most half the share of the most frequent level.
    reached = Histogram.of_values(training, True).cdf(np.quantile(matched, QUANTILES))
    assert np.abs(reached - QUANTILES).max() <= np.bincount(mosaic).max() / mosaic.size / 2
    assert np.all(np.diff(curve.apply(np.arange(256, dtype=np.uint8))) >= 0)  # monotone: no tone is inverted


def test_histogram_matched_normalization_feeds_the_network_the_matched_values() -> None:
    rng = np.random.default_rng(2)
    raw = skewed_uint8(rng, 3 * 32 * 32, 1.5, 3).reshape(3, 32, 32)
    training = skewed_uint8(rng, 30_000, 3, 3)
    curves = tuple(
        MatchCurve.between(Histogram.of_values(band.ravel(), True), Histogram.of_values(training, True)) for band in raw
    )
    base = Normalization([(0.0, 255.0)] * 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    matched = HistogramMatchedNormalization(base.scale, base.mean, base.std, curves)
    expected = base.apply(np.stack([c.apply(b) for c, b in zip(curves, raw, strict=True)]))
    np.testing.assert_allclose(matched.apply(raw), expected, rtol=1e-6)
    assert not np.allclose(matched.apply(raw), base.apply(raw))


def test_free_energy_is_minus_logsumexp() -> None:
    logits = torch.tensor([[[[0.0]], [[np.log(3.0)]]]])  # two classes: exp sums to 4
    assert free_energy(logits).item() == pytest.approx(-np.log(4.0))


def _energy_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Conv2d(3, 4, 1)
    source = torch.randn(2, 3, 8, 8)
    target = torch.randn(2, 3, 8, 8) * 0.3 + 2.0  # another "camera"
    source_mask = torch.zeros(2, 8, 8, dtype=torch.uint8)
    target_mask = torch.zeros(2, 8, 8, dtype=torch.uint8)
    return model, source, target, source_mask, target_mask


def test_a_step_on_the_energy_term_lowers_target_free_energy_relative_to_source() -> None:
    model, source, target, source_mask, target_mask = _energy_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def gap() -> float:
        with torch.no_grad():
            return float(free_energy(model(target)).mean() - free_energy(model(source)).mean())

    before = gap()
    for _ in range(3):
        optimizer.zero_grad()
        term, _ = energy_term(model(source), source_mask, model(target), target_mask)
        term.backward()
        optimizer.step()
    assert gap() < before - 0.1


def test_energy_term_is_bounded_and_leaves_source_logits_alone() -> None:
    model, source, target, source_mask, target_mask = _energy_setup()
    source_logits = model(source).detach().requires_grad_()
    target_logits = (model(target) + 50.0).detach().requires_grad_()  # far below the source energy
    term, gap = energy_term(source_logits, source_mask, target_logits, target_mask)
    term.backward()
    assert gap is not None and gap < -40
    assert 0 <= term.item() < 1e-15  # softplus: no reward for pushing further
    assert source_logits.grad is None or not source_logits.grad.any()  # the source is the reference


def test_energy_term_ignores_masked_pixels_and_empty_sides() -> None:
    model, source, target, source_mask, target_mask = _energy_setup()
    target_mask[:, :4] = IGNORE_INDEX
    base, _ = energy_term(model(source), source_mask, model(target), target_mask)
    garbage = target.clone()
    garbage[:, :, :4] = 1e4  # nodata pixels with absurd values must not count
    again, _ = energy_term(model(source), source_mask, model(garbage), target_mask)
    assert again.item() == pytest.approx(base.item())
    empty, gap = energy_term(model(source), source_mask, model(target), torch.full_like(target_mask, IGNORE_INDEX))
    assert gap is None and empty.item() == 0.0


BASE = {
    "data": {"images": ["a.tif"], "labels": "a.gpkg", "label_field": "c", "classes": {1: "x", 2: "y"}},
}


def test_adaptation_section_parses_targets_relative_to_the_config(tmp_path: Path) -> None:
    cfg = parse_config({**BASE, "adaptation": {"targets": "other/b.tif"}}, tmp_path / "c.yaml")
    assert cfg.adaptation.targets == [tmp_path / "other" / "b.tif"]
    assert cfg.adaptation.weight == 0.01 and cfg.adaptation.enabled
    assert not parse_config(BASE, tmp_path / "c.yaml").adaptation.enabled


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"targets": ["b.tif"], "labels": "b.gpkg"}, "adaptation.labels: adaptation never reads target labels"),
        ({"targets": ["b.tif"], "weight": -1}, "adaptation.weight: expected a number"),
        ({"targets": {"b": 1}}, "adaptation.targets: expected one or more"),
        ({"target": ["b.tif"]}, "adaptation: unknown key(s) ['target']"),
    ],
)
def test_adaptation_section_errors_name_the_key(tmp_path: Path, section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_config({**BASE, "adaptation": section}, tmp_path / "c.yaml")
