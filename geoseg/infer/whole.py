"""Segment a raster small enough to hold in memory (validation, the demo, tests).

Large mosaics go through the block-parallel path; both use the same one-block engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg.data.preprocess import Normalization
from geoseg.infer.assemble import Assembler, block_contribution
from geoseg.infer.engine import InferenceSpec, slice_padded
from geoseg.io.classmap import write_class_map
from geoseg.io.raster import open_raster, read_info, read_window
from geoseg.model.bundle import Bundle, check_bundle_fits
from geoseg.model.forward import Network


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


def predict_block(
    model: Network,
    raw: np.ndarray,
    valid: np.ndarray,
    normalization: Normalization,
    class_ids: Sequence[int],
    tile: int,
    overlap: int,
    batch_size: int = 4,
    tta: bool = False,
) -> np.ndarray:
    """Class ids for a whole in-memory (bands, h, w) raster: the raster is one block."""
    _, height, width = raw.shape

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        return slice_padded(raw, valid, window)

    spec = InferenceSpec(normalization, class_ids, tile, overlap, batch_size, tta=tta)
    assembler = Assembler((height, width), max(height, width), spec, confidence=False)
    contribution = block_contribution(model, read, Window(0, 0, width, height), (height, width), spec)
    ((_, result),) = assembler.add(contribution)
    return result.classes
