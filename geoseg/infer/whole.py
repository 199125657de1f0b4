"""Segment a raster small enough to hold in memory (validation, the demo, tests).

Large mosaics go through the block-parallel path; both use the same one-block engine.
"""

from __future__ import annotations

from pathlib import Path

from rasterio.windows import Window

from geoseg.infer.engine import predict_block
from geoseg.io.classmap import write_class_map
from geoseg.io.raster import open_raster, read_info, read_window
from geoseg.model.bundle import Bundle, check_bundle_fits


def segment_file(bundle: Bundle, mosaic: Path, out: Path, overwrite: bool = False, tta: bool | None = None) -> Path:
    """``tta`` None: the bundle's default (its training recipe's)."""
    info = read_info(mosaic)
    check_bundle_fits(bundle, info)
    meta = bundle.meta
    with open_raster(mosaic) as ds:
        raw, valid = read_window(ds, meta.bands, Window(0, 0, info.grid.width, info.grid.height))
    classes = predict_block(
        bundle.model,
        raw,
        valid,
        meta.normalization,
        [c.id for c in meta.classes],
        meta.tile_size,
        meta.overlap,
        tta=meta.tta_default if tta is None else tta,
    )
    return write_class_map(out, classes, info.grid, meta.classes, overwrite)
