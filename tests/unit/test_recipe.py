"""The recipe's automatic choices (window size, step budget, schedule) and the weights' moving average."""

from __future__ import annotations

import copy
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.config import IGNORE_INDEX, TrainConfig, load_config
from geoseg.errors import ConfigError
from geoseg.recipe import MAX_STEPS, MIN_STEPS, auto_steps, auto_tile_size, labelled_extent, lr_factor, resolve_recipe
from geoseg.train import update_ema

MINIMAL = """
data:
  images: [ortho.tif]
  labels: labels.gpkg
  label_field: class
  classes: {1: bare soil, 2: crust}
"""


def test_windows_fit_the_labelled_area() -> None:
    assert auto_tile_size([(4000, 6000)]) == 512
    assert auto_tile_size([(341, 280)]) == 128  # a new_brunswick tile: half its short side is 140
    assert auto_tile_size([(720, 175)]) == 64  # a narrow strip
    assert auto_tile_size([(120, 100), (900, 450)]) == 192  # the largest labelled area decides
    assert auto_tile_size([(30, 30)]) == 64  # never below what a five-level U-Net can take


def test_labelled_extent_ignores_the_validation_region() -> None:
    labels = np.full((50, 80), IGNORE_INDEX, dtype=np.uint8)
    labels[10:20, 5:70] = 1
    validation = np.zeros_like(labels, dtype=bool)
    validation[:, 40:] = True
    assert labelled_extent(labels, validation) == (10, 35)
    assert labelled_extent(labels, np.ones_like(validation)) == (0, 0)


def test_step_budget_grows_with_the_labelled_area_within_bounds() -> None:
    budgets = [auto_steps(pixels, 128) for pixels in (1_000, 100_000, 10_000_000, 10**12)]
    assert budgets[0] == MIN_STEPS and budgets[-1] == MAX_STEPS
    assert budgets == sorted(budgets) and budgets[1] < budgets[2]


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_learning_rate_warms_up_then_follows_the_schedule(schedule: str) -> None:
    factor = lr_factor(schedule, 200, 0.1)
    values = [factor(step) for step in range(200)]
    warm = 60 if schedule == "onecycle" else 20  # one-cycle warms up over at least 30 %
    assert values[0] == pytest.approx(1 / warm)
    assert values[warm - 1] == pytest.approx(1.0)
    assert all(b >= a for a, b in pairwise(values[:warm]))
    tail = values[warm:]
    if schedule == "constant":
        assert set(tail) == {1.0}
    else:
        assert all(b <= a for a, b in pairwise(tail))
        assert tail[-1] == pytest.approx(0.01, abs=0.002)


def test_explicit_steps_and_epochs_win_over_auto() -> None:
    labels = np.zeros((300, 400), dtype=np.uint8)
    regions = [(labels, np.zeros(labels.shape, dtype=bool))]
    auto = resolve_recipe(TrainConfig(), regions)
    assert auto.tile_size == 128 and auto.steps == auto_steps(300 * 400, 128)
    assert resolve_recipe(TrainConfig(steps=7, epochs=3), regions).steps == 7
    assert resolve_recipe(TrainConfig(epochs=3, samples_per_epoch=20, batch_size=8), regions).steps == 9
    assert resolve_recipe(TrainConfig(tile_size=256), regions).tile_size == 256


def test_recipe_keys_parse_and_bad_values_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "train: {tile_size: auto, steps: 300, ema: 0, tta: false, refit: true,\n"
                    "  schedule: onecycle, loss: ce+lovasz, class_weights: balanced, encoder_lr: 0.1,\n"
                    "  augment: {color: 0.1, blur: 0.5, noise: 0.0}}\n")  # fmt: skip
    t = load_config(path).train
    assert (t.tile_size, t.steps, t.ema, t.tta, t.refit) == (None, 300, 0.0, False, True)
    assert (t.schedule, t.loss, t.class_weights, t.encoder_lr) == ("onecycle", "ce+lovasz", "balanced", 0.1)
    assert (t.augment.color, t.augment.blur, t.augment.noise) == (0.1, 0.5, 0.0)
    for bad, key in [
        ("steps: many", "train.steps"),
        ("tile_size: 16", "train.tile_size"),
        ("schedule: step", "train.schedule"),
        ("tta: sometimes", "train.tta"),
        ("warmup: 0.9", "train.warmup"),
    ]:
        path.write_text(MINIMAL + f"train: {{{bad}}}\n")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(path)


def test_moving_average_follows_the_weights_with_a_warm_up() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked.fill_(7)
    before = [p.clone() for p in average.parameters()]
    update_ema(average, model, decay=0.99, step=0)  # the warm-up keeps only 10 % of the old average
    for old, avg, new in zip(before, average.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.1 * old + 0.9 * new)
    torch.testing.assert_close(average[1].running_mean, torch.full((2,), 3.6))
    assert int(average[1].num_batches_tracked) == 7
    update_ema(average, model, decay=0.99, step=10_000)  # later, the decay itself
    torch.testing.assert_close(average[1].running_mean, torch.full((2,), 3.6 * 0.99 + 4.0 * 0.01))
