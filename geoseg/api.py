"""The Python API: segment xarray DataArrays (NumPy- or Dask-backed) as `geoseg infer` segments files.

One engine, two faces: ``segment`` runs the same block function and the same fixed-point blending as
`geoseg infer` (see ``geoseg/infer/lazy.py``), so on the same pixels it gives the same class ids, bit
for bit, whatever the chunking or the scheduler (synchronous, threads, a ``distributed.Client``).

    import threading
    import geoseg
    import rioxarray

    model = geoseg.load_model("my_model")
    mosaic = rioxarray.open_rasterio("mosaic.tif", chunks={"x": 2048, "y": 2048})
    classes = geoseg.segment(mosaic, model)  # lazy: nothing runs yet
    classes.rio.to_raster("classes.tif", tiled=True, lock=threading.Lock(), recalc_transform=False)

``lock`` makes rioxarray write chunk by chunk as they are computed (without one it computes the whole
map first); ``recalc_transform=False`` writes the input's transform exactly, not one recomputed from
the coordinates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import dask.array
import numpy as np

from geoseg.config import IGNORE_INDEX, ClassSpec
from geoseg.device import resolve_device
from geoseg.errors import InputError
from geoseg.infer.assemble import aligned_block_size
from geoseg.infer.block import ModelSource, cached_bundle
from geoseg.infer.engine import InferenceSpec
from geoseg.infer.lazy import segment_array
from geoseg.infer.settings import default_batch_size, resolve_precision, window_size
from geoseg.io.classmap import CLASSES_TAG
from geoseg.model.bundle import BundleMeta, bundle_version
from geoseg.polygons import DEFAULT_SIEVE

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    import xarray as xr

    from geoseg.model.forward import Network

NUMPY_CHUNK = 1024  # block side for NumPy-backed input (rounded up to whole window strides), as `geoseg infer`'s


class ArrayError(InputError, ValueError):
    """A DataArray given to the Python API does not fit the job (also a ValueError, as Python code expects)."""


@dataclass(frozen=True)
class Model:
    """A loaded model bundle. Pickles as its path and metadata: each Dask worker loads the network once."""

    source: ModelSource
    meta: BundleMeta

    @property
    def path(self) -> Path:
        return Path(self.source.path)

    @property
    def device(self) -> str:
        return self.source.device

    @property
    def classes(self) -> list[ClassSpec]:
        return list(self.meta.classes)

    @property
    def bands(self) -> list[int]:
        """1-based band indices the model reads, into the DataArray's ``band`` dimension."""
        return list(self.meta.bands)

    @property
    def network(self) -> Network:
        return self.source.network()


def load_model(path: str | Path, device: str = "auto") -> Model:
    """Load a model bundle for ``segment``.

    Args:
        path: a bundle folder or .zip as `geoseg train` writes it, or an ONNX model (``geoseg export``'s,
            or a Deepness segmentation model).
        device: "auto" (a CUDA GPU when one is visible), "cpu" or "cuda".

    Returns:
        The model: its classes (``model.classes``), the 1-based bands it reads (``model.bands``), and a
        handle each Dask worker loads the network from once.

    Raises:
        BundleError: the bundle is missing or malformed.
        DeviceError: "cuda" was asked for and no GPU is visible.
    """
    resolved = str(Path(path).resolve())
    source = ModelSource(resolved, resolve_device(device), bundle_version(resolved))
    bundle = cached_bundle(source.path, source.device, source.version)
    return Model(source, bundle.meta)


@overload
def segment(
    da: xr.DataArray,
    model: Model,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    tta: bool | None = None,
    confidence: Literal[False] = False,
) -> xr.DataArray: ...


@overload
def segment(
    da: xr.DataArray,
    model: Model,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    tta: bool | None = None,
    confidence: Literal[True],
) -> tuple[xr.DataArray, xr.DataArray]: ...


