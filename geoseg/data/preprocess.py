"""Band statistics, scaling and normalization, and quality masks.

Everything here is explicit and ends up recorded in the model bundle, so inference applies
exactly what training saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from scipy import ndimage

from geoseg.config import PreprocessConfig, QualityMaskConfig
from geoseg.data.histogram import BINS, Histogram, bin_edges
from geoseg.errors import InputError
from geoseg.io.raster import block_windows, first_line, open_raster, read_window

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOAT_BINS = 4096
STATS_BLOCK = 1024


@dataclass
class BandStats:
    """Streaming statistics of one band over the valid pixels of one or more rasters."""

    band: int
    count: int
    mean: float
    std: float
    min: float
    max: float
    hist_edges: np.ndarray  # len(hist) + 1 edges in raw units
    hist: np.ndarray
    integer: bool = False  # integer data: one fine bin per whole value, the value at its left edge

    def percentile(self, q: float) -> float:
        """Percentile from the histogram (exact for integer rasters, bin-accurate for floats)."""
        cumulative = np.cumsum(self.hist)
        if cumulative[-1] == 0:
            return float(self.min)
        # the smallest value with at least q% of the pixels at or below it (numpy's "inverted_cdf");
        # at least one pixel, so q = 0 gives the minimum rather than the histogram's lowest edge
        target = max(q / 100.0 * cumulative[-1], 1)
        idx = int(np.searchsorted(cumulative, target, side="left"))
        return float(self.hist_edges[min(idx, len(self.hist) - 1)])

    def histogram(self, bins: int = BINS) -> Histogram:
        """At most ``bins`` bins over the valid range (whole-value-centred for integer data)."""
        values = self.hist_edges[:-1] if self.integer else (self.hist_edges[:-1] + self.hist_edges[1:]) / 2
        edges = bin_edges(self.min, self.max, self.integer, bins)
        return Histogram.binned(values, edges, weights=self.hist)

    def to_json(self, bins: int = BINS) -> dict:
        """Compact summary for the bundle's ``train_stats`` (drift checks and histogram matching use it)."""
        return {
            "band": self.band,
            "count": int(self.count),
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "p2": self.percentile(2),
            "p98": self.percentile(98),
            **self.histogram(bins).to_json(),
        }


def compute_band_stats(
    paths: Sequence[Path], bands: Sequence[int], progress: Callable[[int, int], None] | None = None
) -> list[BandStats]:
    """Per-band statistics of the valid pixels of ``paths``, read block by block."""
    with open_raster(paths[0]) as ds:
        dtype = np.dtype(ds.dtypes[0])
    integer = dtype.kind in "ui" and dtype.itemsize <= 2
    if integer:
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        edges = np.arange(lo, hi + 2, dtype=np.float64)
    else:
        lo, hi = _valid_range(paths, bands)
        edges = np.linspace(lo, hi if hi > lo else lo + 1, FLOAT_BINS + 1)

    n = len(bands)
    hists = np.zeros((n, len(edges) - 1), dtype=np.int64)
    sums = np.zeros(n)
    sq_sums = np.zeros(n)
    mins = np.full(n, np.inf)
    maxs = np.full(n, -np.inf)
    count = 0
    windows = [(p, w) for p in paths for w in _stat_windows(p)]
    for done, (path, window) in enumerate(windows, 1):
        with open_raster(path) as ds:
            try:
                data, valid = read_window(ds, bands, window)
            except RasterioIOError as exc:
                raise InputError(f"could not be read to the end ({first_line(exc)}); re-copy it", path) from None
        values = data[:, valid]
        if values.size:
            count += values.shape[1]
            for i in range(n):
                v = values[i]
                if integer:
                    hists[i] += np.bincount((v.astype(np.int64) - lo), minlength=hists.shape[1])
                else:
                    hists[i] += np.histogram(v, bins=edges)[0]
                vf = v.astype(np.float64)
                sums[i] += vf.sum()
                sq_sums[i] += np.square(vf).sum()
                mins[i] = min(mins[i], vf.min())
                maxs[i] = max(maxs[i], vf.max())
        if progress:
            progress(done, len(windows))
    if count == 0:
        mins[:] = 0
        maxs[:] = 0
    means = sums / max(count, 1)
    stds = np.sqrt(np.maximum(sq_sums / max(count, 1) - means**2, 0))
    return [
        BandStats(
            int(b), count, float(means[i]), float(stds[i]), float(mins[i]), float(maxs[i]), edges, hists[i], integer
        )
        for i, b in enumerate(bands)
    ]


