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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RawBatch:
    """Windows in the mosaic's own 8- or 16-bit dtype with their valid masks, and ``table``, the network input
    of each value per band (``Normalization.value_table``, float32 (bands, levels)).

    A torch network normalizes them where it runs, by a lookup: a GPU receives a quarter (uint8) or half
    (uint16) of the bytes of float32 windows, and the numbers are ``Normalization.apply``'s, bit for bit
    (pixels not valid are 0).
    """

    windows: Sequence[np.ndarray]  # (bands, h, w)
    valid: Sequence[np.ndarray]  # (h, w) bool
    table: np.ndarray

    def normalized(self) -> list[np.ndarray]:
        """The same windows normalized here, for a network that takes numpy arrays."""
        out = []
        for window, valid in zip(self.windows, self.valid, strict=True):
            image = np.stack([table[band] for table, band in zip(self.table, window, strict=True)])
            image[:, ~valid] = 0.0
            out.append(image)
        return out


type Windows = Sequence[np.ndarray] | RawBatch  # normalized float32 windows, or raw ones with their table

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
    model: Network, windows: Windows, batch_size: int, precision: str = "fp32", tta: bool = False
) -> np.ndarray:
    """Softmax probabilities (n, classes, h, w) of up to ``batch_size`` normalized (bands, h, w) windows, or
    of a ``RawBatch``.

    They run as one batch of always ``batch_size`` windows (zero-padded), so a window's probabilities do not
    depend on how many others share its batch.
    """
    if isinstance(model, ArrayNetwork):
        return model.probabilities(_array_batch(windows, batch_size), tta)[: _count(windows)]
    return _torch_outputs(model, windows, batch_size, precision, tta)[: _count(windows)]


def batch_weighted(
    model: Network,
    windows: Windows,
    batch_size: int,
    weights: np.ndarray,
    dtype: np.dtype,
    precision: str = "fp32",
    tta: bool = False,
    keep: bool = False,
) -> np.ndarray | torch.Tensor:
    """``rint(probabilities × weights)`` as ``dtype`` integers (n, classes, h, w), ``weights`` float32 (h, w).
    With ``keep``, a torch network's integers stay on its device as a tensor (``device_zeros`` takes them).

    Bit for bit ``np.rint(batch_probabilities(...) * weights).astype(dtype)``: one float32 product and a
    round half to even, in torch and numpy alike. On a torch network it is computed where the network
    runs, so a GPU sends back each window's integers, and the CPU makes no float copy of its probabilities.
    """
    if isinstance(model, ArrayNetwork):
        probabilities = batch_probabilities(model, windows, batch_size, precision, tta)
        return np.rint(probabilities * weights).astype(dtype)
    weighted = (weights, np.dtype(dtype))
    return _torch_outputs(model, windows, batch_size, precision, tta, weighted, keep)[: _count(windows)]


def _count(windows: Windows) -> int:
    return len(windows.windows if isinstance(windows, RawBatch) else windows)


def _array_batch(windows: Windows, batch_size: int) -> np.ndarray:
    if isinstance(windows, RawBatch):
        windows = windows.normalized()
    batch = np.zeros((batch_size, *windows[0].shape), dtype=np.float32)
    for i, window in enumerate(windows):
        batch[i] = window
    return batch


def _torch_outputs(
    model: torch.nn.Module,
    windows: Windows,
    batch_size: int,
    precision: str,
    tta: bool,
    weighted: tuple[np.ndarray, np.dtype] | None = None,
    keep: bool = False,
) -> np.ndarray | torch.Tensor:
    """Probabilities, or with ``weighted`` (weights, integer dtype) the rounded weighted probabilities, left on
    the device with ``keep``."""
    import torch

    from geoseg.tta import averaged_probabilities

    device = next(model.parameters()).device
    with torch.inference_mode():
        x = (
            _torch_raw_batch(windows, batch_size, device)
            if isinstance(windows, RawBatch)
            else _torch_batch(windows, batch_size, device)
        )

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
        integers.copy_(probabilities)
        return integers if keep else integers.cpu().numpy()


