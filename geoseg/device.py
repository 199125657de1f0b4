"""Choosing the compute device and precision for training and inference."""

from __future__ import annotations

import os
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


def gpu_ids(requested: str) -> tuple[str, ...]:
    """The GPUs ``--gpus all|N`` names: all this process may use, or the first N, in ``CUDA_VISIBLE_DEVICES``'s
    order (its entries as given, so a worker pinned to one sees the same card the user meant)."""
    count = requested.strip()
    if count != "all" and not (count.isdigit() and int(count) > 0):
        raise DeviceError(f"--gpus takes 'all' or a number of GPUs (1, 2, …), got {requested!r}")
    visible = visible_gpus()
    if not visible:
        raise DeviceError("--gpus asks for GPUs but this machine shows no CUDA GPU; leave --gpus out to use the CPU "
                          "cores, or run where `nvidia-smi` lists GPUs")  # fmt: skip
    wanted = len(visible) if count == "all" else int(count)
    if wanted > len(visible):
        raise DeviceError(f"--gpus {wanted}: this machine shows {len(visible)} GPU(s) ({', '.join(visible)})")
    return tuple(visible[:wanted])


def visible_gpus() -> list[str]:
    """The CUDA GPUs this process may use: ``CUDA_VISIBLE_DEVICES``'s entries (indices or UUIDs) where it is set,
    else 0 … count − 1. Counted by torch, or without torch by the NVIDIA driver's /proc entries."""
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:
        driver = Path("/proc/driver/nvidia/gpus")
        count = len(list(driver.iterdir())) if driver.is_dir() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in listed.split(",") if s.strip()] if listed is not None else [str(i) for i in range(count)]
    return ids[:count]


def cuda_bf16() -> bool:
    """bf16 on the GPU (Ampere and later); fp16 otherwise."""
    import torch

    return torch.cuda.is_bf16_supported()


@cache
def cpu_has_amx() -> bool:
    """Intel AMX tile units: the only CPUs where bf16 beats fp32, in training and in inference alike
    (bench/RESULTS.md); AVX512-BF16 alone is slower than fp32 with channels-last."""
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
