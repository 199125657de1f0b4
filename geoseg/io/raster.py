"""Open and validate rasters, read windows with their validity masks, write outputs safely."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError, WindowError
from rasterio.warp import reproject
from rasterio.windows import Window

from geoseg.errors import InputError, OutputError, OutputExistsError

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class GridSpec:
    """The pixel grid of a raster: what an output must match exactly."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def res(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    def same_grid(self, other: GridSpec) -> bool:
        return (
            self.crs == other.crs
            and self.width == other.width
            and self.height == other.height
            and self.transform.almost_equals(other.transform, precision=1e-9)
        )


@dataclass(frozen=True)
class RasterInfo:
    """What geoseg needs to know about an input raster, read once."""

    path: Path
    grid: GridSpec
    count: int
    dtype: str
    nodata: float | None
    alpha_band: int | None

    @property
    def image_bands(self) -> list[int]:
        """1-based band indices carrying imagery (the alpha band excluded)."""
        return [b for b in range(1, self.count + 1) if b != self.alpha_band]


def check_not_mirrored(info: RasterInfo) -> None:
    """Refuse a raster stored mirrored (south-up: a positive y pixel size): the network would see its
    scene mirrored, and a model's classes are not mirror-proof."""
    t = info.grid.transform
    if t.a * t.e - t.b * t.d > 0:
        raise InputError("is stored mirrored (south-up: its pixel rows run from south to north), so the network "
                         "would see the scene flipped; warp it north-up first: gdalwarp in.tif north_up.tif",
                         info.path)  # fmt: skip


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster for reading, turning every failure into one readable line."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found; check the path", path)
    try:
        with warnings.catch_warnings():
            # read_info reports a missing CRS or geotransform in one line; rasterio's warning would add two more
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"not a readable raster ({first_line(exc)}); is it a complete GeoTIFF/VRT?", path) from None


def read_info(path: str | Path) -> RasterInfo:
    """Inspect a raster and refuse what geoseg cannot georeference or read."""
    path = Path(path)
    with open_raster(path) as ds:
        if ds.crs is None:
            raise InputError("has no CRS; assign one first (e.g. gdal_edit.py -a_srs EPSG:XXXX FILE)", path)
        if ds.transform == Affine.identity():
            raise InputError("has no geotransform; georeference it first", path)
        dtype = ds.dtypes[0]
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"has data type {dtype}; geoseg reads {', '.join(SUPPORTED_DTYPES)}", path)
        alpha = next((i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha), None)
        grid = GridSpec(ds.crs, ds.transform, ds.width, ds.height)
        return RasterInfo(path, grid, ds.count, dtype, ds.nodata, alpha)


def nearest_on_grid(values: np.ndarray, source: GridSpec, target: GridSpec, nodata: int) -> np.ndarray:
    """A band of codes on ``source`` resampled onto ``target`` by nearest neighbour, so codes are never blended;
    ``nodata`` where it holds ``nodata`` or does not reach."""
    out = np.full((target.height, target.width), nodata, dtype=values.dtype)
    reproject(values, out, src_transform=source.transform, src_crs=source.crs, dst_transform=target.transform,
              dst_crs=target.crs, resampling=Resampling.nearest, src_nodata=nodata, dst_nodata=nodata)  # fmt: skip
    return out


def check_bands(info: RasterInfo, bands: Sequence[int], source: str = "bands") -> list[int]:
    """Validate 1-based band indices against a raster's band count."""
    bad = [b for b in bands if not 1 <= int(b) <= info.count]
    if bad or not bands:
        raise InputError(
            f"{source} {list(bands)} do not fit: the raster has {info.count} band(s) "
            f"(1-based; imagery bands are {info.image_bands})",
            info.path,
        )
    return [int(b) for b in bands]


def check_like_training(info: RasterInfo, bands: Sequence[int], dtype: str, setting: str) -> None:
    """A mosaic listed under ``setting`` that is normalized as the training images are: it must have their bands
    and data type, and be readable to the end."""
    check_bands(info, bands, source="data.bands")
    if info.dtype != dtype:
        raise InputError(
            f"has data type {info.dtype} but the training images have {dtype}; both are normalized alike, so "
            f"convert it first or remove it from {setting}",
            info.path,
        )
    verify_readable(info.path)


def verify_readable(path: str | Path) -> None:
    """Read every block once so a truncated or corrupted file fails here, not mid-training."""
    with open_raster(path) as ds:
        try:
            for _, window in ds.block_windows(1):
                ds.read(1, window=window)
        except RasterioIOError as exc:
            raise corrupted(path, exc) from None


def corrupted(path: str | Path, exc: RasterioIOError) -> InputError:
    """The one-line error for a raster whose blocks cannot be read."""
    return InputError(f"is corrupted or truncated ({first_line(exc)}); re-export or re-copy it", path)