def device_zeros(model: torch.nn.Module, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """Integer zeros on ``model``'s device: a block's fixed-point sums, added to where the windows are made."""
    import torch

    return torch.zeros(shape, dtype=getattr(torch, np.dtype(dtype).name), device=next(model.parameters()).device)


def device_finish(
    sums: torch.Tensor, labels: Sequence[int], valid: np.ndarray, confidence: bool, ignore: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class ids (uint8, ``ignore`` where not ``valid``) and, if asked, the chosen class's share of the sums,
    computed where ``sums`` (classes, h, w) lie, so only these come back to the host.

    The rule of ``assemble.finish_block``, bit for bit: the first class with the largest sum; the share in
    float64, rounded to float32, 0 where not valid.
    """
    import torch

    best = torch.full(sums.shape[1:], labels[0], dtype=torch.uint8, device=sums.device)
    top = sums[0].clone()
    for k in range(1, len(sums)):
        better = sums[k] > top
        best.masked_fill_(better, labels[k])
        torch.maximum(top, sums[k], out=top)
    invalid = torch.from_numpy(~valid).to(sums.device)
    classes = best.masked_fill_(invalid, ignore).cpu().numpy()
    if not confidence:
        return classes, None
    total = sums.sum(dim=0, dtype=torch.int64).clamp_(min=1)
    share = (top.double() / total.double()).float().masked_fill_(invalid, 0.0)
    return classes, share.cpu().numpy()


def host_copy(sums: torch.Tensor, skip: tuple[slice, slice] | None = None) -> np.ndarray:
    """``sums`` on the host; with ``skip`` (rows, columns), that rectangle is left 0 and not copied (a
    settled interior: what comes back from the device is only what the neighbours still need)."""
    if skip is None:
        return sums.cpu().numpy()  # on the CPU the tensor's own memory, no copy
    host = np.zeros(tuple(sums.shape), dtype=str(sums.dtype).removeprefix("torch."))
    rows, cols = skip
    height, width = sums.shape[1:]
    for part_rows, part_cols in (
        (slice(0, rows.start), slice(0, width)),
        (slice(rows.stop, height), slice(0, width)),
        (rows, slice(0, cols.start)),
        (rows, slice(cols.stop, width)),
    ):
        part = sums[:, part_rows, part_cols]
        if part.numel():
            host[:, part_rows, part_cols] = part.cpu().numpy()
    return host


def _torch_batch(windows: Sequence[np.ndarray], batch_size: int, device: torch.device) -> torch.Tensor:
    """The zero-padded float batch, channels-last."""
    import torch

    return _padded(windows, batch_size, torch.float32, device, channels_last=True)


def _padded(arrays: Sequence[np.ndarray], batch_size: int, dtype: torch.dtype, device: torch.device,
            channels_last: bool = False) -> torch.Tensor:  # fmt: skip
    """``arrays`` in a batch of ``batch_size``, zero-padded, filled once in host memory (pinned and sent ahead
    without blocking to a GPU)."""
    import torch

    on_gpu = device.type == "cuda"
    layout = torch.channels_last if channels_last else torch.contiguous_format
    batch = torch.empty((batch_size, *arrays[0].shape), dtype=dtype, memory_format=layout, pin_memory=on_gpu)
    host = batch.numpy()
    for i, array in enumerate(arrays):
        host[i] = array
    host[len(arrays) :] = 0
    return batch.to(device, non_blocking=on_gpu)


def _torch_raw_batch(raw: RawBatch, batch_size: int, device: torch.device) -> torch.Tensor:
    """The zero-padded batch of raw windows and masks sent in their own dtypes, normalized on ``device``
    by a lookup in ``raw.table``; pixels not valid, and the padding windows, are 0."""
    import torch

    on_gpu = device.type == "cuda"
    bands = raw.windows[0].shape[0]
    shape = (batch_size, *raw.windows[0].shape)
    # 16-bit windows travel as int16 bit patterns (uint16 is a half-supported torch dtype on GPUs)
    wide = raw.windows[0].dtype == np.uint16
    windows = [window.view(np.int16) for window in raw.windows] if wide else raw.windows
    values = _padded(windows, batch_size, torch.int16 if wide else torch.uint8, device)
    valid = _padded(raw.valid, batch_size, torch.bool, device)
    # index 0 holds the 0 of pixels not valid; band b's value v is at 1 + b × levels + v. Index arithmetic
    # and one gather: a masked fill over the bands took 6 ms of a batch's 17 on the CPU, this 5 ms in all.
    levels = raw.table.shape[1]
    table = torch.from_numpy(np.concatenate([np.zeros(1, np.float32), raw.table.ravel()])).to(
        device, non_blocking=on_gpu
    )
    index = values.to(torch.int32)
    if wide:
        index.bitwise_and_(0xFFFF)  # the sign extension undone: 0..65535 again
    for band in range(bands):
        index[:, band].add_(1 + band * levels)
    index.mul_(valid.unsqueeze(1))
    gathered = torch.index_select(table, 0, index.view(-1)).view(shape)
    # channels-last as _torch_batch's: with one band an NCHW tensor also counts as channels-last, and the
    # convolution would run on its NCHW strides, another algorithm with other roundings
    return torch.empty(shape, device=device, memory_format=torch.channels_last).copy_(gathered)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
