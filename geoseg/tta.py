"""Test-time augmentation: the eight flips and 90° rotations of a square window, averaged.

Each view's probabilities are mapped back onto the window before averaging, so the result is a
function of the window alone: block size, batch neighbours and worker count cannot change it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (quarter turns, flip left-right first): the dihedral group of the square
VIEWS = tuple((k, flip) for flip in (False, True) for k in range(4))


def _forward_view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _inverse_view(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k:
        y = torch.rot90(y, -k, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if flip else y


def averaged_probabilities(
    logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: bool
) -> torch.Tensor:
    """Softmax probabilities (float32) of ``x`` (N, C, H, W), averaged over the eight views if ``tta``."""
    if not tta:
        return torch.softmax(logits_of(x).float(), dim=1)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"test-time augmentation needs square windows, got {tuple(x.shape[-2:])}")
    total: torch.Tensor | None = None
    for k, flip in VIEWS:
        probs = torch.softmax(logits_of(_forward_view(x, k, flip)).float(), dim=1)
        probs = _inverse_view(probs, k, flip)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(VIEWS)