def segment(
    da: xr.DataArray,
    model: Model,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    tta: bool | None = None,
    confidence: bool = False,
) -> xr.DataArray | tuple[xr.DataArray, xr.DataArray]:
    """Class ids for a multi-band image, as `geoseg infer` computes them.

    On Dask-backed input the result is lazy and chunked like the input in y and x: the model runs at
    ``.compute()`` or ``to_raster``, one chunk (plus a halo of up to one tile from its neighbours) at a
    time, on whatever scheduler is active. NumPy-backed input is segmented at once. Nodata: a pixel is 255
    where every band is nodata (``da.rio.nodata``, i.e. ``_FillValue``) or NaN, as a GeoTIFF's nodata mask
    is for `geoseg infer`; other NaNs are read as the encoded nodata value (or 0). An alpha band is not read
    as a mask: turn it into nodata first (``da.where(alpha > 0)``).

    Args:
        da: a ``(band, y, x)`` DataArray with a CRS, integer or float; band ``i`` of the bundle
            (``model.bands``, 1-based) is position ``i - 1`` along ``band``.
        model: from ``load_model``.
        tile: window side in pixels (32-4096); default the bundle's.
        overlap: window overlap in pixels (0 to tile - 1); default the bundle's.
        precision: "auto", "fp32", "bf16" or "fp16", as for `geoseg infer`.
        tta: average the 8 flips and rotations of each window; default the bundle's recipe.
        confidence: also return the blended probability of the chosen class.

    Returns:
        A ``(y, x)`` uint8 DataArray of class ids (255 = nodata) with the input's coordinates, CRS and
        transform, so ``classes.rio.to_raster(path)`` writes it on the input's grid. With
        ``confidence=True``, ``(classes, confidence)``, confidence a float32 DataArray (NaN at nodata);
        compute both together (``dask.compute(classes, confidence)``), or the model runs twice.

    Raises:
        ArrayError: (a ``ValueError``) the array or a setting does not fit: not 3-D, no CRS, too few
            bands, not numbers, a tile or overlap out of range.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must come from geoseg.load_model(path), not {type(model).__name__}")
    band_dim, y_dim, x_dim = _dims(da)
    crs = da.rio.crs
    if crs is None:
        raise ArrayError("the DataArray has no CRS; set one with da.rio.write_crs('EPSG:…')")
    if _mirrored(da, y_dim, x_dim):
        raise ArrayError(
            "the DataArray is mirrored (south-up: y increases down the rows), so the network would see the scene "
            "flipped; warp the file north-up (gdalwarp in.tif north_up.tif) and open that"
        )
    if da.sizes[y_dim] == 0 or da.sizes[x_dim] == 0:
        raise ArrayError(f"the DataArray is empty ({da.sizes[y_dim]} × {da.sizes[x_dim]} pixels)")
    if not (np.issubdtype(da.dtype, np.integer) or np.issubdtype(da.dtype, np.floating)):
        raise ArrayError(f"the DataArray holds {da.dtype}; geoseg reads integer or floating-point imagery")
    n_bands = da.sizes[band_dim]
    if max(model.bands) > n_bands:
        raise ArrayError(
            f"the model reads bands {model.bands} (1-based) but the DataArray has {n_bands} along {band_dim!r}; "
            "use a model trained on this kind of imagery, or select and order the bands it expects"
        )
    try:
        tile, overlap = window_size(tile, overlap, model.meta, name="overlap")
    except InputError as exc:
        raise ArrayError(str(exc)) from None
    spec = InferenceSpec(
        normalization=model.meta.normalization,
        class_ids=[c.id for c in model.meta.classes],
        tile=tile,
        overlap=overlap,
        batch_size=default_batch_size(model.device),
        precision=resolve_precision(precision, model.device, name="precision", meta=model.meta),
        tta=model.meta.tta_default if tta is None else tta,
    )
    pixels = da.transpose(band_dim, y_dim, x_dim).data
    lazy = isinstance(pixels, dask.array.Array)
    if not lazy:
        side = aligned_block_size(NUMPY_CHUNK, tile, overlap)
        pixels = dask.array.from_array(np.asarray(pixels), chunks=(-1, side, side))
    raw, valid = _raw_and_valid(pixels, [b - 1 for b in model.bands], da.rio.nodata, da.rio.encoded_nodata)
    classes, probability = segment_array(raw, valid, model.source, spec, confidence)
    out = _like(da, classes, band_dim, y_dim, x_dim, "classes", IGNORE_INDEX)
    out.attrs.update(_class_attrs(model.classes))
    if not lazy:
        out = out.compute()
    if probability is None:
        return out
    confidence_map = _like(da, probability, band_dim, y_dim, x_dim, "confidence", np.nan)
    return (out, confidence_map) if lazy else (out, confidence_map.compute())


def vectorize(
    classes: xr.DataArray,
    model: Model | None = None,
    *,
    sieve: int = DEFAULT_SIEVE,
    min_area: float = 0.0,
    simplify: float = 0.0,
    connectivity: int = 4,
) -> gpd.GeoDataFrame:
    """Polygons of a class map, as `geoseg vectorize` writes them.

    The class map is computed and held in memory (one byte a pixel); for maps larger than memory write it
    with ``to_raster`` and run `geoseg vectorize`. Nodata (255, or ``_FillValue``) makes no polygon.

    Args:
        classes: a ``(y, x)`` uint8 DataArray with a CRS, e.g. from ``segment``.
        model: names the classes; default the ids.
        sieve: first merge regions smaller than this many pixels into their largest neighbour (0: none).
        min_area: drop regions smaller than this, in CRS units² (m² in a metric CRS).
        simplify: coverage simplification tolerance in CRS units; shared borders stay shared.
        connectivity: 4 (edges) or 8 (edges and corners) joins pixels into regions.

    Returns:
        A GeoDataFrame in the class map's CRS with ``class_id``, ``class_name``, ``area`` (CRS units²)
        and ``area_m2`` (where the CRS is projected).

    Raises:
        ArrayError: not a (y, x) uint8 class map with a CRS.
    """
    from geoseg.polygons import class_map_polygons

    values = _class_map_values(classes, "vectorize")
    nodata = classes.rio.nodata
    return class_map_polygons(
        values,
        classes.rio.transform(),
        classes.rio.crs,
        classes=model.classes if model is not None else None,
        nodata=int(nodata) if nodata is not None and float(nodata).is_integer() else None,
        min_area=min_area,
        simplify=simplify,
        connectivity=connectivity,
        sieve=sieve,
    )


def _dims(da: xr.DataArray) -> tuple[str, str, str]:
    """(band, y, x) dimension names, or a clear error."""
    import rioxarray  # noqa: F401  (registers ``.rio``: the caller may have built the array without it)
    import xarray as xr

    if not isinstance(da, xr.DataArray):
        raise ArrayError(f"segment expects an xarray.DataArray, not {type(da).__name__}")
    if da.ndim != 3:
        hint = " (for one band: da.expand_dims('band'))" if da.ndim == 2 else ""
        raise ArrayError(f"segment expects a (band, y, x) DataArray, got dims {da.dims}{hint}")
    try:
        y_dim, x_dim = da.rio.y_dim, da.rio.x_dim
    except Exception as exc:  # rioxarray's MissingSpatialDimensionError and kin
        raise ArrayError(f"the DataArray's spatial dimensions are not found ({exc}); name them y and x") from None
    (band_dim,) = (d for d in da.dims if d not in (y_dim, x_dim))
    return str(band_dim), str(y_dim), str(x_dim)


def _mirrored(da: xr.DataArray, y_dim: str, x_dim: str) -> bool:
    """Whether the rows or columns run the mirror way (by the coordinates: a cached transform may be stale)."""
    ys, xs = da[y_dim].values, da[x_dim].values
    y_up = len(ys) > 1 and ys[1] > ys[0]
    x_left = len(xs) > 1 and xs[1] < xs[0]
    return bool(y_up != x_left)


def _raw_and_valid(
    pixels: dask.array.Array, bands: list[int], nodata: float | None, encoded_nodata: float | None
) -> tuple[dask.array.Array, dask.array.Array]:
    """The model's bands (non-finite values filled) and the validity mask, as ``geoseg infer`` reads a file:
    nodata where every band equals the nodata value, or where any band the model reads is NaN or ±inf."""
    valid = dask.array.ones(pixels.shape[1:], dtype=bool, chunks=pixels.chunks[1:])
    if nodata is not None and not np.isnan(nodata):
        valid = ~(pixels == nodata).all(axis=0)
    raw = pixels[bands]
    if np.issubdtype(raw.dtype, np.floating):
        finite = dask.array.isfinite(raw)
        valid = valid & finite.all(axis=0)
        fill = encoded_nodata if encoded_nodata is not None and np.isfinite(encoded_nodata) else 0
        raw = dask.array.where(finite, raw, raw.dtype.type(fill))
    return raw, valid


def _like(
    da: xr.DataArray, data: dask.array.Array, band_dim: str, y_dim: str, x_dim: str, name: str, nodata: float
) -> xr.DataArray:
    """``data`` on ``da``'s grid: its y/x coordinates (and the others not along bands), CRS and transform."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    coords = {key: coord for key, coord in da.coords.items() if band_dim not in coord.dims}
    out = xr.DataArray(data, dims=(y_dim, x_dim), coords=coords, name=name)
    out = out.rio.write_crs(da.rio.crs).rio.write_transform(da.rio.transform())
    return out.rio.write_nodata(nodata, encoded=False)


