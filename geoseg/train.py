"""Training: Lightning drives the loop (mixed precision, checkpoints, resume, early stopping, logs)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import segmentation_models_pytorch as smp
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassConfusionMatrix

from geoseg.adaptation import METHOD as ADAPTATION_METHOD
from geoseg.adaptation import energy_term
from geoseg.config import IGNORE_INDEX, ClassSpec, Config, SemiSupervisedConfig, TrainConfig
from geoseg.data.datasets import ImageCollection, LabeledOrtho
from geoseg.data.prepare import TrainingSet, build_training_set, describe, image_bands, load_images
from geoseg.data.preprocess import Normalization
from geoseg.data.sampling import MultiImageSampler, owned_mask
from geoseg.data.targets import TargetSet, build_target_set
from geoseg.data.unlabelled import UnlabelledSet, build_unlabelled_set
from geoseg.device import resolve_device, training_precision
from geoseg.drift.confidence import CONFIDENCE_THRESHOLD, SAMPLE_PIXELS, low_confidence_counts
from geoseg.errors import OutputExistsError
from geoseg.io.raster import atomic_path, ensure_writable
from geoseg.metrics import SegmentationScores, scores_from_confusion
from geoseg.model import remote_sensing
from geoseg.model.build import build_unet
from geoseg.model.bundle import BundleMeta, save_bundle
from geoseg.recipe import lr_factor, resolve_recipe
from geoseg.training import semi_supervised as semi
from geoseg.training.baseline import BaselineResult, fit_baseline
from geoseg.tta import averaged_probabilities


@dataclass
class TrainResult:
    bundle: Path
    model: torch.nn.Module
    scores: SegmentationScores | None
    steps: int
    losses: list[float]


class ValidationWindows(Dataset):
    """Validation windows; pixels outside each window's owned part are ignored (scored once)."""

    def __init__(self, images: list[LabeledOrtho], windows: list[tuple[int, Window, Window]]) -> None:
        self.images = images
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image_index, window, owned = self.windows[i]
        sample = self.images[image_index].read(window)
        keep = torch.from_numpy(owned_mask(window, owned))
        sample["mask"] = torch.where(keep, sample["mask"], IGNORE_INDEX)
        return sample


