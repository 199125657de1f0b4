"""Training: Lightning drives the loop (mixed precision, checkpoints, resume, early stopping, logs)."""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import segmentation_models_pytorch as smp
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassConfusionMatrix

from geoseg.adaptation import METHOD as ADAPTATION_METHOD
from geoseg.adaptation import energy_term
from geoseg.config import IGNORE_INDEX, ClassSpec, Config
from geoseg.data.datasets import ImageCollection, LabeledOrtho, PixelWindow
from geoseg.data.prepare import TrainingSet, build_training_set, describe, image_bands, load_images
from geoseg.data.sampling import MultiImageSampler
from geoseg.data.targets import TargetSet, build_target_set
from geoseg.device import resolve_device, training_precision
from geoseg.drift.confidence import CONFIDENCE_THRESHOLD, SAMPLE_PIXELS, low_confidence_counts
from geoseg.errors import OutputExistsError
from geoseg.io.raster import ensure_writable
from geoseg.metrics import SegmentationScores, scores_from_confusion
from geoseg.model.build import build_unet
from geoseg.model.bundle import BundleMeta, save_bundle


@dataclass
class TrainResult:
    bundle: Path
    model: torch.nn.Module
    scores: SegmentationScores | None
    steps: int
    losses: list[float]


class ValidationWindows(Dataset):
    """Validation windows; pixels outside each window's owned part are ignored (scored once)."""

    def __init__(self, images: list[LabeledOrtho], windows: list[tuple[int, PixelWindow, PixelWindow]]) -> None:
        self.images = images
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image_index, window, owned = self.windows[i]
        sample = self.images[image_index].read(window)
        keep = torch.zeros_like(sample["mask"], dtype=torch.bool)
        keep[owned.row - window.row :, owned.col - window.col :] = True
        sample["mask"] = torch.where(keep, sample["mask"], IGNORE_INDEX)
        return sample


