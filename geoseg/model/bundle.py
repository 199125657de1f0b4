"""The model bundle (docs/formats.md, "Model bundle"): smp's ``save_pretrained`` files plus ``geoseg.json``.

Loading reads safetensors and JSON only; nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._version import __version__
from geoseg.config import IGNORE_INDEX, ClassSpec
from geoseg.data.preprocess import Normalization
from geoseg.errors import INSTALL_TORCH, BundleError, OutputExistsError, needs_torch
from geoseg.io.raster import RasterInfo, check_not_mirrored, remove_stale_partials, umask

if TYPE_CHECKING:
    import segmentation_models_pytorch as smp
    import torch

    from geoseg.model.forward import Network

FORMAT_VERSION = 1
META_FILE = "geoseg.json"
BUNDLE_FILES = (META_FILE, "config.json", "model.safetensors")  # a bundle folder: what defines the model
KNOWN_KEYS = {
    "format_version", "classes", "ignore_index", "bands", "input", "tile_size", "overlap", "resolution",
    "train_stats", "metrics", "created", "geoseg_version",
}  # fmt: skip


@dataclass
class BundleMeta:
    classes: list[ClassSpec]
    bands: list[int]
    normalization: Normalization
    tile_size: int = 512
    overlap: int = 64
    resolution: float | None = None
    train_stats: Any = None
    metrics: Any = None
    ignore_index: int = IGNORE_INDEX
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    geoseg_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept so the format can grow
    fixed_tile: bool = False  # the network takes tile_size windows only (an ONNX graph of fixed size); not saved
    runtime: str = "torch"  # torch | onnx (ONNX Runtime runs the network); not saved

    @property
    def tta_default(self) -> bool:
        """Whether inference averages flips and rotations unless told otherwise: the training recipe's choice."""
        recipe = self.extra.get("recipe")
        return bool(recipe.get("tta", False)) if isinstance(recipe, dict) else False

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in self.classes],
            "ignore_index": self.ignore_index,
            "bands": self.bands,
            "input": self.normalization.to_json(),
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "resolution": self.resolution,
            "train_stats": self.train_stats,
            "metrics": self.metrics,
            "created": self.created,
            "geoseg_version": self.geoseg_version,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> BundleMeta:
        if not isinstance(data, dict):
            raise BundleError(f"{META_FILE} must hold a JSON object, not {type(data).__name__}", source)
        try:
            version = int(data.get("format_version", 1))
            if version > FORMAT_VERSION:
                raise BundleError(f"format_version {version} is newer than this geoseg reads; upgrade geoseg", source)
            classes = [
                ClassSpec(
                    value=str(c["id"]), id=int(c["id"]), name=str(c["name"]), color=str(c.get("color", "#808080"))
                )
                for c in data["classes"]
            ]
            bands = [int(b) for b in data["bands"]]
            normalization = Normalization.from_json(data["input"], len(bands))
            if not (len(normalization.scale) == len(normalization.mean) == len(normalization.std) == len(bands)):
                raise BundleError("input.mean/std/scale must have one entry per band in 'bands'", source)
            tile_size, overlap = int(data.get("tile_size", 512)), int(data.get("overlap", 64))
            _check_meaningful(bands, normalization, tile_size, overlap, source)
            return cls(
                classes=classes,
                bands=bands,
                normalization=normalization,
                tile_size=tile_size,
                overlap=overlap,
                resolution=data.get("resolution"),
                train_stats=data.get("train_stats"),
                metrics=data.get("metrics"),
                ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
                created=str(data.get("created", "")),
                geoseg_version=str(data.get("geoseg_version", "")),
                extra={k: v for k, v in data.items() if k not in KNOWN_KEYS},
            )
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BundleError(f"{META_FILE} is malformed ({type(exc).__name__}: {exc})", source) from None


MIN_TILE = 32  # a U-Net of five strides halves a window five times: 32 px is one pixel at the bottom


def _check_meaningful(bands: list[int], normalization: Normalization, tile: int, overlap: int, source: Path) -> None:
    """Refuse numbers that would turn every window into the same input or index past the raster."""
    if not bands or min(bands) < 1:
        raise BundleError(f"{META_FILE}: 'bands' are 1-based band numbers, got {bands}", source)
    for i, ((lo, hi), std) in enumerate(zip(normalization.scale, normalization.std, strict=True), 1):
        if not lo < hi:
            raise BundleError(f"{META_FILE}: input.scale of band {i} needs lo < hi, got [{lo}, {hi}]", source)
        if not std > 0:
            raise BundleError(f"{META_FILE}: input.std of band {i} must be above 0, got {std}", source)
    if tile < MIN_TILE:
        raise BundleError(f"{META_FILE}: tile_size must be at least {MIN_TILE}, got {tile}", source)
    if not 0 <= overlap < tile:
        raise BundleError(f"{META_FILE}: overlap must be at least 0 and less than tile_size ({tile}), got {overlap}",
                          source)  # fmt: skip


@dataclass
class Bundle:
    model: Network  # a torch module, or ONNX Runtime's network for an .onnx file
    meta: BundleMeta
    path: Path