class SegmentationTask(L.LightningModule):
    """Supervised segmentation, plus the terms that learn from windows without labels.

    With adaptation targets or semi-supervision, batches are ``{"source", "target"?, "unlabelled"?}``:
    ``energy_weight`` adds the energy-based adaptation term on the target windows (geoseg/adaptation.py),
    ``semi`` the teacher's pseudo-labels on the unlabelled windows, and ``neighbourhood_weight`` the
    neighbourhood term on the labelled windows (geoseg/training/semi_supervised.py).

    The recipe's parts (geoseg/recipe.py): a warm-up and decay of the learning rate over ``total_steps``,
    an exponential moving average of the weights (``ema_model``, which validation scores and the bundle
    keeps), channel dropout on the decoder's output, and validation with test-time augmentation.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        n_classes: int,
        recipe: TrainConfig,
        total_steps: int,
        class_weights: torch.Tensor | None = None,
        energy_weight: float | None = None,
        semi_config: SemiSupervisedConfig | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.total_steps = total_steps
        self.energy_weight = energy_weight
        self.energy_gaps: list[float] = []
        self.semi = semi_config if semi_config is not None and semi_config.enabled else None
        self.thresholds = (
            semi.ClassThresholds(n_classes, self.semi.threshold, self.semi.class_balanced) if self.semi else None
        )
        self._generator: torch.Generator | None = None
        self.n_classes = n_classes
        self.ema_model = copy.deepcopy(model).requires_grad_(False) if recipe.ema > 0 else None
        if recipe.decoder_dropout > 0:
            model.segmentation_head.register_forward_pre_hook(_channel_dropout(recipe.decoder_dropout))
        self.ce = torch.nn.CrossEntropyLoss(weight=class_weights, ignore_index=IGNORE_INDEX)
        loss = recipe.loss
        self.extra_loss: torch.nn.Module | None = None
        if "dice" in loss:
            self.extra_loss = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
        if "lovasz" in loss:
            self.extra_loss = smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE_INDEX)
        if "focal" in loss:
            self.extra_loss = smp.losses.FocalLoss("multiclass", ignore_index=IGNORE_INDEX)
        self.use_ce = loss.startswith("ce")
        # torchmetrics accumulates on the model's device and skips ignored pixels itself.
        self.confusion = MulticlassConfusionMatrix(n_classes, ignore_index=IGNORE_INDEX)
        self.history: list[SegmentationScores] = []
        self.history_steps: list[int] = []
        self.losses: list[float] = []
        self.targets: TargetSet | None = None

    @property
    def final_model(self) -> torch.nn.Module:
        """The network the bundle keeps: the weights' moving average when the recipe keeps one."""
        return self.ema_model if self.ema_model is not None else self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != IGNORE_INDEX).any():
            return logits.sum() * 0.0  # an all-ignored batch teaches nothing (and CE would be NaN)
        loss = self.ce(logits, target) if self.use_ce else logits.new_zeros(())
        if self.extra_loss is not None:
            loss = loss + self.extra_loss(logits, target)
        return loss

    def training_step(self, batch: dict, _: int) -> torch.Tensor:
        source = batch.get("source", batch)
        images = source["image"]
        if self.semi is not None:
            # One student pass over the labelled windows and the unlabelled windows' strong views, as
            # FixMatch batches them: on the CPU a third faster than two passes (bench/RESULTS.md).
            pseudo, strong, usable = self._teacher_labels(batch["unlabelled"])
            both = self(torch.cat([images, strong.to(memory_format=torch.channels_last)]))
            logits, strong_logits = both[: len(images)], both[len(images) :]
        else:
            logits = self(images)
        loss = self._loss(logits.float(), source["mask"].long())
        self.losses.append(float(loss.detach()))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        if self.recipe.neighbourhood_weight > 0:
            term = semi.neighbourhood_loss(logits, images)
            loss = loss + self.recipe.neighbourhood_weight * term
            self.log("train/neighbourhood", term, on_step=True, on_epoch=True, batch_size=len(images))
        if self.semi is not None:
            term = semi.pseudo_label_loss(strong_logits, pseudo, usable, self.n_classes, self.semi.class_balanced)
            loss = loss + self.semi.weight * semi.ramp_up(self.global_step, self.total_steps, self.semi.rampup) * term
            self.log("train/pseudo_label_loss", term, on_step=True, on_epoch=True, batch_size=len(strong))
        if self.energy_weight is not None:
            # A separate pass: the target batch never enters the source batch's normalization statistics.
            target = batch["target"]
            term, gap = energy_term(logits, source["mask"], self(target["image"]), target["mask"])
            loss = loss + self.energy_weight * term
            if gap is not None:
                self.energy_gaps.append(float(gap))
                self.log("train/energy_gap", gap, on_step=True, on_epoch=True, batch_size=len(target["image"]))
        return loss

    def _teacher_labels(self, unlabelled: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The teacher's pseudo-labels on the weak view, the strong view, and the usable pixels."""
        assert self.thresholds is not None
        images, usable = unlabelled["image"], unlabelled["mask"] != IGNORE_INDEX
        teacher = self.ema_model if self.ema_model is not None else self.model
        was_training = teacher.training
        teacher.eval()
        with torch.no_grad():
            probs = torch.softmax(teacher(images).float(), dim=1)
        teacher.train(was_training)
        self.thresholds.update(probs, usable)
        pseudo = semi.pseudo_labels(probs, usable, self.thresholds.values())
        if self._generator is None or self._generator.device != images.device:
            self._generator = torch.Generator(device=images.device).manual_seed(self.recipe.seed + 1)
        strong, cut = semi.strong_view(images, self._generator)
        pseudo = torch.where(cut, torch.full_like(pseudo, IGNORE_INDEX), pseudo)
        share = float((pseudo != IGNORE_INDEX).sum()) / max(int(usable.sum()), 1)
        self.log("train/pseudo_label_share", share, on_step=True, on_epoch=True, batch_size=len(images))
        return pseudo, strong, usable

    def on_train_batch_end(self, *_: Any) -> None:
        if self.ema_model is not None:
            update_ema(self.ema_model, self.model, self.recipe.ema, self.global_step)

    def on_validation_epoch_start(self) -> None:
        self.confusion.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        network = self.final_model.eval()
        probs = averaged_probabilities(network, batch["image"], self.recipe.tta)
        target = batch["mask"].long()
        loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-8).log(), target, ignore_index=IGNORE_INDEX)
        self.log("val/loss", loss, batch_size=len(target))
        self.confusion.update(probs.argmax(1), target)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        scores = scores_from_confusion(self.confusion.compute().cpu().numpy())
        self.history.append(scores)
        self.history_steps.append(self.global_step)
        self.log("val/miou", scores.miou if not math.isnan(scores.miou) else 0.0, prog_bar=True)
        for k in range(self.n_classes):
            iou = scores.iou[k]
            self.log(f"val/iou_{k}", 0.0 if math.isnan(iou) else float(iou))
            f1 = scores.f1[k]
            self.log(f"val/f1_{k}", 0.0 if math.isnan(f1) else float(f1))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The validation history (confusion matrices) travels with the checkpoint, so a resumed run's
        # bundle scores and best step cover the validations before the interruption too.
        checkpoint["geoseg_validations"] = {
            "steps": list(self.history_steps),
            "confusions": [s.confusion.tolist() for s in self.history],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("geoseg_validations") or {"steps": [], "confusions": []}
        self.history_steps = [int(step) for step in saved["steps"]]
        self.history = [scores_from_confusion(np.asarray(c, dtype=np.int64)) for c in saved["confusions"]]

    def configure_optimizers(self) -> Any:
        r = self.recipe
        optimizer_class = torch.optim.AdamW if r.optimizer == "adamw" else torch.optim.Adam
        encoder = list(self.model.encoder.parameters())
        in_encoder = {id(p) for p in encoder}
        rest = [p for p in self.model.parameters() if id(p) not in in_encoder]
        groups = [{"params": rest, "lr": r.lr}]
        if r.encoder_lr > 0:
            groups.append({"params": encoder, "lr": r.lr * r.encoder_lr})
        else:
            for p in encoder:
                p.requires_grad_(False)
        optimizer = optimizer_class(groups, lr=r.lr, weight_decay=r.weight_decay)
        factor = lr_factor(r.schedule, self.total_steps, r.warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _channel_dropout(p: float) -> Callable[[torch.nn.Module, tuple], tuple]:
    """A pre-hook dropping whole decoder channels in training; the saved network stays a plain smp U-Net."""

    def hook(module: torch.nn.Module, args: tuple) -> tuple:
        return (torch.nn.functional.dropout2d(args[0], p, training=module.training), *args[1:])

    return hook


@torch.no_grad()
def update_ema(average: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """One step of the weights' exponential moving average.

    The decay ramps up as (1 + step) / (10 + step) so early averages are not dominated by the random head.
    Floating-point buffers (BatchNorm statistics) are averaged alike, integer ones copied.
    """
    d = min(decay, (1 + step) / (10 + step))
    for avg, new in zip(average.parameters(), model.parameters(), strict=True):
        avg.lerp_(new.detach(), 1 - d)
    for avg, new in zip(average.buffers(), model.buffers(), strict=True):
        if avg.is_floating_point():
            avg.lerp_(new, 1 - d)
        else:
            avg.copy_(new)


class StepProgress(Callback):
    """Reports optimizer steps as (done, total), e.g. to `--progress json` for the QGIS plugin."""

    def __init__(self, report: Callable[[int, int], None], total: int) -> None:
        self.report = report
        self.total = total

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        self.report(trainer.global_step, self.total)


class ClassTablePrinter(Callback):
    """A per-class IoU/F1 table after every validation, readable in a terminal or a log file."""

    def __init__(self, classes: list[ClassSpec], emit: Any) -> None:
        self.classes = classes
        self.emit = emit

    def on_validation_end(self, trainer: L.Trainer, module: SegmentationTask) -> None:
        if trainer.sanity_checking or not module.history:
            return
        self.emit(
            f"epoch {trainer.current_epoch} · step {trainer.global_step}\n"
            + module.history[-1].table([c.name for c in self.classes])
        )


@dataclass
class _Fit:
    """One run of the training loop: the task (weights, history), its data and the best checkpoint's step."""

    task: SegmentationTask
    ts: TrainingSet
    steps: int
    epochs: int
    best_step: int | None


def train(
    cfg: Config,
    out: Path,
    max_steps: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    resume: bool = False,
    emit: Any = print,
    progress_bar: bool = True,
    callbacks: list[Callback] | None = None,
    step_progress: Callable[[int, int], None] | None = None,
    refit_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a U-Net as ``cfg`` says and write the bundle to ``out`` (checkpoints beside it).

    ``max_steps`` caps the recipe's step budget; the learning-rate schedule then runs over the capped count.
    """
    work = out.with_name(out.name + ".train")
    _check_outputs(out, work, overwrite, resume)
    accelerator = resolve_device(device)
    images = load_images(cfg)
    cfg = replace(cfg, train=resolve_recipe(cfg.train, [(im.labels, im.validation) for im in images]))
    t = cfg.train
    assert t.steps is not None and t.tile_size is not None
    total = min(t.steps, max_steps) if max_steps is not None else t.steps
    emit(f"recipe: {t.tile_size}px windows, batch {t.batch_size}, {total} steps, lr {t.lr:g} ({t.schedule}), "
         f"loss {t.loss}, EMA {t.ema:g}, TTA {'on' if t.tta else 'off'}")  # fmt: skip
    if work.exists() and not resume:
        shutil.rmtree(work)
    _quiet_lightning()
    common = {"accelerator": accelerator, "total": total, "emit": emit, "progress_bar": progress_bar,
              "callbacks": callbacks, "step_progress": step_progress}  # fmt: skip
    fit = _fit(cfg, images, work, resume=resume, stop_at=None, **common)
    validated = fit
    refit_steps = _refit_steps(t, fit)
    if refit_steps is not None:
        which = "as many as the first run" if t.keep == "final" else "the best validation step"
        emit(f"refit: training again on the training and validation regions for {refit_steps} of {total} steps "
             f"({which})")  # fmt: skip
        everything = [replace(im, validation=np.zeros_like(im.validation)) for im in images]
        common["step_progress"] = refit_progress
        fit = _fit(cfg, everything, work / "refit", resume=resume, stop_at=refit_steps, **common)
    task, ts = fit.task, fit.ts
    scores = _kept_scores(validated.task, t.keep)
    names, ids = [c.name for c in cfg.data.classes], [c.id for c in cfg.data.classes]
    baseline = fit_baseline(validated.ts, len(names), t.seed) if t.baseline else None
    if scores is not None and baseline is not None:
        emit(compare_with_baseline(scores, baseline, names))
    final = task.final_model
    meta = BundleMeta(
        classes=cfg.data.classes,
        bands=ts.bands,
        normalization=ts.normalization,
        tile_size=t.tile_size,
        overlap=max(16, t.tile_size // 8),
        resolution=float(ts.images[0].info.grid.res[0]),
        train_stats={
            "bands": [s.to_json() for s in ts.stats],
            "dtype": ts.images[0].info.dtype,
            "low_confidence": _training_low_confidence(final, ts, t.tile_size),
        },
        metrics=_metrics_record(scores, baseline, names, ids),
        extra={
            "training": {
                "encoder": cfg.model.encoder,
                "weights": cfg.model.weights,
                "steps": fit.steps,
                "epochs": fit.epochs,
                "config": str(cfg.path),
            },
            "recipe": _recipe_record(t, total, validated.best_step, refit=fit is not validated),
            **_adaptation_record(cfg, task),
        },
    )
    final.cpu().eval().to(memory_format=torch.contiguous_format)
    bundle = save_bundle(final, meta, out, overwrite=overwrite or resume)
    return TrainResult(bundle=bundle, model=final, scores=scores, steps=fit.steps, losses=task.losses)


def _fit(
    cfg: Config,
    images: list,
    work: Path,
    accelerator: str,
    total: int,
    resume: bool,
    stop_at: int | None,
    emit: Any,
    progress_bar: bool,
    callbacks: list[Callback] | None,
    step_progress: Callable[[int, int], None] | None,
) -> _Fit:
    """Train for ``total`` steps of schedule (stopping at ``stop_at`` if given), keeping the best validation state."""
    t = cfg.train
    weights = cfg.model.weights
    n_bands = len(image_bands(cfg, images))
    model = build_unet(cfg.model.encoder, n_bands, len(cfg.data.classes), weights)
    if accelerator == "cpu":  # 1.25× faster fp32 training steps on the CPU (bench/RESULTS.md, training speed)
        model.to(memory_format=torch.channels_last)
    fixed = weights_normalization(weights, n_bands)
    ts = build_training_set(cfg, images, pretrained=weights is not None, normalization=fixed)
    emit(describe(ts))
    targets = (
        build_target_set(cfg, ts.bands, ts.normalization, ts.images[0].info.dtype) if cfg.adaptation.enabled else None
    )
    if targets is not None:
        emit(f"adapting to {len(targets.paths)} unlabeled target mosaic(s), energy term weight {cfg.adaptation.weight}")
    ssl = t.semi_supervised
    unlabelled = build_unlabelled_set(cfg, images, ts.bands, ts.normalization) if ssl.enabled else None
    unlabelled_batch = (ssl.batch_size or max(1, t.batch_size // 4)) if unlabelled is not None else 0
    if ssl.enabled and unlabelled is None:
        emit(f"semi-supervised: off, no {t.tile_size}px window holds an unlabelled pixel outside the validation "
             "region (the labels are dense); list other mosaics under data.unlabelled to use it")  # fmt: skip
    if unlabelled is not None:
        emit(f"semi-supervised: {unlabelled.pixels:,} unlabelled px in {len(unlabelled.images)} mosaic(s), "
             f"{unlabelled_batch} window(s) a step, threshold {ssl.threshold:g}"
             f"{' per class' if ssl.class_balanced else ''}, weight {ssl.weight:g} ramped over {ssl.rampup:.0%} of the "
             "steps")  # fmt: skip
    L.seed_everything(t.seed, workers=True, verbose=False)
    steps = stop_at or total
    steps_per_epoch = min(math.ceil(t.samples_per_epoch / t.batch_size), steps)
    ts.train_sampler.length = steps_per_epoch * t.batch_size
    if targets is not None:
        targets.sampler.length = steps_per_epoch * t.batch_size
    if unlabelled is not None:
        unlabelled.sampler.length = steps_per_epoch * unlabelled_batch
    weights_per_class = class_weights(ts, len(cfg.data.classes)) if t.class_weights == "balanced" else None
    task = SegmentationTask(model, len(cfg.data.classes), t, total, weights_per_class,
                            energy_weight=cfg.adaptation.weight if targets is not None else None,
                            semi_config=ssl if unlabelled is not None else None)  # fmt: skip
    checkpoint = ModelCheckpoint(
        dirpath=work / "checkpoints", filename="best", monitor="val/miou", mode="max", enable_version_counter=False
    )
    # Lightning's save_last only copies a new best, so --resume would rewind to it; this one follows every epoch.
    last_epoch = ModelCheckpoint(dirpath=work / "checkpoints", filename="last", enable_version_counter=False)
    all_callbacks = [checkpoint, last_epoch, ClassTablePrinter(cfg.data.classes, emit), *(callbacks or [])]
    if step_progress is not None:
        all_callbacks.append(StepProgress(step_progress, steps))
    if t.early_stopping_patience and ts.val_windows:
        all_callbacks.append(
            EarlyStopping(
                monitor="val/miou",
                mode="max",
                patience=t.early_stopping_patience,
                strict=False,
                check_on_train_epoch_end=False,
            )
        )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=training_precision(accelerator),
        max_epochs=-1,  # max_steps ends the run (a resumed run must be free to go past its last epoch count)
        max_steps=steps,
        limit_val_batches=None if ts.val_windows else 0,
        num_sanity_val_steps=0,
        callbacks=all_callbacks,
        logger=CSVLogger(str(work), name="logs", version=""),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=False,
    )
    loaders = _loaders(ts, targets, unlabelled, t.batch_size, unlabelled_batch, t.num_workers)
    ckpt_path = work / "checkpoints" / "last.ckpt"
    resuming = resume and ckpt_path.exists()
    earlier_log = _set_aside_log(work) if resuming else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*srun.*")
        if not ts.val_windows:  # the refit, or validation.fraction 0: nothing to monitor, by design
            warnings.filterwarnings("ignore", ".*could not find the monitored key.*")
            warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")
        try:
            trainer.fit(task, *loaders, ckpt_path=str(ckpt_path) if resuming else None)
            if loaders[1] is not None and (not task.history_steps or task.history_steps[-1] != trainer.global_step):
                # the run ended between validations: score the final weights too, so "final" has its scores
                trainer.validate(task, dataloaders=loaders[1], verbose=False)
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Lightning turns Ctrl-C into sys.exit(1); it is an interruption, with a way to go on
            hint = ("rerun the same command with --resume to continue from the last epoch" if ckpt_path.exists()
                    else "no epoch finished, so start again")  # fmt: skip
            raise TrainingInterrupted(hint) from None
        finally:
            if earlier_log is not None:
                _join_logs(earlier_log, work / "logs" / "metrics.csv")
    best = _best_state(checkpoint) if t.keep == "best" else None
    if best is not None:
        task.load_state_dict(best)
    best_step = task.history_steps[_best_index(task)] if task.history else None
    task.targets = targets  # for the bundle's adaptation record
    return _Fit(task, ts, trainer.global_step, trainer.current_epoch, best_step)


def compare_with_baseline(scores: SegmentationScores, baseline: BaselineResult, names: list[str]) -> str:
    """The summary's side-by-side lines: both validation mIoUs, IoU per class, and a warning when the U-Net
    is not ahead."""
    sample = (f"{baseline.train_pixels:,} of {baseline.labelled_pixels:,} training px, subsampled"
              if baseline.subsampled else f"{baseline.train_pixels:,} training px")  # fmt: skip
    lines = [f"validation mIoU: U-Net {scores.miou:.3f}, pixel classifier {baseline.scores.miou:.3f} "
             f"(gradient boosting on bands + texture, {sample}, {baseline.seconds:.1f} s)"]  # fmt: skip
    width = max(len(n) for n in names)
    for k, name in enumerate(names):
        if scores.support[k] or baseline.scores.predicted[k]:
            lines.append(f"  {name:<{width}}  IoU U-Net {_fmt(scores.iou[k])}, pixel classifier "
                         f"{_fmt(baseline.scores.iou[k])}")  # fmt: skip
    if not np.nan_to_num(scores.miou, nan=-1.0) > np.nan_to_num(baseline.scores.miou, nan=-1.0):
        lines.append("warning: the U-Net is not ahead of a pixel classifier on the validation region; label more "
                     "area, or train longer")  # fmt: skip
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _metrics_record(
    scores: SegmentationScores | None, baseline: BaselineResult | None, names: list[str], ids: list[int]
) -> dict | None:
    """The bundle's ``metrics``: the kept weights' validation scores, and the pixel classifier's beside them."""
    if scores is None:
        return None
    record = scores.to_json(names, ids)
    if baseline is not None:
        record["baseline"] = baseline.to_json(names, ids)
    return record


def _set_aside_log(work: Path) -> Path | None:
    """Lightning's CSV logger deletes an existing metrics.csv; keep it aside to join after the resumed run."""
    log = work / "logs" / "metrics.csv"
    if not log.exists():
        return None
    aside = log.with_name("metrics.before-resume.csv")
    if aside.exists():  # an earlier resume was interrupted before joining: that file already holds the start
        _join_logs(aside, log)
    log.replace(aside)
    return aside


def _join_logs(earlier: Path, log: Path) -> None:
    """metrics.csv = the earlier rows up to where the resumed run took over, then the resumed run's rows."""
    with earlier.open(newline="") as f:
        old_rows = list(csv.DictReader(f))
    new_rows: list[dict[str, str]] = []
    if log.exists():
        with log.open(newline="") as f:
            new_rows = list(csv.DictReader(f))
    first_new = min((int(r["step"]) for r in new_rows if r.get("step")), default=None)
    kept = [r for r in old_rows if first_new is None or int(r.get("step") or 0) < first_new]
    fields = sorted({key for row in kept + new_rows for key in row})
    with atomic_path(log) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept + new_rows)
    earlier.unlink()


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; the message says how to go on."""


def weights_normalization(weights: str | None, n_bands: int) -> Normalization | None:
    """Remote-sensing weights come with the input normalization they were trained with; others leave it to geoseg."""
    if not remote_sensing.is_torchgeo(weights):
        return None
    return Normalization.from_json(remote_sensing.describe(weights).normalization_json(n_bands), n_bands)


def _refit_steps(t: TrainConfig, fit: _Fit) -> int | None:
    """How long the refit trains: as long as the run whose weights ``keep`` chose, or None for no refit.

    With ``keep: final`` the refit repeats the first run's length and schedule, so the validation strip only
    measures and the kept model has seen every label; with ``keep: best`` it stops at the best validation step.
    """
    if not t.refit or fit.best_step is None:  # no refit asked, or nothing was held out (validation fraction 0)
        return None
    return max(1, fit.steps if t.keep == "final" else fit.best_step)


def _kept_scores(task: SegmentationTask, keep: str) -> SegmentationScores | None:
    """The validation scores of the weights the bundle keeps: the best validation's, or the last one's."""
    if not task.history:
        return None
    return task.history[-1 if keep == "final" else _best_index(task)]


def _best_index(task: SegmentationTask) -> int:
    """The validation with the best mIoU (the earliest on ties; NaN counts as worst)."""
    return max(range(len(task.history)), key=lambda i: np.nan_to_num(task.history[i].miou, nan=-1.0))


def class_weights(ts: TrainingSet, n_classes: int) -> torch.Tensor:
    """Cross-entropy weights 1/sqrt(class frequency) over the training labels, scaled to a pixel-weighted mean of 1."""
    counts = np.zeros(n_classes, dtype=np.float64)
    for im in ts.images:
        train_labels = im.labels[(im.labels != IGNORE_INDEX) & ~im.validation]
        counts += np.bincount(train_labels, minlength=n_classes)[:n_classes]
    freq = counts / max(counts.sum(), 1)
    weights = np.where(counts > 0, 1 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
    weights /= max((weights * freq).sum(), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


def _recipe_record(t: TrainConfig, total: int, best_step: int | None, refit: bool) -> dict:
    """The bundle's ``recipe`` key: how the weights were made, and the inference default (``tta``)."""
    return {
        "tile_size": t.tile_size,
        "batch_size": t.batch_size,
        "steps": total,
        "best_step": best_step,
        "refit": refit,
        "keep": t.keep,
        "lr": t.lr,
        "schedule": t.schedule,
        "warmup": t.warmup,
        "optimizer": t.optimizer,
        "weight_decay": t.weight_decay,
        "encoder_lr": t.encoder_lr,
        "loss": t.loss,
        "class_weights": t.class_weights,
        "ema": t.ema,
        "decoder_dropout": t.decoder_dropout,
        "augment": dataclasses.asdict(t.augment),
        "tta": t.tta,
        "semi_supervised": dataclasses.asdict(t.semi_supervised),
        "neighbourhood_weight": t.neighbourhood_weight,
    }


def _check_outputs(out: Path, work: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a bundle or an interrupted run's checkpoints unless told to."""
    if not resume:
        ensure_writable(out, overwrite, folder=True)
        if work.exists() and not overwrite:
            raise OutputExistsError(
                "holds an earlier training's checkpoints; pass --resume to continue it or --overwrite to start over",
                work,
            )
    elif not (work / "checkpoints" / "last.ckpt").exists():
        raise OutputExistsError("has no checkpoint to resume from (checkpoints/last.ckpt); drop --resume", work)


def _quiet_lightning() -> None:
    """Lightning's start-up chatter (TPU lines, tips) hides what matters; keep warnings and errors."""
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # Expected when resuming into the same folders; Lightning keeps and appends to them.
    warnings.filterwarnings("ignore", ".*(Experiment logs|Checkpoint) directory .* exists and is not empty.*")


def _loaders(
    ts: TrainingSet,
    targets: TargetSet | None,
    unlabelled: UnlabelledSet | None,
    batch_size: int,
    unlabelled_batch: int,
    workers: int,
) -> tuple[DataLoader | dict[str, DataLoader], DataLoader | None]:
    """The training loader and validation's. With targets or unlabelled windows the training loader is
    ``{"source", "target"?, "unlabelled"?}``, loaders of equally many batches."""

    def windows(images: list[LabeledOrtho], sampler: MultiImageSampler, size: int = batch_size) -> DataLoader:
        return DataLoader(
            ImageCollection(images),
            batch_size=size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    source = windows(ts.train_images, ts.train_sampler)
    streams = {"source": source}
    if targets is not None:
        streams["target"] = windows(targets.images, targets.sampler)
    if unlabelled is not None:
        streams["unlabelled"] = windows(unlabelled.images, unlabelled.sampler, unlabelled_batch)
    train_loader = source if len(streams) == 1 else streams
    val_loader = (
        DataLoader(ValidationWindows(ts.val_images, ts.val_windows), batch_size=batch_size, num_workers=workers)
        if ts.val_windows
        else None
    )
    return train_loader, val_loader


def _training_low_confidence(model: torch.nn.Module, ts: TrainingSet, tile: int) -> dict:
    """The share of low-confidence pixels on the training imagery: what `geoseg drift` compares a mosaic's with."""
    model.eval()
    budget = SAMPLE_PIXELS // len(ts.images)
    low = total = windows = 0
    for image in ts.images:
        counts = low_confidence_counts(model, image.info.path, ts.bands, ts.normalization, tile, max_pixels=budget)
        low, total, windows = low + counts[0], total + counts[1], windows + counts[2]
    return {"share": low / max(total, 1), "threshold": CONFIDENCE_THRESHOLD, "pixels": total, "windows": windows}


def _adaptation_record(cfg: Config, task: SegmentationTask) -> dict:
    """The bundle's ``adaptation`` key: that the model was adapted, to what, and how."""
    targets: TargetSet | None = task.targets
    if targets is None:
        return {}
    gaps = task.energy_gaps[-20:]
    return {
        "adaptation": {
            "method": ADAPTATION_METHOD,
            "targets": [str(p.resolve()) for p in targets.paths],
            "weight": cfg.adaptation.weight,
            "final_energy_gap": sum(gaps) / len(gaps) if gaps else None,  # mean of the last 20 steps
        }
    }


def _best_state(checkpoint: ModelCheckpoint) -> dict[str, torch.Tensor] | None:
    """The best validation checkpoint's weights (our own file, written by this run)."""
    path = checkpoint.best_model_path
    if not path or not Path(path).exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("state_dict")