def read_window(ds: rasterio.DatasetReader, bands: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` in ``window`` (which may reach past the edges) and its validity mask.

    Returns ``(data, valid)``: data is (bands, h, w) in the file's dtype, 0 outside the raster and
    where it is not finite; valid is (h, w) bool, False where the raster is nodata (nodata value,
    alpha band or internal mask), where any band read is NaN or ±inf, or outside its extent.
    """
    data = np.zeros((len(bands), int(window.height), int(window.width)), dtype=ds.dtypes[0])
    valid = np.zeros(data.shape[1:], dtype=bool)
    # Read only the part inside the raster: rasterio's boundless reads build a VRT every call.
    part = clip_window(window, ds.height, ds.width)
    if part is None:
        return data, valid
    inner, (rows, cols) = part
    data[:, rows, cols] = ds.read(list(bands), window=inner)
    if all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums):
        inside = np.ones((int(inner.height), int(inner.width)), dtype=bool)  # no nodata or mask: GDAL's is all 255
    else:
        inside = ds.dataset_mask(window=inner) > 0
    alpha = next((i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha), None)
    if alpha is not None and not any(MaskFlags.alpha in flags for flags in ds.mask_flag_enums):
        # GDAL honours an alpha band only for Byte/UInt16 rasters; for other types apply it here
        inside &= ds.read(alpha, window=inner) > 0
    if data.dtype.kind == "f":
        inside &= finite_pixels(data[:, rows, cols])
        data[~np.isfinite(data)] = 0
    valid[rows, cols] = inside
    return data, valid


def clip_window(window: Window, height: int, width: int) -> tuple[Window, tuple[slice, slice]] | None:
    """The part of ``window`` inside a ``height`` × ``width`` raster, and the (rows, cols) it fills in an
    array of the window's shape; None where the two do not meet."""
    try:
        inner = window.intersection(Window(0, 0, width, height))
    except WindowError:
        return None
    within = Window(inner.col_off - window.col_off, inner.row_off - window.row_off, inner.width, inner.height)
    return inner, within.toslices()


def finite_pixels(data: np.ndarray) -> np.ndarray:
    """The NaN rule (README, "How inputs are read"): of a (bands, h, w) array, the (h, w) pixels where every
    band is finite. NaN or ±inf in any band makes a pixel nodata, tagged or not; integer data is all finite."""
    if data.dtype.kind != "f":
        return np.ones(data.shape[1:], dtype=bool)
    return np.isfinite(data).all(axis=0)


GDAL_CACHE_BYTES = 64 * 2**20


def cap_gdal_cache() -> None:
    """Keep GDAL's block cache at 64 MiB in this process unless the user set GDAL_CACHEMAX.

    GDAL's default is 5 % of the machine's memory, and a scan over a whole mosaic fills it: read blocks
    stay cached, so memory would grow with mosaic size up to that limit. Blocks are read once (plus a
    tile row at block borders), so a small cache costs nothing; 64 MiB holds a full tile row of a
    3-band 32768-px-wide mosaic.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return
    if (get_gdal_config("GDAL_CACHEMAX") or 0) > GDAL_CACHE_BYTES:
        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_BYTES)


def block_windows(width: int, height: int, block: int) -> Iterator[Window]:
    """Row-major windows of at most ``block`` pixels a side covering a width × height raster."""
    for row in range(0, height, block):
        for col in range(0, width, block):
            yield Window(col, row, min(block, width - col), min(block, height - row))


def ensure_writable(path: Path, overwrite: bool, folder: bool = False, instead: str = "another output") -> None:
    """Refuse to replace an existing output unless asked to, and an output that could not be written:
    a file output where a folder is (unless ``folder``: the output is one), under a file, in a read-only folder.

    Creates nothing: checks run before the inputs are validated, and a failed run must leave no trace
    (the writers create the parent folder when they write).
    """
    if path.is_dir() and not folder:
        raise OutputError("is a folder; name the file to write, inside it or elsewhere", path)
    if path.exists() and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it or choose another output", path)
    parent = next(p for p in path.absolute().parents if p.exists())  # the nearest part that exists
    if not parent.is_dir():
        raise OutputError(f"cannot be written: {parent} is a file, not a folder; choose {instead}", path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot be written: no permission to write in {parent}; choose {instead}", path)


def remove_stale_partials(final: Path) -> None:
    """Remove ``final``'s own temporary files that a killed run (SIGKILL, power loss) left behind.

    Only names this module makes for ``final`` (``.<name>.*.partial``); a second run writing the very same
    output at the same moment would lose its temporary file, and would have clobbered the output anyway.
    """
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*.partial"):
        with contextlib.suppress(OSError):
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path that becomes ``final`` only if the block completes.

    The file and then its folder are flushed to disk around the rename, so after a power cut ``final``
    is the old file or the whole new one, never an empty or torn one.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    except OSError as exc:
        raise OutputError(f"cannot be written ({exc.strerror}); choose another output", final) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod(0o666 & ~umask())  # mkstemp makes 0600; outputs get the usual permissions
            _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; where the OS cannot, carry on."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Folders this block creates for ``folder`` are removed again if it fails and leaves them empty."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()  # only succeeds while empty
        raise


def umask() -> int:
    """The process's umask, read without changing it: setting and restoring it (the only portable way)
    races with threads creating files, which then come out world-writable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def _umask_now() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_now()  # imports run before any of geoseg's threads start


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or of GDAL's own error when rasterio only points to it."""
    if "see previous exception" in str(exc).lower() and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
