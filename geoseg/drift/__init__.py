"""Domain drift: measure how far a mosaic is from a model's training data, and remedy it at inference."""

from geoseg.drift.remedies import REMEDIES, matched_normalization, remedied_normalization
from geoseg.drift.report import DriftReport, drift_report, mosaic_band_stats

__all__ = [
    "REMEDIES",
    "DriftReport",
    "drift_report",
    "matched_normalization",
    "mosaic_band_stats",
    "remedied_normalization",
]