class SegmentationTask(L.LightningModule):
    """Supervised segmentation; with ``energy_weight`` set, batches are ``{"source", "target"}`` and the
    energy-based adaptation term on the unlabeled target windows joins the loss (see geoseg/adaptation.py)."""

    def __init__(
        self,
        model: torch.nn.Module,
        n_classes: int,
        loss: str,
        lr: float,
        optimizer: str,
        weight_decay: float,
        energy_weight: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.energy_weight = energy_weight
        self.energy_gaps: list[float] = []
        self.n_classes = n_classes
        self.lr, self.optimizer_name, self.weight_decay = lr, optimizer, weight_decay
        self.ce = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        self.extra_loss: torch.nn.Module | None = None
        if "dice" in loss:
            self.extra_loss = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
        if "focal" in loss:
            self.extra_loss = smp.losses.FocalLoss("multiclass", ignore_index=IGNORE_INDEX)
        self.use_ce = loss != "focal"
        # torchmetrics accumulates on the model's device and skips ignored pixels itself.
        self.confusion = MulticlassConfusionMatrix(n_classes, ignore_index=IGNORE_INDEX)
        self.history: list[SegmentationScores] = []
        self.losses: list[float] = []

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
        source = batch["source"] if self.energy_weight is not None else batch
        logits = self(source["image"])
        loss = self._loss(logits.float(), source["mask"].long())
        self.losses.append(float(loss.detach()))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(source["image"]))
        if self.energy_weight is not None:
            # A separate pass: the target batch never enters the source batch's normalization statistics.
            target = batch["target"]
            term, gap = energy_term(logits, source["mask"], self(target["image"]), target["mask"])
            loss = loss + self.energy_weight * term
            if gap is not None:
                self.energy_gaps.append(float(gap))
                self.log("train/energy_gap", gap, on_step=True, on_epoch=True, batch_size=len(target["image"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.confusion.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        logits = self(batch["image"])
        target = batch["mask"].long()
        self.log("val/loss", self._loss(logits.float(), target), batch_size=len(target))
        self.confusion.update(logits.argmax(1), target)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        scores = scores_from_confusion(self.confusion.compute().cpu().numpy())
        self.history.append(scores)
        self.log("val/miou", scores.miou if not math.isnan(scores.miou) else 0.0, prog_bar=True)
        for k in range(self.n_classes):
            iou = scores.iou[k]
            self.log(f"val/iou_{k}", 0.0 if math.isnan(iou) else float(iou))
            f1 = scores.f1[k]
            self.log(f"val/f1_{k}", 0.0 if math.isnan(f1) else float(f1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        return optimizer(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


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
) -> TrainResult:
    """Train a U-Net as ``cfg`` says and write the bundle to ``out`` (checkpoints beside it)."""
    work = out.with_name(out.name + ".train")
    _check_outputs(out, work, overwrite, resume)
    accelerator = resolve_device(device)
    weights = cfg.model.weights
    images = load_images(cfg)
    model = build_unet(cfg.model.encoder, len(image_bands(cfg, images)), len(cfg.data.classes), weights)
    ts = build_training_set(cfg, images, pretrained=weights is not None)
    emit(describe(ts))
    targets = (
        build_target_set(cfg, ts.bands, ts.normalization, ts.images[0].info.dtype) if cfg.adaptation.enabled else None
    )
    if targets is not None:
        emit(f"adapting to {len(targets.paths)} unlabeled target mosaic(s), energy term weight {cfg.adaptation.weight}")
    t = cfg.train
    _quiet_lightning()
    L.seed_everything(t.seed, workers=True, verbose=False)
    steps_per_epoch = math.ceil(t.samples_per_epoch / t.batch_size)
    if max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, max_steps)
    ts.train_sampler.length = steps_per_epoch * t.batch_size
    if targets is not None:
        targets.sampler.length = steps_per_epoch * t.batch_size
    if work.exists() and not resume:
        shutil.rmtree(work)
    task = SegmentationTask(model, len(cfg.data.classes), t.loss, t.lr, t.optimizer, t.weight_decay,
                            energy_weight=cfg.adaptation.weight if targets is not None else None)  # fmt: skip
    checkpoint = ModelCheckpoint(
        dirpath=work / "checkpoints",
        filename="best",
        monitor="val/miou",
        mode="max",
        save_last=True,
        enable_version_counter=False,
    )
    callbacks = [checkpoint, ClassTablePrinter(cfg.data.classes, emit), *(callbacks or [])]
    if step_progress is not None:
        callbacks.append(StepProgress(step_progress, max_steps or t.epochs * steps_per_epoch))
    if t.early_stopping_patience and ts.val_windows:
        callbacks.append(
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
        max_epochs=t.epochs,
        max_steps=max_steps if max_steps is not None else -1,
        limit_val_batches=None if ts.val_windows else 0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=CSVLogger(str(work), name="logs", version=""),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=False,
    )
    loaders = _loaders(ts, targets, t.batch_size, t.num_workers)
    ckpt_path = work / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*srun.*")
        trainer.fit(task, *loaders, ckpt_path=str(ckpt_path) if resume and ckpt_path.exists() else None)
    best = _best_state(checkpoint)
    if best is not None:
        task.load_state_dict(best)
    scores = max(task.history, key=lambda s: np.nan_to_num(s.miou, nan=-1.0)) if task.history else None
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
            "low_confidence": _training_low_confidence(task.model, ts, t.tile_size),
        },
        metrics=scores.to_json([c.name for c in cfg.data.classes], [c.id for c in cfg.data.classes])
        if scores
        else None,
        extra={
            "training": {
                "encoder": cfg.model.encoder,
                "weights": weights,
                "steps": trainer.global_step,
                "epochs": trainer.current_epoch,
                "config": str(cfg.path),
            },
            **_adaptation_record(cfg, targets, task),
        },
    )
    task.model.cpu().eval()
    bundle = save_bundle(task.model, meta, out, overwrite=overwrite or resume)
    return TrainResult(bundle=bundle, model=task.model, scores=scores, steps=trainer.global_step, losses=task.losses)


def _check_outputs(out: Path, work: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a bundle or an interrupted run's checkpoints unless told to."""
    if not resume:
        ensure_writable(out, overwrite)
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
    ts: TrainingSet, targets: TargetSet | None, batch_size: int, workers: int
) -> tuple[DataLoader | dict[str, DataLoader], DataLoader | None]:
    """The training loader (with targets, ``{"source", "target"}`` loaders of equal length) and validation's."""

    def windows(images: list[LabeledOrtho], sampler: MultiImageSampler) -> DataLoader:
        return DataLoader(
            ImageCollection(images),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    source = windows(ts.train_images, ts.train_sampler)
    train_loader = source if targets is None else {"source": source, "target": windows(targets.images, targets.sampler)}
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


def _adaptation_record(cfg: Config, targets: TargetSet | None, task: SegmentationTask) -> dict:
    """The bundle's ``adaptation`` key: that the model was adapted, to what, and how."""
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
