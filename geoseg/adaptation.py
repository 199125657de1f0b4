"""Joint energy-based domain adaptation: the segmentation logits read as an energy model.

A pixel's free energy is F(x) = −logsumexp_k logits_k(x): low where the model finds the input
familiar (some class scores high), high where nothing fits. Imagery from another camera sits at higher
free energy than the labelled source imagery. The adaptation term pulls the target pixels' mean free
energy down towards the source pixels':

    term = softplus(mean F(target) − stop_gradient(mean F(source)))

added, times ``adaptation.weight`` (0.01 as in the source paper), to the supervised loss on source
windows. Why this form rather than the plain difference weight·(mean F_t − mean F_s):

- The plain difference is unbounded below: the model can lower it forever by inflating target logits
  and deflating source ones, which fights the supervised loss on the source and, over a long training,
  wins. Softplus is bounded below by 0 and its gradient (a sigmoid of the gap) fades once target pixels
  are as familiar as source ones, so it stops pushing when its job is done.
- The source energy is the reference, not a variable: its gradient is stopped, so the term never makes
  the model less confident on labelled imagery; only the supervised loss shapes the source.

Only valid pixels count: nodata, pixels outside the image and quality-flagged pixels of target windows,
and unlabelled pixels of source windows, are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geoseg.config import IGNORE_INDEX

METHOD = "joint energy-based: softplus(mean F(target) - stop_gradient(mean F(source))), F = -logsumexp(logits)"


def free_energy(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) logits → (N, H, W) free energy, in float32 whatever the autocast precision."""
    return -torch.logsumexp(logits.float(), dim=1)


def energy_gap(
    source_logits: torch.Tensor, source_mask: torch.Tensor, target_logits: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor | None:
    """mean F(target) − mean F(source) over valid pixels (masks: IGNORE_INDEX where left out); None if
    either side has no valid pixel. The source mean is detached."""
    source_valid = source_mask != IGNORE_INDEX
    target_valid = target_mask != IGNORE_INDEX
    if not source_valid.any() or not target_valid.any():
        return None
    source = free_energy(source_logits)[source_valid].mean().detach()
    target = free_energy(target_logits)[target_valid].mean()
    return target - source


def energy_term(
    source_logits: torch.Tensor, source_mask: torch.Tensor, target_logits: torch.Tensor, target_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(softplus of the energy gap, the gap itself for logging); 0 (with a graph) when a side is empty."""
    gap = energy_gap(source_logits, source_mask, target_logits, target_mask)
    if gap is None:
        return target_logits.sum() * 0.0, None
    return F.softplus(gap), gap.detach()
