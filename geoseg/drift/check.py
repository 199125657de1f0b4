"""`geoseg drift`: a mosaic against a model bundle, without segmenting it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rasterio.errors import RasterioIOError

from geoseg.drift.confidence import CONFIDENCE_THRESHOLD, low_confidence
from geoseg.drift.remedies import remedied_normalization
from geoseg.drift.report import DriftReport, compare_bands, sample_mosaic, training_bands
from geoseg.errors import InputError
from geoseg.io.raster import first_line, read_info
from geoseg.model.bundle import Bundle, BundleMeta, check_bundle_fits


def band_report(mosaic: Path, meta: BundleMeta) -> DriftReport:
    """The band comparison (no model run); without training statistics it compares no band."""
    trained = training_bands(meta.train_stats, meta.bands)
    try:
        bands = compare_bands(sample_mosaic(mosaic, meta.bands), meta.bands, trained) if trained else []
    except RasterioIOError as exc:
        raise InputError(f"could not be read ({first_line(exc)}); re-copy it", mosaic) from None
    return DriftReport(bands, adaptation=meta.extra.get("adaptation"))


def training_low_confidence(meta: BundleMeta, threshold: float) -> float | None:
    """The share of low-confidence pixels training measured on its own imagery at ``threshold``, if it did."""
    record = meta.train_stats.get("low_confidence") if isinstance(meta.train_stats, dict) else None
    if not isinstance(record, dict) or record.get("threshold") != threshold:
        return None
    return float(record["share"])


def check_drift(
    mosaic: Path, bundle: Bundle, remedy: str = "none", threshold: float = CONFIDENCE_THRESHOLD, run_model: bool = True
) -> DriftReport:
    """Bands against the training statistics, and (``run_model``) the model's confidence on sampled windows.

    With a ``remedy`` the confidence is measured on the remedied input, as `geoseg infer --remedy` would
    feed it, so the report shows whether the remedy helps the model; the band distances stay those of
    the mosaic as it is.
    """
    info = read_info(mosaic)
    check_bundle_fits(bundle, info)
    meta = bundle.meta
    if sample_mosaic(mosaic, meta.bands).values.shape[1] == 0:
        raise InputError("has no valid pixel (all nodata or NaN, in a read of up to 4 Mpx): there is nothing to "
                         "compare with the training data; check its nodata value", mosaic)  # fmt: skip
    report = band_report(mosaic, meta)
    if not run_model:
        return report
    normalization = remedied_normalization(meta.normalization, remedy, report, bundle.path, mosaic)
    reference = training_low_confidence(meta, threshold)
    try:
        confidence = low_confidence(bundle.model, mosaic, meta.bands, normalization, meta.tile_size, threshold,
                                    reference)  # fmt: skip
    except RasterioIOError as exc:
        raise InputError(f"could not be read ({first_line(exc)}); re-copy it", mosaic) from None
    return replace(report, low_confidence=confidence)
