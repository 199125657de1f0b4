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
    batch = np.zeros((batch_size, *windows[0].shape), dtype=np.float32)
    for i, window in enumerate(windows):
        batch[i] = window
    if isinstance(model, ArrayNetwork):
        return model.probabilities(batch, tta)[: len(windows)]
    return _torch_probabilities(model, batch, precision, tta)[: len(windows)]


def _torch_probabilities(model: torch.nn.Module, batch: np.ndarray, precision: str, tta: bool) -> np.ndarray:
    import torch

    from geoseg.tta import averaged_probabilities

    device = next(model.parameters()).device
    with torch.inference_mode():
        x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)

        def logits_of(view: torch.Tensor) -> torch.Tensor:
            with _autocast(device, precision):
                return model(view.contiguous(memory_format=torch.channels_last))

        return averaged_probabilities(logits_of, x, tta).cpu().numpy()


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
