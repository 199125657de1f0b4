"""Domain drift: how far a mosaic's bands are from the statistics the model was trained on.

The check reads a decimated copy of the mosaic (GDAL picks overviews where the file has them), so it
costs seconds on mosaics of any size. The remedy matches each band's mean and spread to training's
by an affine map of the raw values, folded into the normalization's scaling range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling

from geoseg.data.preprocess import Normalization
from geoseg.io.raster import open_raster

SAMPLE_PIXELS = 4_000_000
MEAN_SHIFT_LIMIT = 1.0  # training standard deviations; a change of scene content alone moves means ~0.8
SPREAD_RATIO_LIMIT = 1.5  # spread larger or smaller than training's by this factor


@dataclass(frozen=True)
class BandDrift:
    band: int
    train_mean: float
    train_std: float
    mosaic_mean: float
    mosaic_std: float

    @property
    def mean_shift(self) -> float:
        """Shift of the mean, in training standard deviations."""
        return (self.mosaic_mean - self.train_mean) / max(self.train_std, 1e-9)

    @property
    def spread_ratio(self) -> float:
        return self.mosaic_std / max(self.train_std, 1e-9)

    @property
    def drifted(self) -> bool:
        ratio = self.spread_ratio
        return abs(self.mean_shift) > MEAN_SHIFT_LIMIT or not 1 / SPREAD_RATIO_LIMIT <= ratio <= SPREAD_RATIO_LIMIT


@dataclass(frozen=True)
class DriftReport:
    bands: list[BandDrift]

    @property
    def drifted(self) -> bool:
        return any(b.drifted for b in self.bands)

    def verdict(self) -> str:
        worst = max(self.bands, key=lambda b: abs(b.mean_shift))
        detail = ", ".join(
            f"band {b.band}: mean {b.mean_shift:+.2f} sd, spread ×{b.spread_ratio:.2f}" for b in self.bands
        )
        if not self.drifted:
            return f"no drift: the mosaic's bands match the training statistics ({detail})"
        return (
            f"drift: band {worst.band} is {worst.mean_shift:+.2f} training sd off ({detail}); results may suffer: "
            "try --match-stats, or train on imagery like this"
        )

    def to_json(self) -> dict:
        return {
            "drifted": self.drifted,
            "limits": {"mean_shift_sd": MEAN_SHIFT_LIMIT, "spread_ratio": SPREAD_RATIO_LIMIT},
            "bands": [
                {"band": b.band, "train_mean": b.train_mean, "train_std": b.train_std, "mosaic_mean": b.mosaic_mean,
                 "mosaic_std": b.mosaic_std, "mean_shift_sd": b.mean_shift, "spread_ratio": b.spread_ratio,
                 "drifted": b.drifted}
                for b in self.bands
            ],
        }  # fmt: skip


def mosaic_band_stats(path: Path, bands: list[int]) -> list[tuple[float, float]]:
    """(mean, std) of each band over valid pixels of a decimated read of at most ~4 Mpx."""
    with open_raster(path) as ds:
        factor = max(1.0, math.sqrt(ds.width * ds.height / SAMPLE_PIXELS))
        shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
        data = ds.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
        valid = ds.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
    values = data[:, valid].astype(np.float64)
    if values.size == 0:
        return [(math.nan, math.nan)] * len(bands)
    return [(float(v.mean()), float(v.std())) for v in values]


def drift_report(path: Path, bands: list[int], train_stats: dict | None) -> DriftReport | None:
    """Compare a mosaic with a bundle's ``train_stats``; None when the bundle has none."""
    if not train_stats or "bands" not in train_stats:
        return None
    trained = {int(b["band"]): b for b in train_stats["bands"]}
    if any(b not in trained for b in bands):
        return None
    measured = mosaic_band_stats(path, bands)
    return DriftReport(
        [
            BandDrift(b, float(trained[b]["mean"]), float(trained[b]["std"]), mean, std)
            for b, (mean, std) in zip(bands, measured, strict=True)
        ]
    )


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
