"""`geoseg quality-mask`: the over/underexposure and blur mask training applies, as a GeoTIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geoseg.config import PreprocessConfig, QualityMaskConfig, load_config
from geoseg.data.preprocess import (
    QUALITY_BLURRED,
    QUALITY_NODATA,
    QUALITY_OK,
    QUALITY_OVEREXPOSED,
    QUALITY_UNDEREXPOSED,
    choose_normalization,
    compute_band_stats,
    quality_codes,
)
from geoseg.errors import InputError
from geoseg.io.raster import (
    atomic_path,
    block_windows,
    check_bands,
    ensure_writable,
    first_line,
    open_raster,
    read_info,
    read_window,
)
from geoseg.progress import Progress

BLOCK = 1024
CODE_NAMES = {
    QUALITY_OK: "ok",
    QUALITY_OVEREXPOSED: "overexposed",
    QUALITY_UNDEREXPOSED: "underexposed",
    QUALITY_BLURRED: "blurred",
    QUALITY_NODATA: "nodata",
}
CODE_COLORS = {
    QUALITY_OK: (0, 0, 0, 0),
    QUALITY_OVEREXPOSED: (255, 255, 0, 255),
    QUALITY_UNDEREXPOSED: (0, 0, 255, 255),
    QUALITY_BLURRED: (255, 0, 255, 255),
}


def write_quality_mask(
    mosaic: Path, target: Path, config: Path | None, overwrite: bool, progress: Progress
) -> tuple[Path, dict[str, int]]:
    info = read_info(mosaic)
    ensure_writable(target, overwrite)
    if config is not None:
        cfg = load_config(config)
        bands, preprocess, quality = cfg.data.bands or info.image_bands, cfg.preprocess, cfg.data.quality_mask
    else:
        bands, preprocess, quality = info.image_bands, PreprocessConfig(), QualityMaskConfig(enabled=True)
    check_bands(info, bands)
    stats = compute_band_stats([mosaic], bands, progress.stage("statistics"))
    normalization = choose_normalization(stats, info.dtype, preprocess, pretrained=False)
    halo = quality.blur_window
    counts = dict.fromkeys(CODE_NAMES.values(), 0)
    profile = {
        "driver": "GTiff", "width": info.grid.width, "height": info.grid.height, "count": 1, "dtype": "uint8",
        "crs": info.grid.crs, "transform": info.grid.transform, "nodata": QUALITY_NODATA, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    windows = list(block_windows(info.grid.width, info.grid.height, BLOCK))
    with atomic_path(target) as tmp, open_raster(mosaic) as src, rasterio.open(tmp, "w", **profile) as dst:
        for done, w in enumerate(windows, 1):
            padded = Window(w.col_off - halo, w.row_off - halo, w.width + 2 * halo, w.height + 2 * halo)
            try:
                raw, valid = read_window(src, bands, padded)
            except RasterioIOError as exc:
                raise InputError(f"could not be read to the end ({first_line(exc)}); re-copy it", mosaic) from None
            codes = quality_codes(normalization.scaled(raw), valid, quality)
            block = codes[halo : halo + w.height, halo : halo + w.width]
            dst.write(block, 1, window=w)
            for code, n in zip(*np.unique(block, return_counts=True), strict=True):
                counts[CODE_NAMES[int(code)]] += int(n)
            progress.update("quality mask", done, len(windows))
        dst.write_colormap(1, CODE_COLORS)
        dst.update_tags(1, **{f"CODE_{code}": name for code, name in CODE_NAMES.items()})
    return target, counts