def _class_attrs(classes: list[ClassSpec]) -> dict[str, object]:
    """CF's flags for categorical data: the class ids and their names (spaces become underscores)."""
    return {
        "long_name": "class id",
        "flag_values": [c.id for c in classes],
        "flag_meanings": " ".join(c.name.replace(" ", "_") for c in classes),
    }


def suggest(
    mosaic: str | Path,
    model: Model,
    n: int = 20,
    *,
    labels: Sequence[str | Path] = (),
    label_values: Sequence[int] | None = None,
    mask: str | Path | None = None,
    size: int | str | None = None,
    strategy: str = "uncertainty",
    seed: int = 0,
    tta: bool | None = None,
) -> gpd.GeoDataFrame:
    """Where to label next: the ``n`` windows of a mosaic file whose labels would help the model most, as
    `geoseg suggest` chooses them (see its ``--help`` for the rule).

    Args:
        mosaic: the orthomosaic file the model segments.
        model: from ``load_model`` (its device runs the segmentation).
        n: how many windows.
        labels: label files already made (polygons, lines or label rasters): no window holds a labelled pixel.
        label_values: for label rasters, the values that are labels (default every value but nodata and 255).
        mask: polygons, or a raster where every value but 0 is excluded (`geoseg quality-mask`'s output).
        size: window side in px (``256``) or metres (``"40m"``); default the model's tile size.
        strategy: "uncertainty" (least sure first) or "random" (a baseline; the model does not run).
        seed: seeds the candidate grid's offset and the order of ties.
        tta: average the 8 flips and rotations; default the bundle's recipe.

    Returns:
        A GeoDataFrame in the mosaic's CRS, one square per window: ``rank`` (1 = label first), ``score`` (mean
        of 1 - the probability of each pixel's chosen class; NaN for random), ``strategy``, and the window's
        top-left ``row`` and ``col`` in the mosaic. ``frame.to_file("to_label.gpkg")`` writes it.

    Raises:
        InputError: the mosaic, a label file or a setting does not fit (``n`` below 1, a class map given as
            the mosaic, no qualifying window).
    """
    from geoseg.assess.suggest import SuggestOptions
    from geoseg.assess.suggest import suggest as choose
    from geoseg.progress import Progress, ProgressMode

    if not isinstance(model, Model):
        raise TypeError(f"model must come from geoseg.load_model(path), not {type(model).__name__}")
    options = SuggestOptions(count=n, size=None if size is None else str(size), labels=tuple(map(Path, labels)),
                             label_values=label_values, mask=Path(mask) if mask is not None else None,
                             strategy=strategy, seed=seed, tta=tta, device=model.device)  # fmt: skip
    return choose(Path(mosaic), model.path, options, Progress(ProgressMode.none)).frame