def _stat_windows(path: Path) -> list[Window]:
    with open_raster(path) as ds:
        return list(block_windows(ds.width, ds.height, STATS_BLOCK))


def _valid_range(paths: Sequence[Path], bands: Sequence[int]) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for path in paths:
        for window in _stat_windows(path):
            with open_raster(path) as ds:
                data, valid = read_window(ds, bands, window)
            values = data[:, valid]
            values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            if values.size:
                lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    return (0.0, 1.0) if not np.isfinite(lo) else (lo, hi)


TABLE_DTYPES = ("uint8", "uint16")  # dtypes whose every value fits a lookup table


@dataclass(frozen=True)
class Normalization:
    """Raw pixels → network input: ``(clip((x - lo) / (hi - lo), 0, 1) - mean) / std`` per band."""

    scale: list[tuple[float, float]]
    mean: list[float]
    std: list[float]

    def apply(self, raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """(bands, h, w) raw array → float32 network input; 0 at pixels not ``valid``.

        Training (between ``scaled`` and ``standardize`` it augments) and inference prepare a window
        this way alike, so nodata reaches the network as the same neutral value in both.
        """
        scaled = self.scaled(raw, valid)
        if scaled.dtype != np.float32:
            return self.standardize(scaled)
        _, _, mean, std = self.columns()
        scaled -= mean  # standardize's arithmetic, in place: a third of its time, the same bits
        scaled /= std
        return scaled

    def value_table(self, dtype: np.dtype) -> np.ndarray | None:
        """The network input of every value of an 8- or 16-bit ``dtype``, per band: float32 (bands, levels),
        ``apply``'s own numbers (remedies included), made once. None for other dtypes.

        With it a window can travel to the network's device in its own dtype and be normalized there by a
        lookup (``model.forward.RawBatch``).
        """
        if np.dtype(dtype).name not in TABLE_DTYPES:
            return None
        tables = self.__dict__.setdefault("_value_tables", {})  # a cache, not a field: frozen, and not pickled
        name = np.dtype(dtype).name
        if name not in tables:
            levels = np.arange(int(np.iinfo(dtype).max) + 1, dtype=dtype)
            every_value = np.ascontiguousarray(np.broadcast_to(levels, (len(self.scale), 1, levels.size)))
            tables[name] = np.ascontiguousarray(self.apply(every_value)[:, 0, :])
        return tables[name]

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if not key.endswith("_tables")}

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lo, span, mean, std), each float32 of shape (bands, 1, 1): what broadcasts over a (bands, h, w)
        window. The ONNX graph and the ONNX runner use the same numbers."""
        lo = np.asarray([s[0] for s in self.scale], dtype=np.float32)[:, None, None]
        hi = np.asarray([s[1] for s in self.scale], dtype=np.float32)[:, None, None]
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return lo, hi - lo, mean, std

    def scaled(self, raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Raw values → 0..1; pixels not ``valid`` take each band's mean, which standardizes to 0."""
        lo, span, mean, _ = self.columns()
        # a fresh float32 array of the result's shape, so the arithmetic below can run in place
        scaled = np.broadcast_to(raw, np.broadcast_shapes(raw.shape, lo.shape)).astype(np.float32)
        scaled -= lo
        scaled /= span
        np.clip(scaled, 0.0, 1.0, out=scaled)
        if valid is not None and not valid.all():
            scaled = np.where(valid[None], scaled, mean)
        return scaled

    def standardize(self, scaled: np.ndarray) -> np.ndarray:
        _, _, mean, std = self.columns()
        return ((scaled - mean) / std).astype(np.float32)

    def to_json(self) -> dict:
        """The bundle's ``input`` block (docs/formats.md, "The input block"); a range all bands share is written
        as one [lo, hi]."""
        shared = all(s == self.scale[0] for s in self.scale)
        scale = list(self.scale[0]) if shared else [list(s) for s in self.scale]
        return {"scale": scale, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, block: dict, n_bands: int) -> Normalization:
        scale = block["scale"]
        pairs = [tuple(scale)] * n_bands if not isinstance(scale[0], list | tuple) else [tuple(s) for s in scale]
        return cls(
            [(float(a), float(b)) for a, b in pairs],
            [float(m) for m in block["mean"]],
            [float(s) for s in block["std"]],
        )


