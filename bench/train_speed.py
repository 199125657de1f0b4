"""Training speed: windows per second of geoseg's training steps, by precision and memory format.

    python bench/train_speed.py [--case nb_1to2] [--steps 60] [--warmup 10] [--device auto]

Trains the default recipe on one of bench/accuracy.py's prepared cases (run that once first, or pass
``--cases-dir``) through ``geoseg.train.train`` and times each optimizer step from one step's start to
the next (data wait included, validation excluded: one validation at the end). Variants: Lightning's
``32-true`` and ``bf16-mixed`` precision, each with the network in contiguous (NCHW) and channels-last
memory format. Prints one markdown row per variant.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import accuracy  # noqa: E402

import geoseg.train as training  # noqa: E402
from geoseg.config import load_config  # noqa: E402


class StepClock(L.Callback):
    def __init__(self, channels_last: bool) -> None:
        self.channels_last = channels_last
        self.starts: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.channels_last:
            module.model.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer: L.Trainer, *_: object) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases-dir", type=Path, default=ROOT / "bench" / "out" / "accuracy" / "cases")
    parser.add_argument("--case", default="nb_1to2")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    case = accuracy.load_cases(args.cases_dir.resolve())[args.case]
    config = accuracy.user_config(case, 0, "default", 0)
    config["train"]["samples_per_epoch"] = 10**6  # one validation, at the end
    path = Path("/tmp/geoseg_train_speed.yaml")
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path)
    device = training.resolve_device(args.device)
    name = torch.cuda.get_device_name() if device == "cuda" else accuracy._cpu_name()
    print(f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads, case {args.case}")
    print("| precision | memory format | windows/s | median step ms | steps timed |")
    print("|---|---|---|---|---|")
    original = training.training_precision
    for precision in args.precisions:
        for channels_last in (False, True):
            training.training_precision = lambda _accelerator, p=precision: p
            clock = StepClock(channels_last)
            result = training.train(cfg, Path("/tmp/geoseg_train_speed_model"), max_steps=args.steps,
                                    device=device, overwrite=True, emit=lambda _: None, progress_bar=False,
                                    callbacks=[clock])  # fmt: skip
            steps = [b - a for a, b in zip(clock.starts, clock.starts[1:], strict=False)][args.warmup :]
            median = statistics.median(steps)
            batch = cfg.train.batch_size
            print(f"| {precision} | {'channels-last' if channels_last else 'NCHW'} | {batch / median:.1f} | "
                  f"{median * 1000:.0f} | {len(steps)} (of {result.steps}) |", flush=True)  # fmt: skip
    training.training_precision = original


if __name__ == "__main__":
    main()
