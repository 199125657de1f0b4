"""Resuming an interrupted training, and the quality-mask command, on real files."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from safetensors.torch import load_file

from geoseg.config import load_config
from geoseg.demo_data import make_survey
from geoseg.errors import OutputExistsError
from geoseg.train import TrainingInterrupted, train
from tests.conftest import write_config


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory):
    return make_survey(tmp_path_factory.mktemp("survey"), size=384, seed=3)


def _survey_config(tmp_path: Path, survey, lite0_weights: Path, train_keys: str) -> Path:
    """The survey's training config: 128 px windows, batch 2, 2-step epochs, and ``train_keys``."""
    return write_config(
        tmp_path / "train.yaml",
        f"""
data: {{images: [{survey.image}], labels: {survey.labels}, classes: {{1: soil, 2: crust, 3: lichen, 4: moss}}}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 128, batch_size: 2, samples_per_epoch: 4, {train_keys}}}
""",
    )


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tmp_path: Path, survey, lite0_weights: Path) -> None:
    config = _survey_config(tmp_path, survey, lite0_weights, "epochs: 10, refit: false")
    cfg = load_config(config)
    out = tmp_path / "bundle"
    with pytest.raises(OutputExistsError, match="no checkpoint to resume"):
        train(cfg, out, max_steps=2, resume=True, emit=lambda _: None, progress_bar=False)
    first = train(cfg, out, max_steps=2, emit=lambda _: None, progress_bar=False)
    assert first.steps == 2
    # An interruption before the bundle is exported leaves only the checkpoints behind.
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, out, max_steps=4, emit=lambda _: None, progress_bar=False)
    resumed = train(cfg, out, max_steps=4, resume=True, emit=lambda _: None, progress_bar=False)
    assert resumed.steps == 4
    assert len(resumed.losses) == 2  # only the two missing steps ran
    assert (out / "geoseg.json").is_file()
    # the log keeps the first run's rows, and the bundle's scores and best step weigh both runs' validations
    with (tmp_path / "bundle.train" / "logs" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    train_steps = sorted(int(r["step"]) for r in rows if r.get("train/loss_step"))
    assert len(train_steps) == 4 and train_steps[:2] == [0, 1], train_steps  # Lightning numbers resumed rows from 3
    assert len([r for r in rows if r.get("val/miou")]) == 2
    recorded = json.loads((out / "geoseg.json").read_text())
    assert recorded["metrics"] is not None and recorded["recipe"]["best_step"] in (2, 4)


class _InterruptRefitOnce(Callback):
    """Ctrl-C at the refit's third step (the refit is the second fit), the first time only."""

    def __init__(self) -> None:
        self.fits = 0
        self.fired = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fits += 1

    def on_train_batch_start(self, trainer: Trainer, *_: object) -> None:
        if self.fits == 2 and trainer.global_step == 3 and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupted_refit_resumes_from_its_last_epoch(tmp_path: Path, survey, lite0_weights: Path) -> None:
    config = _survey_config(tmp_path, survey, lite0_weights, "steps: 4, refit: true")
    cfg = load_config(config)
    out = tmp_path / "bundle"
    interrupt = _InterruptRefitOnce()
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(TrainingInterrupted, match="--resume"):
            train(cfg, out, emit=lambda _: None, progress_bar=False, callbacks=[interrupt])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert interrupt.fired and not (out / "geoseg.json").exists()
    resumed = train(cfg, out, resume=True, emit=lambda _: None, progress_bar=False)
    # The first run had finished, so only the refit's missing epoch ran: steps 3 and 4 of 4.
    assert resumed.steps == 4 and len(resumed.losses) == 2
    recipe = json.loads((out / "geoseg.json").read_text())["recipe"]
    assert recipe["refit"] is True and resumed.scores is not None


class _WorseningValidation(Callback):
    """After the first epoch, every validation pixel counts as wrongly labelled class 0 (mIoU 0): the first
    epoch is the best. Callbacks see the epoch's confusion matrix before the task turns it into scores."""

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > 0:
            confusion = torch.zeros_like(pl_module.confusion.confmat)
            confusion[1:, 0] = 1
            pl_module.confusion.confmat = confusion


def _ema_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("ema_model."): v for k, v in state.items() if k.startswith("ema_model.")}


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["best", "final"])
def test_keep_chooses_the_bundle_weights_and_resume_starts_from_the_last_epoch(
    tmp_path: Path, survey, lite0_weights: Path, keep: str
) -> None:
    """``train.keep`` says which weights the bundle holds; whatever it says, last.ckpt (what --resume reads)
    is the last epoch, not the best validation's earlier one."""
    config = _survey_config(tmp_path, survey, lite0_weights, f"epochs: 3, refit: false, keep: {keep}")
    out = tmp_path / "bundle"
    train(load_config(config), out, emit=lambda _: None, progress_bar=False, callbacks=[_WorseningValidation()])
    checkpoints = tmp_path / "bundle.train" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 6
    assert torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=False)["global_step"] == 2
    saved = load_file(out / "model.safetensors")
    kept = _ema_weights(checkpoints / ("best.ckpt" if keep == "best" else "last.ckpt"))
    other = _ema_weights(checkpoints / ("last.ckpt" if keep == "best" else "best.ckpt"))
    name = next(k for k, v in saved.items() if v.is_floating_point() and k in kept)
    assert torch.equal(saved[name], kept[name]) and not torch.equal(saved[name], other[name])
    recorded = json.loads((out / "geoseg.json").read_text())
    assert recorded["recipe"]["keep"] == keep
    # the bundle's scores are those of the weights it keeps (later validations were forced to mIoU 0)
    assert (recorded["metrics"]["miou"] == 0) == (keep == "final")


@pytest.mark.slow
def test_a_run_that_ends_between_validations_validates_its_final_weights(
    tmp_path: Path, survey, lite0_weights: Path
) -> None:
    """5 steps of 2-step epochs: validations at steps 2 and 4 and, as the run ends, at step 5, so the final
    weights the bundle keeps have their own scores."""
    config = _survey_config(tmp_path, survey, lite0_weights, "epochs: 3, refit: false")
    result = train(load_config(config), tmp_path / "bundle", max_steps=5, emit=lambda _: None, progress_bar=False)
    assert result.steps == 5
    with (tmp_path / "bundle.train" / "logs" / "metrics.csv").open() as f:
        validated = [int(r["step"]) for r in csv.DictReader(f) if r.get("val/miou")]
    assert validated[-1] >= 4 and len(validated) == 3, validated
    recorded = json.loads((tmp_path / "bundle" / "geoseg.json").read_text())
    assert recorded["recipe"]["keep"] == "final" and recorded["metrics"] is not None


def test_quality_mask_command_flags_glare_and_keeps_the_grid(tmp_path: Path, survey) -> None:
    out = tmp_path / "quality.tif"
    run = subprocess.run(
        [sys.executable, "-m", "geoseg", "quality-mask", str(survey.image), "--out", str(out), "--progress", "none"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "overexposed" in run.stdout
    with rasterio.open(out) as mask, rasterio.open(survey.image) as image:
        assert (mask.crs, mask.transform, mask.shape) == (image.crs, image.transform, image.shape)
        codes = mask.read(1)
        nodata = image.dataset_mask() == 0
    r0, r1, c0, c1 = survey.overexposed_box
    assert (codes[r0:r1, c0:c1] == 1).all()
    assert (codes[nodata] == 255).all()
    assert np.isin(np.unique(codes), [0, 1, 2, 3, 255]).all()
    assert (codes[~nodata] == 0).mean() > 0.5
