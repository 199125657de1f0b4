"""Choosing the compute device and precision for training and inference."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from geoseg.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> str:
    """'auto' → cuda when a GPU is visible, else cpu; an explicit 'cuda' without a GPU is an input error."""
    if requested not in DEVICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cuda" and not cuda_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    return requested


@cache
def cuda_available() -> bool:
    """A CUDA GPU torch can use; in an install without torch (``geoseg[onnx]`` alone), one ONNX Runtime can."""
    try:
        import torch
    except ImportError:
        try:
            import onnxruntime
        except ImportError:
            return False
        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return torch.cuda.is_available()


def cuda_bf16() -> bool:
    """bf16 on the GPU (Ampere and later); fp16 otherwise."""
    import torch

    return torch.cuda.is_bf16_supported()


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
        return "bf16-mixed" if cuda_bf16() else "16-mixed"
    return "bf16-mixed" if cpu_has_amx() else "32-true"