def choose_normalization(
    stats: Sequence[BandStats], dtype: str, cfg: PreprocessConfig, pretrained: bool
) -> Normalization:
    """Pick scaling and standardization, and record them in the bundle (docs/formats.md, "The input block").

    Scaling: uint8 → [0, 255]; uint16/float → per-band percentile stretch (unless fixed).
    Standardization: ImageNet mean/std for 3-band input to a pretrained encoder; otherwise the
    dataset's own mean/std after scaling.
    """
    scaling = cfg.scaling
    if scaling == "auto":
        scaling = "fixed" if dtype == "uint8" else "percentile"
    if scaling == "fixed":
        scale = [cfg.scale or (0.0, 255.0)] * len(stats)
    else:
        scale = []
        for s in stats:
            lo, hi = s.percentile(cfg.percentiles[0]), s.percentile(cfg.percentiles[1])
            scale.append((lo, hi if hi > lo else lo + 1.0))
    normalization = cfg.normalization
    if normalization == "auto":
        normalization = "imagenet" if pretrained and len(stats) == 3 else "dataset"
    if normalization == "imagenet":
        if len(stats) != 3:
            raise ValueError("ImageNet normalization needs exactly 3 bands")
        return Normalization(scale, list(IMAGENET_MEAN), list(IMAGENET_STD))
    means, stds = [], []
    for s, (lo, hi) in zip(stats, scale, strict=True):
        centres = (s.hist_edges[:-1] + s.hist_edges[1:]) / 2
        if s.integer:  # integer bins: the value is the left edge
            centres = s.hist_edges[:-1]
        scaled = np.clip((centres - lo) / (hi - lo), 0, 1)
        total = max(int(s.hist.sum()), 1)
        mean = float((scaled * s.hist).sum() / total)
        var = float((np.square(scaled - mean) * s.hist).sum() / total)
        means.append(mean)
        stds.append(max(var**0.5, 1e-3))
    return Normalization(scale, means, stds)


# Quality mask codes, as written by `geoseg quality-mask`.
QUALITY_OK, QUALITY_OVEREXPOSED, QUALITY_UNDEREXPOSED, QUALITY_BLURRED, QUALITY_NODATA = 0, 1, 2, 3, 255


def quality_codes(scaled: np.ndarray, valid: np.ndarray, cfg: QualityMaskConfig) -> np.ndarray:
    """Classify each pixel of a scaled (bands, h, w) 0..1 image as ok, over-/underexposed or blurred.

    Saturation: every band at or above ``overexposed`` (blown highlights) or every band at or
    below ``underexposed`` (crushed shadows). Blur: the local variance of the Laplacian of the
    band mean over ``blur_window`` pixels is below ``blur_threshold``; flat-but-sharp areas
    (water, tarmac) also score low, so tune the threshold on your imagery with the mask command.
    """
    codes = np.full(valid.shape, QUALITY_OK, dtype=np.uint8)
    gray = scaled.mean(axis=0)
    laplacian = ndimage.laplace(gray.astype(np.float64))
    mean = ndimage.uniform_filter(laplacian, cfg.blur_window, mode="reflect")
    mean_sq = ndimage.uniform_filter(laplacian**2, cfg.blur_window, mode="reflect")
    codes[(mean_sq - mean**2) < cfg.blur_threshold] = QUALITY_BLURRED
    codes[scaled.max(axis=0) <= cfg.underexposed] = QUALITY_UNDEREXPOSED
    codes[scaled.min(axis=0) >= cfg.overexposed] = QUALITY_OVEREXPOSED
    codes[~valid] = QUALITY_NODATA
    return codes