def save_bundle(model: smp.Unet, meta: BundleMeta, out_dir: Path, overwrite: bool = False) -> Path:
    """Write the bundle directory atomically: it appears complete or not at all."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it or choose another --out", out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)  # a killed earlier save's staging folder
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    staging.chmod(0o777 & ~umask())  # mkdtemp makes 0700; a bundle is shared like any other output
    try:
        # The weights now live in model.safetensors; the recorded constructor argument must not make
        # smp.from_pretrained download ImageNet weights again before loading them.
        config = model._hub_mixin_config
        saved_weights = config.get("encoder_weights")
        config["encoder_weights"] = None
        try:
            model.save_pretrained(str(staging))
        finally:
            config["encoder_weights"] = saved_weights
        (staging / META_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n")
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            out_dir.rename(backup)
            staging.rename(out_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def bundle_files(path: Path) -> list[Path]:
    """The files that define a model: a zipped bundle or .onnx file itself, or a bundle folder's three."""
    return [path] if path.is_file() else [path / name for name in BUNDLE_FILES]


def bundle_version(path: str | Path) -> str:
    """Size and modification time of the bundle's files: changes whenever the bundle is rewritten.

    Worker processes cache loaded models by path and this version, so a long-lived Dask cluster picks
    up a retrained bundle saved at the same path.
    """
    path = Path(path)
    files = bundle_files(path)
    stats = [f.stat() for f in files if f.exists()]
    return ";".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)


def load_bundle(path: str | Path, device: str = "cpu") -> Bundle:
    """Load a bundle directory (or the same zipped) made by geoseg or by smp + geoseg.json alone, or an
    ONNX model (``geoseg export``'s, or a Deepness segmentation model) run by ONNX Runtime."""
    path = Path(path)
    if is_onnx(path):
        from geoseg.model.onnx_bundle import load_onnx_bundle

        return load_onnx_bundle(path, device)
    with _bundle_folder(path) as root:
        bundle = _load_dir(root, device)
    bundle.path = path
    return bundle


def read_bundle_meta(path: str | Path) -> BundleMeta:
    """Only the bundle's ``geoseg.json`` (classes, bands, normalization), without loading the network."""
    path = Path(path)
    if is_onnx(path):
        return load_bundle(path).meta  # ONNX Runtime reads the metadata without running anything
    with _bundle_folder(path) as root:
        return _read_meta(root / META_FILE, path)


def is_onnx(path: Path) -> bool:
    return path.suffix.lower() == ".onnx"


@contextlib.contextmanager
def _bundle_folder(path: Path) -> Iterator[Path]:
    """The bundle's folder: ``path`` itself, or a zipped bundle extracted for the duration."""
    if not path.exists():
        raise BundleError("model bundle not found; pass the folder written by `geoseg train`", path)
    if path.is_dir():
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise BundleError("is neither a bundle folder nor a zipped bundle", path)
    with tempfile.TemporaryDirectory(prefix="geoseg-bundle-") as tmp:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tmp)
        yield _bundle_root(Path(tmp), path)


def _read_meta(meta_file: Path, source: Path) -> BundleMeta:
    if not meta_file.is_file():
        raise BundleError(f"lacks {META_FILE}; is it a geoseg model bundle?", source)
    try:
        data = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{META_FILE} is not valid JSON ({exc})", source) from None
    return BundleMeta.from_json(data, source)


def _bundle_root(extracted: Path, source: Path) -> Path:
    """A zip may hold the files at its top or inside one folder."""
    hits = sorted(p.parent for p in extracted.rglob(META_FILE))
    if not hits:
        raise BundleError(f"holds no {META_FILE}; is it a geoseg model bundle?", source)
    return hits[0]


def _load_dir(path: Path, device: str) -> Bundle:
    try:
        import segmentation_models_pytorch as smp  # here, not above: an ONNX-only install has no torch
    except ImportError as exc:
        if not needs_torch(exc):
            raise
        raise BundleError(f"is a PyTorch model bundle and this install has no PyTorch: {INSTALL_TORCH}, or run "
                          "`geoseg export` where it is installed and pass the .onnx file", path) from None  # fmt: skip
    for required in BUNDLE_FILES:
        if not (path / required).is_file():
            raise BundleError(f"lacks {required}; a bundle holds config.json, model.safetensors and {META_FILE}", path)
    meta = _read_meta(path / META_FILE, path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints "Loading weights from local …"
            model = smp.from_pretrained(str(path))
    except Exception as exc:
        raise BundleError(f"cannot load the network ({type(exc).__name__}: {str(exc)[:200]})", path) from None
    n_in = _input_channels(model)
    if n_in is not None and n_in != len(meta.bands):
        raise BundleError(
            f"the network takes {n_in} input band(s) but {META_FILE} names {len(meta.bands)} in 'bands'", path
        )
    n_out = _output_channels(model)
    if n_out is not None and n_out != len(meta.classes):
        raise BundleError(
            f"the network has {n_out} output channels but {META_FILE} names {len(meta.classes)} classes", path
        )
    return Bundle(model=model.to(device).eval(), meta=meta, path=path)


def _input_channels(model: torch.nn.Module) -> int | None:
    import torch

    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return first.in_channels if first is not None else None


def _output_channels(model: torch.nn.Module) -> int | None:
    head = getattr(model, "segmentation_head", None)
    conv = head[0] if head is not None and len(head) else None
    return getattr(conv, "out_channels", None)


def check_bundle_fits(bundle: Bundle, info: RasterInfo) -> None:
    """Refuse a bundle that reads bands the raster does not have, or a raster the network would see mirrored."""
    check_not_mirrored(info)
    if max(bundle.meta.bands) > info.count:
        raise BundleError(
            f"reads bands {bundle.meta.bands} but {info.path.name} has {info.count} band(s); "
            "use a model trained on this kind of imagery",
            bundle.path,
        )
