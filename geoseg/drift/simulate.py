"""A documented stand-in for another camera: the same scene with a different tone curve, white balance,
contrast and lens sharpness. Benchmarks and tests use it to make a real tile look like a new survey's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from scipy import ndimage


@dataclass(frozen=True)
class CameraShift:
    """Applied in this order, in 0..1 units of the data type's range, per band.

    The default is an older, cheaper camera: darker midtones (gamma 1.3), a cooler white balance
    (red ×0.85, blue ×1.15), a flatter tone curve (contrast ×0.8 about mid-grey) and a softer lens
    (Gaussian blur, sigma 1 px).
    """

    gamma: float = 1.3
    white_balance: tuple[float, ...] = (0.85, 1.0, 1.15)
    contrast: float = 0.8
    blur_sigma: float = 1.0

    def apply(self, data: np.ndarray) -> np.ndarray:
        """(bands, h, w) integer array → the same, as the other camera would record it."""
        top = float(np.iinfo(data.dtype).max)
        x = (data.astype(np.float64) / top) ** self.gamma
        x = (x - 0.5) * self.contrast + 0.5
        gains = np.resize(np.asarray(self.white_balance, dtype=np.float64), len(x))
        x = x * gains[:, None, None]
        if self.blur_sigma:
            x = np.stack([ndimage.gaussian_filter(band, self.blur_sigma) for band in x])
        return np.clip(np.rint(x * top), 0, top).astype(data.dtype)


def write_shifted(source: Path, out: Path, shift: CameraShift) -> Path:
    """A copy of ``source`` (same grid, mask and profile) whose image bands went through ``shift``."""
    with rasterio.open(source) as src:
        profile, data, mask = src.profile, src.read(), src.dataset_mask()
        image = [i for i, ci in enumerate(src.colorinterp) if ci != ColorInterp.alpha]
    data[image] = shift.apply(data[image])
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        if profile.get("nodata") is None and len(image) == len(data) and not mask.all():
            dst.write_mask(mask)
    return out
