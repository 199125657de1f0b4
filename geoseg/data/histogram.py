"""Per-band histograms: made from pixels or read from a bundle's ``train_stats``, compared and matched.

A histogram is read as a piecewise-linear CDF (pixels spread evenly within each bin). Integer data gets
bins centred on whole values (edges at v ± 0.5), so a value sits mid-bin and maps to its mid-CDF:
matching then neither brightens nor darkens a band on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BINS = 256


@dataclass(frozen=True)
class Histogram:
    edges: np.ndarray  # len(counts) + 1, strictly increasing, raw pixel units
    counts: np.ndarray

    @classmethod
    def of_values(cls, values: np.ndarray, integer: bool, bins: int = BINS) -> Histogram:
        lo, hi = float(values.min()), float(values.max())
        return cls.binned(values, bin_edges(lo, hi, integer, bins))

    @classmethod
    def binned(cls, values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> Histogram:
        counts, _ = np.histogram(values, bins=edges, weights=weights)
        return cls(np.asarray(edges, dtype=np.float64), counts.astype(np.int64))

    @classmethod
    def from_train_stats(cls, band: dict) -> Histogram | None:
        """The histogram a bundle recorded for one band; None for bundles from before histograms."""
        edges, counts = band.get("hist_edges"), band.get("hist")
        if not edges or not counts or len(edges) != len(counts) + 1 or sum(counts) <= 0:
            return None
        return cls(np.asarray(edges, dtype=np.float64), np.asarray(counts, dtype=np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _cumulative(self) -> np.ndarray:
        """The CDF at each edge: 0 at the first, 1 at the last."""
        return np.concatenate([[0.0], np.cumsum(self.counts) / max(self.total, 1)])

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return np.interp(x, self.edges, self._cumulative())

    def quantile(self, q: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`cdf`; within an empty bin's plateau the lower end is taken."""
        q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
        cumulative = self._cumulative()
        n = len(self.counts)
        i = np.clip(np.searchsorted(cumulative[1:], q, side="left"), 0, n - 1)
        mass = cumulative[i + 1] - cumulative[i]
        fraction = np.clip((q - cumulative[i]) / np.maximum(mass, 1e-300), 0.0, 1.0)
        return self.edges[i] + fraction * (self.edges[i + 1] - self.edges[i])

    def mean(self) -> float:
        centres = (self.edges[:-1] + self.edges[1:]) / 2
        return float((centres * self.counts).sum() / max(self.total, 1))

    def to_json(self) -> dict:
        return {"hist_edges": [float(e) for e in self.edges], "hist": [int(c) for c in self.counts]}


def bin_edges(lo: float, hi: float, integer: bool, bins: int = BINS) -> np.ndarray:
    """At most ``bins`` bins over [lo, hi]; whole-value-centred, equally wide bins for integer data."""
    if integer:
        width = max(1, math.ceil((hi - lo + 1) / bins))
        n = math.ceil((hi - lo + 1) / width)
        return lo - 0.5 + width * np.arange(n + 1, dtype=np.float64)
    return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)


def wasserstein(a: Histogram, b: Histogram) -> float:
    """Earth mover's (Wasserstein-1) distance in raw units: the area between the two CDFs."""
    grid = np.union1d(a.edges, b.edges)
    grid = np.union1d(grid, (grid[:-1] + grid[1:]) / 2)  # halves the error where the CDFs cross inside a step
    return float(np.trapezoid(np.abs(a.cdf(grid) - b.cdf(grid)), grid))


@dataclass(frozen=True)
class MatchCurve:
    """A monotone map of one band's raw values: mosaic quantile → the training value at that quantile."""

    knots: np.ndarray  # raw mosaic values
    values: np.ndarray  # what they become

    @classmethod
    def between(cls, mosaic: Histogram, training: Histogram) -> MatchCurve:
        return cls(mosaic.edges.copy(), training.quantile(mosaic._cumulative()))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Beyond the mosaic's sampled range values clamp to training's minimum or maximum."""
        return np.interp(raw.astype(np.float64), self.knots, self.values).astype(np.float32)

    def to_json(self, decimals: int = 3) -> dict:
        return {"from": np.round(self.knots, decimals).tolist(), "to": np.round(self.values, decimals).tolist()}
