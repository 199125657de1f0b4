"""Training data as torchgeo GeoDatasets: one orthomosaic with its labels burnt onto its own grid.

Each image is its own :class:`LabeledOrtho` in its own CRS and at its native resolution, so no
window is ever resampled. Windows are read straight from the file with rasterio (no merge of
overlapping files as torchgeo's RasterDataset does), which is what makes the loader fast.
:class:`ImageCollection` lets one DataLoader draw from several images via ``(image, query)`` keys.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import shapely
import torch
from geopandas import GeoDataFrame
from rasterio.windows import Window
from scipy import ndimage
from torch.utils.data import Dataset
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import GeoSlice

from geoseg.config import IGNORE_INDEX, AugmentConfig, QualityMaskConfig
from geoseg.data.preprocess import QUALITY_OK, Normalization, quality_codes
from geoseg.io.raster import GridSpec, clip_window, read_window


class LabeledOrtho(GeoDataset):
    """One orthomosaic and its class-index labels (uint8, IGNORE_INDEX where unlabeled).

    ``ds[xmin:xmax, ymin:ymax]`` (CRS units, as torchgeo samplers yield) returns ``{"image":
    float32 (C, H, W) normalized, "mask": uint8 (H, W) with IGNORE_INDEX where the loss must not
    look}``. Ignored are unlabeled pixels, nodata, pixels outside the image and, if enabled,
    pixels the quality mask flags.
    """

    def __init__(
        self,
        path: Path,
        grid: GridSpec,
        labels: np.ndarray,
        bands: Sequence[int],
        normalization: Normalization,
        quality: QualityMaskConfig | None = None,
        augment: AugmentConfig | None = None,
        out_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.labels = labels
        self.bands = list(bands)
        self.normalization = normalization
        self.quality = quality if quality is not None and quality.enabled else None
        self.augment = augment
        self.out_size = out_size
        self.seed = seed
        self._res = grid.res
        left, bottom, right, top = grid.bounds
        interval = pd.IntervalIndex.from_tuples([(pd.Timestamp.min, pd.Timestamp.max)], closed="both", name="datetime")
        self.index = GeoDataFrame(
            {"path": [str(path)]}, index=interval, geometry=[shapely.box(left, bottom, right, top)], crs=grid.crs
        )
        self._reader: rasterio.DatasetReader | None = None
        self._reader_pid = -1
        self._rng: np.random.Generator | None = None

    def __getitem__(self, query: GeoSlice) -> dict[str, torch.Tensor]:
        x, y, _ = self._disambiguate_slice(query)
        return self.read(self.pixel_window(x.start, x.stop, y.start, y.stop))

    def pixel_window(self, xmin: float, xmax: float, ymin: float, ymax: float) -> Window:
        t = self.grid.transform
        col = round((xmin - t.c) / t.a)
        row = round((ymax - t.f) / t.e)
        return Window(col, row, round((xmax - xmin) / t.a), round((ymin - ymax) / t.e))

    def geo_slice(self, window: Window) -> tuple[slice, slice]:
        """The torchgeo query for a pixel window (inverse of :meth:`pixel_window`)."""
        t = self.grid.transform
        xmin, ymax = t @ (window.col_off, window.row_off)
        xmax, ymin = t @ (window.col_off + window.width, window.row_off + window.height)
        return slice(xmin, xmax), slice(ymin, ymax)

    def read(self, window: Window) -> dict[str, torch.Tensor]:
        raw, valid = read_window(self._dataset(), self.bands, window)
        scaled = self.normalization.scaled(raw, valid)  # nodata as inference sees it (Normalization.apply)
        mask = self._labels_in(window)
        mask[~valid] = IGNORE_INDEX
        if self.quality is not None:
            mask[quality_codes(scaled, valid, self.quality) != QUALITY_OK] = IGNORE_INDEX
        if self.augment is not None:
            scaled, mask = self._augmented(scaled, mask)
        image = torch.from_numpy(self.normalization.standardize(np.ascontiguousarray(scaled)))
        target = torch.from_numpy(np.ascontiguousarray(mask))  # uint8: a quarter of int64 to ship to the GPU
        if self.out_size is not None and image.shape[-1] != self.out_size:
            image, target = _resize(image, target, self.out_size)
        return {"image": image, "mask": target}

    def _labels_in(self, window: Window) -> np.ndarray:
        """Labels under ``window``, IGNORE_INDEX where the window reaches past the image."""
        out = np.full((int(window.height), int(window.width)), IGNORE_INDEX, dtype=np.uint8)
        part = clip_window(window, self.grid.height, self.grid.width)
        if part is not None:
            inner, within = part
            out[within] = self.labels[inner.toslices()]
        return out

    def _augmented(self, scaled: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flips and 90° rotations (views, no copies), then photometric jitter in scaled 0..1 units:
        brightness/contrast, per-band gain (white balance), and on a quarter of the windows each, blur
        and sensor noise. Geometry changes image and mask alike; photometry the image only."""
        aug = self.augment
        assert aug is not None
        rng = self._generator()
        if aug.flips and rng.random() < 0.5:
            scaled, mask = scaled[:, :, ::-1], mask[:, ::-1]
        if aug.flips and rng.random() < 0.5:
            scaled, mask = scaled[:, ::-1, :], mask[::-1, :]
        if aug.rot90 and mask.shape[0] == mask.shape[1]:
            k = int(rng.integers(0, 4))
            scaled, mask = np.rot90(scaled, k, axes=(1, 2)), np.rot90(mask, k)
        if aug.brightness or aug.contrast:
            contrast = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
            brightness = rng.uniform(-aug.brightness, aug.brightness)
            centre = float(scaled.mean())
            scaled = (scaled - centre) * contrast + (centre + brightness)
        if aug.color:
            gains = 1.0 + rng.uniform(-aug.color, aug.color, size=(scaled.shape[0], 1, 1))
            scaled = scaled * gains.astype(np.float32)
        if aug.blur and rng.random() < 0.25:
            sigma = rng.uniform(0.3, aug.blur)
            scaled = ndimage.gaussian_filter(np.asarray(scaled, dtype=np.float32), sigma=(0, sigma, sigma))
        if aug.noise and rng.random() < 0.25:
            scaled = scaled + rng.normal(0.0, rng.uniform(0, aug.noise), size=scaled.shape).astype(np.float32)
        if aug.brightness or aug.contrast or aug.color or aug.noise:
            scaled = np.clip(scaled, 0.0, 1.0, dtype=np.float32)
        return scaled, mask

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng([self.seed, info.id if info else 0, os.getpid()])
        return self._rng

    def _dataset(self) -> rasterio.DatasetReader:
        """One open file handle per process: DataLoader workers must not share the parent's."""
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = rasterio.open(self.path)
            self._reader_pid = os.getpid()
        return self._reader

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_rng"] = None
        return state


def _resize(image: torch.Tensor, target: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    target = torch.nn.functional.interpolate(target[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    return image, target.to(torch.uint8)


class ImageCollection(Dataset):
    """Several :class:`LabeledOrtho` behind one Dataset, indexed by ``(image index, query)``."""

    def __init__(self, images: Sequence[LabeledOrtho]) -> None:
        self.images = list(images)

    def __getitem__(self, key: tuple[int, GeoSlice]) -> dict[str, torch.Tensor]:
        i, query = key
        return self.images[i][query]

    def __len__(self) -> int:
        return len(self.images)
