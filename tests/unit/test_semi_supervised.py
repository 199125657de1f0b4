"""The semi-supervised terms on tensors: which pixels get pseudo-labels, how classes are balanced, the strong
view, the ramp, and what the neighbourhood term rewards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geoseg.config import IGNORE_INDEX
from geoseg.data.targets import VALID
from geoseg.data.unlabelled import usable_unlabelled
from geoseg.training import semi_supervised as semi


def _probs(*per_pixel: tuple[float, ...]) -> torch.Tensor:
    """(1, K, 1, P) probabilities from one K-tuple a pixel."""
    return torch.tensor(per_pixel, dtype=torch.float32).T[None, :, None, :]


def test_pseudo_labels_only_where_usable_and_confident() -> None:
    probs = _probs((0.95, 0.05), (0.6, 0.4), (0.02, 0.98), (0.99, 0.01))
    usable = torch.tensor([[[True, True, True, False]]])
    labels = semi.pseudo_labels(probs, usable, torch.tensor([0.9, 0.9]))
    assert labels.tolist() == [[[0, IGNORE_INDEX, 1, IGNORE_INDEX]]]


def test_balanced_thresholds_are_lower_for_the_class_the_teacher_is_less_sure_of() -> None:
    thresholds = semi.ClassThresholds(2, threshold=0.9, balanced=True, momentum=0.0)
    # the teacher puts 80 % of its probability mass on class 0 on average
    probs = _probs((0.9, 0.1), (0.9, 0.1), (0.9, 0.1), (0.3, 0.7))
    thresholds.update(probs, torch.ones(1, 1, 4, dtype=torch.bool))
    values = thresholds.values()
    assert values[0] == pytest.approx(0.9)
    assert values[1] == pytest.approx(max(0.9 * 0.25 / 0.75, 0.45))
    # so the one pixel of class 1 (0.7 sure) is kept, which a flat 0.9 threshold would drop
    labels = semi.pseudo_labels(probs, torch.ones(1, 1, 4, dtype=torch.bool), values)
    assert labels[0, 0, 3] == 1
    flat = semi.ClassThresholds(2, threshold=0.9, balanced=False).values()
    assert semi.pseudo_labels(probs, torch.ones(1, 1, 4, dtype=torch.bool), flat)[0, 0, 3] == IGNORE_INDEX


def test_thresholds_never_fall_below_half_the_base() -> None:
    thresholds = semi.ClassThresholds(3, threshold=0.8, balanced=True, momentum=0.0)
    thresholds.update(_probs((0.98, 0.01, 0.01)), torch.ones(1, 1, 1, dtype=torch.bool))
    assert thresholds.values().min() == pytest.approx(0.4)


def test_pseudo_label_loss_divides_by_every_usable_pixel() -> None:
    logits = torch.zeros(1, 2, 1, 4)  # uniform: cross-entropy log 2 on each pixel
    targets = torch.tensor([[[0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]])
    usable = torch.tensor([[[True, True, True, True]]])
    loss = semi.pseudo_label_loss(logits, targets, usable, 2, balanced=False)
    assert float(loss) == pytest.approx(math.log(2) / 4)  # one kept pixel out of four usable
    none_kept = torch.full_like(targets, IGNORE_INDEX)
    assert float(semi.pseudo_label_loss(logits, none_kept, usable, 2, balanced=False)) == 0.0


def test_balanced_loss_gives_a_rare_class_more_weight_a_pixel() -> None:
    logits = torch.zeros(1, 2, 1, 5, requires_grad=True)
    targets = torch.tensor([[[0, 0, 0, 0, 1]]])
    loss = semi.pseudo_label_loss(logits, targets, torch.ones(1, 1, 5, dtype=torch.bool), 2, balanced=True)
    loss.backward()
    grad = logits.grad[0, :, 0].abs().sum(0)
    assert grad[4] > 1.9 * grad[0]  # 1/sqrt(0.2) against 1/sqrt(0.8): twice the weight


def test_strong_view_keeps_the_geometry_and_is_reproducible() -> None:
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    strong, cut = semi.strong_view(images, torch.Generator().manual_seed(5))
    again, cut_again = semi.strong_view(images, torch.Generator().manual_seed(5))
    assert torch.equal(strong, again) and torch.equal(cut, cut_again)
    assert strong.shape == images.shape and cut.shape == (4, 64, 64)
    assert (strong[cut[:, None].expand_as(strong)] == 0).all()
    for i in range(4):  # outside the cut-out, each pixel stays where it was: high correlation with the weak view
        keep = ~cut[i]
        a, b = images[i][:, keep].flatten(), strong[i][:, keep].flatten()
        assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.5
        assert cut[i].float().mean() <= 0.25


def test_ramp_starts_small_and_reaches_one() -> None:
    assert semi.ramp_up(0, 100, 0.3) == pytest.approx(math.exp(-5))
    assert semi.ramp_up(15, 100, 0.3) == pytest.approx(math.exp(-5 * 0.25))
    assert semi.ramp_up(30, 100, 0.3) == 1.0 and semi.ramp_up(99, 100, 0.3) == 1.0
    assert semi.ramp_up(0, 100, 0.0) == 1.0


def test_neighbourhood_term_prefers_borders_on_image_edges() -> None:
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 3.0  # a bright right half
    follows = torch.full((1, 2, 16, 16), -5.0)
    follows[:, 0, :, :8] = 5.0
    follows[:, 1, :, 8:] = 5.0
    cuts_across = torch.full((1, 2, 16, 16), -5.0)
    cuts_across[:, 0, :8] = 5.0  # a border through the middle of each uniform half
    cuts_across[:, 1, 8:] = 5.0
    assert float(semi.neighbourhood_loss(follows, image)) < 0.2 * float(semi.neighbourhood_loss(cuts_across, image))
    uniform = torch.zeros(1, 2, 16, 16)  # unsure everywhere costs too
    assert float(semi.neighbourhood_loss(uniform, image)) > float(semi.neighbourhood_loss(follows, image))


def test_unlabelled_pool_leaves_out_labels_validation_and_nodata() -> None:
    labels = np.array([[0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]], dtype=np.uint8)
    validity = np.array([[VALID, VALID, IGNORE_INDEX, VALID]], dtype=np.uint8)
    validation = np.array([[False, False, False, True]])
    codes = usable_unlabelled(labels, validity, validation)
    assert codes.tolist() == [[IGNORE_INDEX, VALID, IGNORE_INDEX, IGNORE_INDEX]]