def change(before: xr.DataArray, after: xr.DataArray, model: Model | None = None) -> pd.DataFrame:
    """Pixels going from each class of ``before`` to each class of ``after``, as `geoseg change` counts them.

    ``after`` is read onto ``before``'s grid with nearest neighbour (rioxarray's ``reproject_match``) and
    only pixels valid in both count. Both maps are held in memory (one byte a pixel); for larger maps write
    them with ``to_raster`` and run `geoseg change`.

    Args:
        before: the earlier ``(y, x)`` class map (uint8, with a CRS).
        after: the later one, on any grid and CRS.
        model: names the classes; default the class table the map carries (``GEOSEG_CLASSES`` in its
            attributes, as rioxarray reads a geoseg class map), else the ids.

    Returns:
        A DataFrame of pixel counts: rows the earlier classes (index "from"), columns the later ones ("to").

    Raises:
        ArrayError: either map is not a (y, x) uint8 class map with a CRS.
    """
    import pandas as pd
    from rasterio.enums import Resampling

    first = _class_map_values(before, "change")
    second_da = after.rio.reproject_match(before, resampling=Resampling.nearest, nodata=IGNORE_INDEX)
    second = _class_map_values(second_da, "change")
    valid = (first != _nodata_id(before)) & (second != _nodata_id(second_da)) & (first != IGNORE_INDEX)
    valid &= second != IGNORE_INDEX
    counts = np.bincount(first[valid].astype(np.int64) * 256 + second[valid], minlength=256 * 256).reshape(256, 256)
    names = _class_names(before, model)
    ids = sorted(set(names) | set(np.flatnonzero(counts.sum(axis=1))) | set(np.flatnonzero(counts.sum(axis=0))))
    labels = [names.get(int(i), str(int(i))) for i in ids]
    return pd.DataFrame(counts[np.ix_(ids, ids)], index=pd.Index(labels, name="from"),
                        columns=pd.Index(labels, name="to"))  # fmt: skip


