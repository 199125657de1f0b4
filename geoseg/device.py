"""Choosing the compute device and precision for training and inference."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

from geoseg.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> str:
    """'auto' → cuda when a GPU is visible, else cpu; an explicit 'cuda' without a GPU is an input error."""
    if requested not in DEVICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


@cache
def cpu_has_bf16() -> bool:
    """CPUs with native bf16 units (AVX512-BF16 or AMX) run autocast bf16 several times faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@cache
def cpu_has_amx() -> bool:
    """Intel AMX tile units: the only CPUs where bf16 training beats fp32 (bench/RESULTS.md)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def training_precision(accelerator: str) -> str:
    """Lightning precision: mixed precision on GPUs; on CPUs bf16 autocast only with AMX.

    On a CPU with AVX512-BF16 but no AMX, bf16 training steps measured 1.6× slower than fp32 with
    channels-last (bench/train_speed.py), so such CPUs train in fp32.
    """
    if accelerator == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_amx() else "32-true"
