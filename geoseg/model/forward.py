"""The network over a batch of windows: fixed batch shape, channels-last, autocast, TTA and softmax.

Inference (``geoseg.infer``) and the drift check's confidence sample (``geoseg.drift``) both run windows
through this one function, so they see the same probabilities.

A network is either a torch module (a bundle folder) or an :class:`ArrayNetwork`, which takes and gives
numpy arrays (ONNX Runtime). The second path never imports torch, so ``pip install 'geoseg[onnx]'`` without
torch can segment with an exported model.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch


@runtime_checkable
class ArrayNetwork(Protocol):
    """A network run outside torch: normalized (n, bands, h, w) float32 in, probabilities out."""

    def probabilities(self, batch: np.ndarray, tta: bool) -> np.ndarray:
        """Per-class probabilities (n, classes, h, w), averaged over the eight views if ``tta``."""
        ...


type Network = torch.nn.Module | ArrayNetwork  # evaluated lazily: torch is imported for type checkers only

_threads = threading.local()


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """One thread per forward pass in this thread, for torch (OpenMP's setting is per thread) and ONNX
    Runtime alike, restored afterwards. Convolutions sum in another order with another thread count, so
    without it a class map would depend on how many blocks run at once."""
    torch = sys.modules.get("torch")  # no torch network exists in a process that never imported torch
    before = torch.get_num_threads() if torch is not None else None
    held = getattr(_threads, "count", None)
    _threads.count = 1
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        _threads.count = held
        if torch is not None:
            torch.set_num_threads(before)


def folded_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """The eval-mode network with each BatchNorm folded into the convolution before it, in place.

    A BatchNorm after a convolution is an affine map per channel, so it can live in the convolution's
    weights and bias: one pass over each activation map fewer (0.376 s against 0.412 s for a resnet18
    U-Net's 512² window on one CPU thread, bench/RESULTS.md). Logits change by float rounding only. A
    network torch.fx cannot trace (data-dependent Python control flow) is returned as it is.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model, inplace=True)
    except Exception:  # any tracing failure: the network as it is, still correct
        return model


def intra_op_threads() -> int:
    """Threads an ``ArrayNetwork`` may use here: 1 inside ``one_intra_op_thread``, else the usable cores."""
    if getattr(_threads, "count", None):
        return _threads.count
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def batch_probabilities(
    model: Network, windows: Sequence[np.ndarray], batch_size: int, precision: str = "fp32", tta: bool = False
) -> np.ndarray:
    """Softmax probabilities (n, classes, h, w) of up to ``batch_size`` normalized (bands, h, w) windows.

    They run as one batch of always ``batch_size`` windows (zero-padded), so a window's probabilities do not
    depend on how many others share its batch.
    """
    if isinstance(model, ArrayNetwork):
        return model.probabilities(_array_batch(windows, batch_size), tta)[: len(windows)]
    return _torch_outputs(model, windows, batch_size, precision, tta)[: len(windows)]


def batch_weighted(
    model: Network,
    windows: Sequence[np.ndarray],
    batch_size: int,
    weights: np.ndarray,
    dtype: np.dtype,
    precision: str = "fp32",
    tta: bool = False,
) -> np.ndarray:
    """``rint(probabilities × weights)`` as ``dtype`` integers (n, classes, h, w), ``weights`` float32 (h, w).

    Bit for bit ``np.rint(batch_probabilities(...) * weights).astype(dtype)``: one float32 product and a
    round half to even, in torch and numpy alike. On a torch network it is computed where the network
    runs, so a GPU sends back each window's integers, and the CPU makes no float copy of its probabilities.
    """
    if isinstance(model, ArrayNetwork):
        probabilities = batch_probabilities(model, windows, batch_size, precision, tta)
        return np.rint(probabilities * weights).astype(dtype)
    return _torch_outputs(model, windows, batch_size, precision, tta, (weights, np.dtype(dtype)))[: len(windows)]


def _array_batch(windows: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    batch = np.zeros((batch_size, *windows[0].shape), dtype=np.float32)
    for i, window in enumerate(windows):
        batch[i] = window
    return batch


def _torch_outputs(
    model: torch.nn.Module,
    windows: Sequence[np.ndarray],
    batch_size: int,
    precision: str,
    tta: bool,
    weighted: tuple[np.ndarray, np.dtype] | None = None,
) -> np.ndarray:
    """Probabilities, or with ``weighted`` (weights, integer dtype) the rounded weighted probabilities."""
    import torch

    from geoseg.tta import averaged_probabilities

    device = next(model.parameters()).device
    with torch.inference_mode():
        x = _torch_batch(windows, batch_size, device)

        def logits_of(view: torch.Tensor) -> torch.Tensor:
            with _autocast(device, precision):
                return model(view.contiguous(memory_format=torch.channels_last))

        probabilities = averaged_probabilities(logits_of, x, tta)
        if weighted is None:
            return probabilities.cpu().numpy()
        weights, dtype = weighted
        probabilities.mul_(torch.from_numpy(weights).to(device)).round_()
        # one pass to integers and to channels-first; the values are whole numbers, so the cast is exact
        integers = torch.empty(probabilities.shape, dtype=getattr(torch, dtype.name), device=device)
        return integers.copy_(probabilities).cpu().numpy()


def _torch_batch(windows: Sequence[np.ndarray], batch_size: int, device: torch.device) -> torch.Tensor:
    """The zero-padded batch, copied once into a channels-last tensor (pinned and sent ahead to a GPU)."""
    import torch

    on_gpu = device.type == "cuda"
    shape = (batch_size, *windows[0].shape)
    batch = torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last, pin_memory=on_gpu)
    host = batch.numpy()
    for i, window in enumerate(windows):
        host[i] = window
    host[len(windows) :] = 0
    return batch.to(device, non_blocking=on_gpu)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
