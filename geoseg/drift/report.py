"""Domain drift: how far a mosaic's bands are from the statistics the model was trained on.

The check reads a decimated copy of the mosaic (GDAL picks overviews where the file has them), so it
costs seconds on mosaics of any size. Each band is compared with the bundle's training histogram by
the Wasserstein-1 distance (the mean absolute shift of pixel values needed to turn one distribution
into the other) in training standard deviations, and by its spread ratio. Bundles from before
histograms were recorded fall back to the shift of the mean, which the distance never undercuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling

from geoseg.data.histogram import Histogram, wasserstein
from geoseg.drift.confidence import LowConfidence
from geoseg.io.raster import finite_pixels, open_raster

SAMPLE_PIXELS = 4_000_000
DISTANCE_LIMIT = 1.0  # training sd; another scene by the same camera moves bands ~0.8 (new_brunswick tiles)
SPREAD_RATIO_LIMIT = 1.5  # spread larger or smaller than training's by this factor
LOW_CONFIDENCE_EXCESS = 0.15  # share of low-confidence pixels above the training imagery's own share
REMEDY_HINT = (
    "try `geoseg infer --remedy histogram` (or mosaic-stats), or adapt the model to this imagery "
    "(adaptation.targets in the training config)"
)


@dataclass(frozen=True)
class MosaicSample:
    """Valid pixels of a decimated read, (bands, n), and whether the data type is an integer one."""

    values: np.ndarray
    integer: bool

    def histogram(self, i: int) -> Histogram:
        return Histogram.of_values(self.values[i], self.integer)


def sample_mosaic(path: Path, bands: list[int]) -> MosaicSample:
    """Valid pixels of ``bands`` from a nearest-neighbour read of at most ~4 Mpx."""
    with open_raster(path) as ds:
        factor = max(1.0, math.sqrt(ds.width * ds.height / SAMPLE_PIXELS))
        shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
        data = ds.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
        valid = ds.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        dtype = np.dtype(ds.dtypes[0])
    valid &= finite_pixels(data)
    return MosaicSample(data[:, valid], dtype.kind in "ui")


def mosaic_band_stats(path: Path, bands: list[int]) -> list[tuple[float, float]]:
    """(mean, std) of each band over valid pixels of a decimated read of at most ~4 Mpx."""
    values = sample_mosaic(path, bands).values.astype(np.float64)
    if values.size == 0:
        return [(math.nan, math.nan)] * len(bands)
    return [(float(v.mean()), float(v.std())) for v in values]


@dataclass(frozen=True)
class BandDrift:
    band: int
    train_mean: float
    train_std: float
    mosaic_mean: float
    mosaic_std: float
    train_hist: Histogram | None = None  # None for bundles from before histograms were recorded
    mosaic_hist: Histogram | None = None

    @property
    def mean_shift(self) -> float:
        """Shift of the mean, in training standard deviations."""
        return (self.mosaic_mean - self.train_mean) / max(self.train_std, 1e-9)

    @property
    def spread_ratio(self) -> float:
        return self.mosaic_std / max(self.train_std, 1e-9)

    @property
    def distance(self) -> float | None:
        """Wasserstein-1 distance to the training histogram, in training standard deviations."""
        if self.train_hist is None or self.mosaic_hist is None:
            return None
        return wasserstein(self.train_hist, self.mosaic_hist) / max(self.train_std, 1e-9)

    @property
    def gap(self) -> float:
        """What the verdict compares with DISTANCE_LIMIT: the distance, else the mean shift."""
        distance = self.distance
        return distance if distance is not None else abs(self.mean_shift)

    @property
    def drifted(self) -> bool:
        if math.isnan(self.mosaic_mean):  # no valid pixel measured: nothing says it drifted
            return False
        ratio = self.spread_ratio
        return self.gap > DISTANCE_LIMIT or not 1 / SPREAD_RATIO_LIMIT <= ratio <= SPREAD_RATIO_LIMIT

    def summary(self) -> str:
        distance = self.distance
        head = f"band {self.band}: " + (f"distance {distance:.2f} sd, " if distance is not None else "")
        return head + f"mean {self.mean_shift:+.2f} sd, spread ×{self.spread_ratio:.2f}"

    def to_json(self) -> dict:
        return {
            "band": self.band, "distance_sd": self.distance, "mean_shift_sd": self.mean_shift,
            "spread_ratio": self.spread_ratio, "drifted": self.drifted, "train_mean": self.train_mean,
            "train_std": self.train_std, "mosaic_mean": self.mosaic_mean, "mosaic_std": self.mosaic_std,
            "train_hist": self.train_hist.to_json() if self.train_hist is not None else None,
            "mosaic_hist": self.mosaic_hist.to_json() if self.mosaic_hist is not None else None,
        }  # fmt: skip


@dataclass(frozen=True)
class DriftReport:
    bands: list[BandDrift]
    low_confidence: LowConfidence | None = None
    adaptation: dict | None = None  # what the bundle was adapted to, if it was

    @property
    def bands_drifted(self) -> bool:
        return any(b.drifted for b in self.bands)

    @property
    def unsure(self) -> bool:
        """The model is unsure on clearly more pixels than on its training imagery."""
        lc = self.low_confidence
        return lc is not None and lc.reference is not None and lc.share > lc.reference + LOW_CONFIDENCE_EXCESS

    @property
    def drifted(self) -> bool:
        return self.bands_drifted or self.unsure

    def verdict(self) -> str:
        parts = []
        if self.bands and all(b.mosaic_hist is None and math.isnan(b.mosaic_mean) for b in self.bands):
            parts.append("bands not compared: the mosaic has no valid pixel (all nodata or NaN)")
        elif self.bands:
            detail = "; ".join(b.summary() for b in self.bands)
            if self.bands_drifted:
                worst = max(self.bands, key=lambda b: b.gap)
                parts.append(
                    f"drift: band {worst.band} is {worst.gap:.2f} training sd from the training data ({detail})"
                )
            else:
                parts.append(f"no drift: the bands match the training data ({detail})")
        else:
            parts.append("bands not compared: the bundle has no training statistics")
        if self.low_confidence is not None:
            parts.append(self.low_confidence.summary())
        if self.unsure and not self.bands_drifted:
            parts[0] = "drift: the model is unsure on far more pixels than on its training imagery"
        if self.adaptation is not None:
            parts.append(f"model adapted to {len(self.adaptation.get('targets', []))} target mosaic(s)")
        if self.drifted:
            parts.append(REMEDY_HINT)
        return "; ".join(parts)

    def to_json(self) -> dict:
        """The report as JSON-safe values: a number that is not finite (no data to measure) is null."""
        return _finite({
            "drifted": self.drifted,
            "verdict": self.verdict(),
            "limits": {"distance_sd": DISTANCE_LIMIT, "spread_ratio": SPREAD_RATIO_LIMIT,
                       "low_confidence_excess": LOW_CONFIDENCE_EXCESS},
            "bands": [b.to_json() for b in self.bands],
            "low_confidence": self.low_confidence.to_json() if self.low_confidence is not None else None,
            "adaptation": self.adaptation,
        })  # fmt: skip

    def without_histograms(self) -> dict:
        """The JSON without the histograms: small enough for a GeoTIFF tag."""
        document = self.to_json()
        for band in document["bands"]:
            band.pop("train_hist"), band.pop("mosaic_hist")
        return document


def _finite(value):
    """``value`` with NaN and ±inf replaced by None, recursively: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def training_bands(train_stats: dict | None, bands: list[int]) -> dict[int, dict] | None:
    """The bundle's per-band training statistics for ``bands``; None when it has none for them all."""
    if not train_stats or "bands" not in train_stats:
        return None
    trained = {int(b["band"]): b for b in train_stats["bands"]}
    return trained if all(b in trained for b in bands) else None


def drift_report(path: Path, bands: list[int], train_stats: dict | None) -> DriftReport | None:
    """Compare a mosaic's bands with a bundle's ``train_stats``; None when the bundle has none."""
    trained = training_bands(train_stats, bands)
    if trained is None:
        return None
    return DriftReport(compare_bands(sample_mosaic(path, bands), bands, trained))


def compare_bands(sample: MosaicSample, bands: list[int], trained: dict[int, dict]) -> list[BandDrift]:
    if sample.values.shape[1] == 0:
        return [BandDrift(b, float(trained[b]["mean"]), float(trained[b]["std"]), math.nan, math.nan) for b in bands]
    values = sample.values.astype(np.float64)
    return [
        BandDrift(b, float(trained[b]["mean"]), float(trained[b]["std"]), float(values[i].mean()),
                  float(values[i].std()), Histogram.from_train_stats(trained[b]), sample.histogram(i))
        for i, b in enumerate(bands)
    ]  # fmt: skip
