"""Test-time augmentation: the eight flips and 90° rotations of a square window, averaged.

Each view's probabilities are mapped back onto the window before averaging, so the result is a
function of the window alone: block size, batch neighbours and worker count cannot change it.
The same views run on torch tensors (torch bundles) and on numpy arrays (ONNX Runtime).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# (quarter turns, flip left-right first): the dihedral group of the square
VIEWS = tuple((k, flip) for flip in (False, True) for k in range(4))


def _forward_view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    import torch

    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _inverse_view(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    import torch

    if k:
        y = torch.rot90(y, -k, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if flip else y


def averaged_probabilities(
    logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: bool
) -> torch.Tensor:
    """Softmax probabilities (float32) of ``x`` (N, C, H, W), averaged over the eight views if ``tta``."""

    if not tta:
        return _softmax(logits_of(x))
    _check_square(x.shape)
    total: torch.Tensor | None = None
    for k, flip in VIEWS:
        probs = _softmax(logits_of(_forward_view(x, k, flip)))
        probs = _inverse_view(probs, k, flip)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(VIEWS)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, computed on a channels-first copy.

    On a channels-last tensor torch's softmax over dim 1 takes 5× as long on the CPU (23 ms against 4.4 ms
    for 4×4×512², plus 1.2 ms for the copy) and gives the same bits.
    """
    import torch

    return torch.softmax(logits.float().contiguous(), dim=1)


def averaged_array_probabilities(
    probabilities_of: Callable[[np.ndarray], np.ndarray], x: np.ndarray, tta: bool
) -> np.ndarray:
    """``averaged_probabilities`` for a network that gives probabilities of numpy arrays (N, C, H, W)."""
    if not tta:
        return probabilities_of(x).astype(np.float32, copy=False)
    _check_square(x.shape)
    total = np.zeros((), dtype=np.float32)
    for k, flip in VIEWS:
        view = x[..., ::-1] if flip else x
        probs = probabilities_of(np.ascontiguousarray(np.rot90(view, k, axes=(-2, -1))))
        probs = np.rot90(probs.astype(np.float32, copy=False), -k, axes=(-2, -1))
        total = total + (probs[..., ::-1] if flip else probs)
    return total / np.float32(len(VIEWS))


def _check_square(shape: tuple[int, ...]) -> None:
    if shape[-1] != shape[-2]:
        raise ValueError(f"test-time augmentation needs square windows, got {tuple(shape[-2:])}")
