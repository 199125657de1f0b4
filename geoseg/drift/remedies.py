"""Cheap remedies for drift at inference: map each band of a mosaic onto the training data's distribution.

- ``mosaic-stats`` (per-mosaic normalization): standardize the mosaic with its own mean and spread, i.e.
  map each band affinely onto training's mean and spread. Fixes exposure, white balance and contrast
  changes that are close to linear.
- ``histogram``: map each band through its own CDF and training's inverse CDF, so its whole
  distribution becomes training's. Also fixes non-linear tone curves (gamma), but it also erases real
  differences in scene content (a mosaic with more water than the training data gets brightened).

Both build a :class:`Normalization` the inference engine applies unchanged, and are recorded in the
outputs' metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.data.histogram import MatchCurve
from geoseg.data.preprocess import TABLE_DTYPES, Normalization
from geoseg.drift.report import DriftReport
from geoseg.errors import BundleError, InputError

REMEDIES = ("none", "mosaic-stats", "histogram")


def matched_normalization(normalization: Normalization, report: DriftReport) -> Normalization:
    """The normalization with each band's raw values first mapped onto training's mean and spread.

    x' = a·x + b with a = sd_train / sd_mosaic, b = mean_train − a·mean_mosaic; since the scaling is
    (x' − lo) / (hi − lo), that equals scaling x with lo' = (lo − b) / a and hi' = (hi − b) / a.
    """
    scale = []
    for (lo, hi), band in zip(normalization.scale, report.bands, strict=True):
        a = band.train_std / max(band.mosaic_std, 1e-9)
        b = band.train_mean - a * band.mosaic_mean
        scale.append(((lo - b) / a, (hi - b) / a))
    return Normalization(scale, list(normalization.mean), list(normalization.std))


@dataclass(frozen=True)
class HistogramMatchedNormalization(Normalization):
    """A normalization whose raw values first pass each band's histogram-matching curve."""

    curves: tuple[MatchCurve, ...] = ()

    def matched(self, raw: np.ndarray) -> np.ndarray:
        if raw.dtype.name in TABLE_DTYPES:  # 8- and 16-bit bands: the curve of every value, looked up
            return np.stack([table[band] for table, band in zip(self._lookup(raw.dtype), raw, strict=True)])
        return np.stack([curve.apply(band) for curve, band in zip(self.curves, raw, strict=True)])

    def _lookup(self, dtype: np.dtype) -> list[np.ndarray]:
        """Each band's curve at every value of ``dtype``: the same numbers as ``curve.apply``, made once."""
        tables = self.__dict__.setdefault("_lookup_tables", {})  # a cache, not a field: frozen, and not pickled
        if dtype.name not in tables:
            values = np.arange(int(np.iinfo(dtype).max) + 1, dtype=dtype)
            tables[dtype.name] = [curve.apply(values) for curve in self.curves]
        return tables[dtype.name]

    def scaled(self, raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        return super().scaled(self.matched(raw), valid)


def histogram_matched_normalization(normalization: Normalization, report: DriftReport) -> HistogramMatchedNormalization:
    curves = []
    for band in report.bands:
        if band.train_hist is None or band.mosaic_hist is None:
            raise ValueError(f"band {band.band} has no training histogram")
        curves.append(MatchCurve.between(band.mosaic_hist, band.train_hist))
    return HistogramMatchedNormalization(
        list(normalization.scale), list(normalization.mean), list(normalization.std), tuple(curves)
    )


ZERO_SPREAD = 1e-6  # a band's sd below this share of its mean's size: a constant band, numerically


def remedied_normalization(
    normalization: Normalization, remedy: str, report: DriftReport | None, bundle: Path, mosaic: Path
) -> Normalization:
    """The normalization ``remedy`` asks for; refused in one line when the inputs lack what it needs."""
    if remedy not in REMEDIES:
        raise InputError(f"unknown remedy {remedy!r}; choose one of {', '.join(REMEDIES)}")
    if remedy == "none":
        return normalization
    if report is None or not report.bands:
        raise BundleError(f"has no training statistics for these bands, so --remedy {remedy} cannot be used", bundle)
    if any(b.mosaic_hist is None for b in report.bands):
        raise InputError(f"has no valid pixels to take statistics from, so --remedy {remedy} cannot be used", mosaic)
    if remedy == "mosaic-stats":
        for band in report.bands:
            if not band.mosaic_std > ZERO_SPREAD * max(abs(band.mosaic_mean), 1.0):
                raise InputError(
                    f"band {band.band} has no spread (every valid pixel is about {band.mosaic_mean:g}), so "
                    "--remedy mosaic-stats would stretch it without bound; use --remedy histogram or none",
                    mosaic,
                )
        return matched_normalization(normalization, report)
    if any(b.train_hist is None for b in report.bands):
        raise BundleError(
            "records no training histograms (trained before geoseg kept them); use --remedy mosaic-stats or retrain",
            bundle,
        )
    return histogram_matched_normalization(normalization, report)


def remedy_record(remedy: str, normalization: Normalization) -> dict:
    """What the outputs' metadata says about the remedy applied."""
    record: dict = {"remedy": remedy}
    if isinstance(normalization, HistogramMatchedNormalization):
        record["curves"] = [curve.to_json() for curve in normalization.curves]
    return record
