"""GPU training throughput: images/s of training steps with mixed precision, and the share of step
time spent waiting for data. Run on a CUDA machine:

    python bench/gpu_train.py --size 4096 --steps 150 --batch 16 --workers 8

Generates a biocrust survey (geoseg.demo_data), trains a resnet34 U-Net from scratch (no download)
through `geoseg.train.train`, and times every step with CUDA synchronisation. The first
``--warmup`` steps (cuDNN autotuning, worker start-up) are left out of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from geoseg.config import load_config
from geoseg.demo_data import CLASSES, make_survey
from geoseg.device import training_precision
from geoseg.train import train


class StepTimer(L.Callback):
    """Wall time per step, split into waiting for the batch and computing on it."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.computes: list[float] = []
        self._end: float | None = None
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._end is not None:
            self.waits.append(now - self._end)
        self._start = now

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.computes.append(now - self._start)
        self._end = now

    def on_train_epoch_end(self, trainer, module) -> None:
        self._end = None  # validation between epochs is not data waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/geoseg-gpu-bench"))
    args = parser.parse_args()

    t0 = time.perf_counter()
    survey = make_survey(args.out_dir / "survey", size=args.size, seed=0)
    generated = time.perf_counter() - t0
    config = {
        "data": {
            "images": [str(survey.image)],
            "labels": str(survey.labels),
            "classes": {v: n for v, (n, _) in CLASSES.items()},
            "validation": {"fraction": 0.1},
        },
        "model": {"encoder": args.encoder, "weights": None},
        "train": {"tile_size": 512, "batch_size": args.batch, "samples_per_epoch": args.batch * args.steps,
                  "num_workers": args.workers, "epochs": 1},
    }  # fmt: skip
    path = args.out_dir / "gpu.yaml"
    path.write_text(yaml.safe_dump(config))
    timer = StepTimer()
    result = train(load_config(path), args.out_dir / "bundle", max_steps=args.steps, device=args.device, overwrite=True,
                   progress_bar=False, callbacks=[timer], emit=lambda _: None)  # fmt: skip
    waits = timer.waits[args.warmup :]
    computes = timer.computes[args.warmup + 1 :]
    step = statistics.median(w + c for w, c in zip(waits, computes, strict=False))
    report = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "precision": training_precision(args.device),
        "encoder": args.encoder,
        "batch": args.batch,
        "tile": 512,
        "workers": args.workers,
        "steps_timed": len(computes),
        "images_per_s": round(args.batch * len(computes) / (sum(waits) + sum(computes)), 1),
        "median_step_ms": round(1000 * step, 1),
        "data_wait_share": round(sum(waits) / (sum(waits) + sum(computes)), 4),
        "survey_px": args.size,
        "survey_seconds": round(generated, 1),
        "final_loss": round(result.losses[-1], 4),
        "val_miou": None if result.scores is None else round(result.scores.miou, 4),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
