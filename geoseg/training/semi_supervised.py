"""Learning from unlabelled pixels: FixMatch-style pseudo-labels from the teacher, and a neighbourhood term.

**Pseudo-labels** (Sohn et al. 2020, FixMatch, applied per pixel). The teacher (the weights' moving
average the recipe keeps, or the student itself without one) labels the weak view of an unlabelled
window: the window as the sampler read it, flips and rotations only. The student learns those labels
on a strong view of the same window (:func:`strong_view`: photometric jitter, blur, noise and a
cut-out box), only where the teacher is confident. Confidence is judged per class
(:class:`ClassThresholds`): each class's threshold is the base threshold scaled by how confident the
teacher is on that class relative to its most confident one (FreeMatch's class-wise thresholds,
Wang et al. 2023), so a dominant, easy class does not keep all pseudo-labels to itself. The loss
weights each class by 1/sqrt(its share of the kept pseudo-labels), like ``class_weights: balanced``,
and divides by every usable pixel (not just the kept ones), so an unsure teacher teaches little.
Its weight ramps up as exp(-5 (1 - t)²) over the first ``rampup`` share of the steps, while the
teacher is still poor.

**Neighbourhood term** (Tang et al. 2018, "On regularized losses for weakly-supervised CNN
segmentation"). Sparse strokes leave most of a window unlabelled; this term asks neighbouring pixels
of similar colour to get similar class distributions: for each pixel pair at distance one (4
directions), weight exp(-|x_i - x_j|² / (2 σ² C)) times 1 - p_i·p_j, averaged. It needs no extra
forward pass: it applies to the labelled windows' own logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from geoseg.config import IGNORE_INDEX

NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def ramp_up(step: int, total_steps: int, rampup: float) -> float:
    """exp(-5 (1 - t)²), t the share of the ramp done; 1 once ``rampup`` × ``total_steps`` have passed."""
    length = rampup * total_steps
    if length <= 0:
        return 1.0
    t = min(1.0, step / length)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class ClassThresholds:
    """Per-class confidence thresholds from a running mean of the teacher's class probabilities."""

    def __init__(self, n_classes: int, threshold: float, balanced: bool, momentum: float = 0.99) -> None:
        self.threshold = threshold
        self.balanced = balanced
        self.momentum = momentum
        self.mean_probability = torch.full((n_classes,), 1.0 / n_classes)

    def update(self, probs: torch.Tensor, usable: torch.Tensor) -> None:
        """Fold in the mean probability vector of the usable pixels of one batch ((N, K, H, W), (N, H, W))."""
        if not usable.any():
            return
        batch_mean = probs.permute(0, 2, 3, 1)[usable].mean(0).float().cpu()
        self.mean_probability = self.momentum * self.mean_probability + (1 - self.momentum) * batch_mean

    def values(self) -> torch.Tensor:
        """(K,) thresholds: the base one for every class, or scaled per class (never below half the base)."""
        if not self.balanced:
            return torch.full_like(self.mean_probability, self.threshold)
        relative = self.mean_probability / self.mean_probability.max().clamp_min(1e-12)
        return (self.threshold * relative).clamp_min(self.threshold / 2)


def pseudo_labels(probs: torch.Tensor, usable: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(N, H, W) long: the teacher's class where it is usable and at least as confident as its class's
    threshold, IGNORE_INDEX elsewhere."""
    confidence, labels = probs.max(1)
    keep = usable & (confidence >= thresholds.to(probs.device)[labels])
    return torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX))


def strong_view(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A strongly perturbed copy of standardized windows (N, C, H, W), and the (N, H, W) cut-out mask.

    Per window: contrast ×[0.6, 1.4] about its mean, brightness ±0.5 and per-band gain ×[0.8, 1.2]
    (standardized units, about ±0.1 in 0..1 units for ImageNet statistics), then on half the windows a
    3×3 Gaussian blur, on half Gaussian noise of σ up to 0.3, and one box of up to half the side
    set to 0 (the bands' mean). The cut-out pixels carry no pseudo-label.
    """
    n, c, h, w = images.shape
    device = images.device

    def uniform(*shape: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=device)

    x = images.float()
    centre = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - centre) * uniform(n, 1, 1, 1, lo=0.6, hi=1.4) + centre + uniform(n, 1, 1, 1, lo=-0.5, hi=0.5)
    x = x * uniform(n, c, 1, 1, lo=0.8, hi=1.2)
    blur = uniform(n, lo=0.0, hi=1.0) < 0.5
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0], device=device)
        kernel = (kernel[:, None] * kernel[None, :]) / 16.0
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
        x = torch.where(blur[:, None, None, None], blurred, x)
    noisy = (uniform(n, lo=0.0, hi=1.0) < 0.5).float() * uniform(n, lo=0.0, hi=0.3)
    x = x + noisy[:, None, None, None] * torch.randn(x.shape, generator=generator, device=device)
    side_h = (uniform(n, lo=0.0, hi=0.5) * h).long()
    side_w = (uniform(n, lo=0.0, hi=0.5) * w).long()
    top = (uniform(n, lo=0.0, hi=1.0) * (h - side_h + 1)).long()
    left = (uniform(n, lo=0.0, hi=1.0) * (w - side_w + 1)).long()
    rows = torch.arange(h, device=device)[None, :, None]
    cols = torch.arange(w, device=device)[None, None, :]
    cut = ((rows >= top[:, None, None]) & (rows < (top + side_h)[:, None, None])
           & (cols >= left[:, None, None]) & (cols < (left + side_w)[:, None, None]))  # fmt: skip
    x = torch.where(cut[:, None], torch.zeros_like(x), x)
    return x.to(images.dtype), cut


def pseudo_label_loss(student_logits: torch.Tensor, targets: torch.Tensor, usable: torch.Tensor, n_classes: int,
                      balanced: bool) -> torch.Tensor:  # fmt: skip
    """Cross-entropy on the kept pseudo-labels, class-weighted if ``balanced``, over every usable pixel."""
    kept = targets != IGNORE_INDEX
    count = usable.sum()
    if not kept.any() or count == 0:
        return student_logits.sum() * 0.0
    per_pixel = F.cross_entropy(student_logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    if balanced:
        frequency = torch.bincount(targets[kept], minlength=n_classes).float()
        frequency = frequency / frequency.sum()
        weights = torch.where(frequency > 0, frequency.clamp_min(1e-12).rsqrt(), torch.zeros_like(frequency))
        weights = weights / (weights * frequency).sum().clamp_min(1e-12)
        per_pixel = per_pixel * weights[targets.clamp_max(n_classes - 1)] * kept
    return per_pixel.sum() / count


def neighbourhood_loss(logits: torch.Tensor, images: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Mean over neighbouring pixel pairs of exp(-|Δx|² / (2σ²C)) · (1 - p_i·p_j); σ in standardized units."""
    probs = torch.softmax(logits.float(), dim=1)
    x = images.float()
    channels = x.shape[1]
    total = logits.new_zeros((), dtype=torch.float32)
    h, w = probs.shape[-2:]
    for dy, dx in NEIGHBOUR_SHIFTS:
        rows_a, rows_b = slice(0, h - dy), slice(dy, h)
        cols_a, cols_b = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        pa, pb = probs[..., rows_a, cols_a], probs[..., rows_b, cols_b]
        distance = (x[..., rows_a, cols_a] - x[..., rows_b, cols_b]).pow(2).sum(1)
        affinity = torch.exp(-distance / (2 * sigma * sigma * channels))
        total = total + (affinity * (1 - (pa * pb).sum(1))).mean()
    return total / len(NEIGHBOUR_SHIFTS)
