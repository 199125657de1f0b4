"""Inference settings both faces resolve the same way: window size, precision, batch size.

``name`` arguments say how the caller spells the setting (``--overlap`` on the command line,
``overlap`` in Python), so messages point at what the user typed.
"""

from __future__ import annotations

from geoseg.device import cpu_has_amx, cuda_bf16
from geoseg.errors import InputError
from geoseg.model.bundle import MIN_TILE, BundleMeta

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_TILE = 4096  # a 4096² window's activations already take gigabytes; beyond, every run would fail late


def resolve_precision(requested: str, device: str, name: str = "--precision", meta: BundleMeta | None = None) -> str:
    """auto: bf16 on GPUs that support it (else fp16), bf16 on CPUs with AMX tile units, else fp32.

    AVX512-BF16 alone is not enough: on such a Xeon a resnet18 U-Net's 512² window took 0.58 s in bf16
    against 0.40 s in fp32 (bench/RESULTS.md).

    ONNX models run in ONNX Runtime, in the precision of their graph: fp32 for geoseg's exports.
    """
    if requested not in PRECISIONS:
        raise InputError(f"{name} must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if meta is not None and meta.runtime == "onnx":
        if requested not in ("auto", "fp32"):
            raise InputError(f"an ONNX model runs in its graph's own precision (fp32); drop {name} {requested}")
        return "fp32"
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if cuda_bf16() else "fp16"
    return "bf16" if cpu_has_amx() else "fp32"


def window_size(tile: int | None, overlap: int | None, meta: BundleMeta, name: str = "--overlap") -> tuple[int, int]:
    """Tile and overlap: the ones asked for, else the bundle's."""
    if tile is not None and meta.fixed_tile and tile != meta.tile_size:
        raise InputError(f"the model takes {meta.tile_size} px windows only (an ONNX graph of fixed size); "
                         f"drop the tile setting ({tile})")  # fmt: skip
    tile_name = name.replace("overlap", "tile")
    if tile is not None and not MIN_TILE <= tile <= MAX_TILE:
        raise InputError(f"{tile_name} must be {MIN_TILE}-{MAX_TILE} px (a {tile} px window would not fit a network "
                         f"in memory); leave it out to use the model's {meta.tile_size}")  # fmt: skip
    tile = tile or meta.tile_size
    overlap = meta.overlap if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise InputError(f"{name} must be at least 0 and less than the tile ({tile}), got {overlap}")
    if overlap > tile * 3 // 4:
        stride = tile - overlap
        raise InputError(f"{name} {overlap} leaves windows {stride} px apart, so each pixel would run through "
                         f"about {round((tile / stride) ** 2)} windows; keep it at most 3/4 of the tile "
                         f"({tile * 3 // 4})")  # fmt: skip
    return tile, overlap


def default_batch_size(device: str) -> int:
    """1 on the CPU (no padded slots), 8 on a GPU."""
    return 8 if device == "cuda" else 1
