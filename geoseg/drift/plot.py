"""The drift report as a picture: per band, the training histogram and the mosaic's, side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoseg.data.histogram import Histogram
from geoseg.drift.report import DriftReport
from geoseg.io.raster import atomic_path


def _density(hist: Histogram) -> np.ndarray:
    return hist.counts / max(hist.total, 1) / np.diff(hist.edges)


def write_drift_plot(report: DriftReport, path: Path, title: str) -> Path:
    """One panel per band (PNG); bands without a training histogram show the mosaic's alone."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot's import
    from matplotlib import pyplot as plt

    panels = max(1, len(report.bands))
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), squeeze=False)
    for ax, band in zip(axes[0], report.bands, strict=False):
        for hist, label, colour in ((band.train_hist, "training", "#4682b4"), (band.mosaic_hist, "mosaic", "#b22222")):
            if hist is not None:
                ax.stairs(_density(hist), hist.edges, label=label, color=colour, fill=label == "training", alpha=0.6)
        ax.set_title(band.summary().replace(": ", "\n", 1), fontsize=9, color="#b22222" if band.drifted else "black")
        ax.set_xlabel("raw pixel value")
        ax.set_yticks([])
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