def landscape(classes: xr.DataArray, model: Model | None = None, level: str = "class") -> pd.DataFrame:
    """`geoseg landscape`'s metrics of a class map: pylandstats', and the edge shape shares at class level.

    Args:
        classes: a ``(y, x)`` uint8 class map in a projected CRS; it is held in memory.
        model: names the classes; default the map's own class table, else the ids.
        level: "class", "landscape" or "patch".

    Returns:
        A DataFrame, a row per class (or one row, or a row per patch), the metrics as docs/formats.md
        ("Landscape metrics") lists them, areas in ha and lengths in m.

    Raises:
        ArrayError: not a class map, no projected CRS, or no valid pixel.
    """
    import pandas as pd

    from geoseg.landscape_metrics import LEVELS, array_metrics
    from geoseg.polygons import square_metres_factor

    if level not in LEVELS:
        raise ArrayError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    values = _class_map_values(classes, "landscape")
    to_m2 = square_metres_factor(classes.rio.crs)
    if to_m2 is None:
        raise ArrayError("the class map has no projected CRS, so patch areas and edges have no metres; "
                         "reproject it (classes.rio.reproject('EPSG:…'))")  # fmt: skip
    nodata = _nodata_id(classes)
    values = np.where(values == nodata, IGNORE_INDEX, values).astype(np.uint8)
    if not (values != IGNORE_INDEX).any():
        raise ArrayError("the class map has no valid (classified) pixel; nothing to measure")
    x_res, y_res = classes.rio.resolution()
    scale = float(np.sqrt(to_m2))
    names = _class_names(classes, model)
    return pd.DataFrame(array_metrics(values, (abs(x_res) * scale, abs(y_res) * scale), level, names))


def _class_map_values(classes: xr.DataArray, job: str) -> np.ndarray:
    """The (y, x) class ids of a class map DataArray, checked and in memory."""
    import rioxarray  # noqa: F401  (registers ``.rio``)

    if classes.ndim != 2:
        raise ArrayError(f"{job} expects a (y, x) class map, got dims {classes.dims}")
    if classes.rio.crs is None:
        raise ArrayError("the class map has no CRS; set one with classes.rio.write_crs('EPSG:…')")
    if classes.dtype not in (np.uint8, np.uint16):
        raise ArrayError(f"a class map holds uint8 class ids, not {classes.dtype}")
    y_dim, x_dim = classes.rio.y_dim, classes.rio.x_dim
    return np.asarray(classes.transpose(y_dim, x_dim).values)


def _class_names(classes: xr.DataArray, model: Model | None) -> dict[int, str]:
    """Names from ``model``, else from the class table a geoseg class map carries (rioxarray keeps it in attrs)."""
    if model is not None:
        return {c.id: c.name for c in model.classes}
    try:
        return {int(c["id"]): str(c["name"]) for c in json.loads(classes.attrs.get(CLASSES_TAG, "[]"))}
    except (ValueError, TypeError, KeyError):
        return {}


def _nodata_id(classes: xr.DataArray) -> int:
    nodata = classes.rio.nodata
    return int(nodata) if nodata is not None and float(nodata).is_integer() else IGNORE_INDEX
