"""Label efficiency: does labelling where `geoseg suggest` says beat labelling at random?

    python bench/label_efficiency.py                       # 3 cases, seeds 0 1 2, 3 rounds of 2 windows
    python bench/label_efficiency.py --cases nb_2to1 --seeds 0 --rounds 2 --steps 60   # a quick look

The loop a user runs, simulated on densely labelled cases of ``bench/accuracy.py`` (``nb_2to1``: new_brunswick
tile 2 trains, tile 1 tests; ``spacenet``: the west half trains, the east half tests; ``buildings``: the west
96 columns train, the rest tests). Each seed starts from ``--start`` windows drawn at random (the same for
both strategies), then each round adds ``--add`` windows chosen by ``geoseg.suggest`` (strategy
``uncertainty``, from the last round's model) or at random (strategy ``random``: the same eligibility and
spacing, drawn in a seeded order). A chosen window's labels are revealed from the full label file, the model
is trained again from the ImageNet weights with ``--steps`` steps, and scored on the held-out test image
(mIoU on its labelled pixels, `geoseg evaluate`). Results: ``--out``/results.jsonl (one line a training),
summary.md (mean over seeds per round, and the share of random's labelled pixels suggest needed to reach
random's final mIoU) and curves.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from accuracy import Case, _cpu_name, _evaluate, lite0_weights, prepare_cases  # noqa: E402

import geoseg  # noqa: E402

CASES = ("nb_2to1", "spacenet", "buildings")
WINDOW = 48  # px; the buildings case's training strip is 96 px wide
STRATEGIES = ("uncertainty", "random")


@dataclass
class Round:
    case: str
    strategy: str
    seed: int
    round: int
    windows: int
    labelled_pixels: int
    miou: float
    seconds: float
    cpu: str


def revealed_labels(case: Case, windows: list[tuple[int, int]], out: Path) -> tuple[Path, int]:
    """The case's full training labels inside ``windows`` (top-left row, col; WINDOW px), 255 elsewhere."""
    with rasterio.open(case.train_labels) as ds:
        full = ds.read(1)
        profile = ds.profile
    shown = np.full_like(full, 255)
    for row, col in windows:
        shown[row : row + WINDOW, col : col + WINDOW] = full[row : row + WINDOW, col : col + WINDOW]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(shown, 1)
    return out, int((shown != 255).sum())


def train_and_score(case: Case, labels: Path, seed: int, steps: int, folder: Path) -> tuple[Path, float]:
    from geoseg.config import load_config
    from geoseg.infer.whole import segment_file
    from geoseg.model.bundle import load_bundle
    from geoseg.train import train

    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "data": {"images": [str(case.train_image)], "labels": str(labels),
                 "classes": {int(k): v for k, v in case.classes.items()}},
        "model": {"encoder": "tu-efficientnet_lite0", "weights": lite0_weights()},
        "train": {"seed": seed, "num_workers": 0, "tile_size": 64, "baseline": False},
    }  # fmt: skip
    (folder / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = train(load_config(folder / "train.yaml"), folder / "model", max_steps=steps, device="cpu",
                   overwrite=True, emit=lambda _: None, progress_bar=False)  # fmt: skip
    bundle = load_bundle(result.bundle, device="cpu")
    class_map = segment_file(bundle, case.test_image, folder / "test_classes.tif", overwrite=True)
    return result.bundle, _evaluate(case, class_map)["all"]["miou"]


def choose(case: Case, bundle: Path, labels: Path | None, strategy: str, count: int, seed: int) -> list:
    """``count`` windows to label next, as `geoseg suggest` picks them, as (row, col) of their corners."""
    frame = geoseg.suggest(case.train_image, geoseg.load_model(bundle, device="cpu"), count,
                           labels=[labels] if labels else [], size=WINDOW, strategy=strategy, seed=seed)  # fmt: skip
    return list(zip(frame["row"].astype(int), frame["col"].astype(int), strict=True))


def run_seed(case: Case, seed: int, args: argparse.Namespace, out: Path, log) -> None:
    folder = out / case.name / f"seed{seed}"
    start = time.perf_counter()
    first_windows = first_random_windows(case, seed, args.start, folder / "start")
    labels, pixels = revealed_labels(case, first_windows, folder / "labels_round0.tif")
    bundle, miou = train_and_score(case, labels, seed, args.steps, folder / "round0")
    for strategy in STRATEGIES:
        log(Round(case.name, strategy, seed, 0, len(first_windows), pixels, miou, time.perf_counter() - start,
                  _cpu_name()))  # fmt: skip
    for strategy in STRATEGIES:
        windows, current_labels, current_bundle = list(first_windows), labels, bundle
        for round_index in range(1, args.rounds + 1):
            start = time.perf_counter()
            windows += choose(case, current_bundle, current_labels, strategy, args.add, seed * 100 + round_index)
            place = folder / strategy / f"round{round_index}"
            place.mkdir(parents=True, exist_ok=True)
            current_labels, pixels = revealed_labels(case, windows, place / "labels.tif")
            current_bundle, miou = train_and_score(case, current_labels, seed, args.steps, place)
            log(Round(case.name, strategy, seed, round_index, len(windows), pixels, miou,
                      time.perf_counter() - start, _cpu_name()))  # fmt: skip


def first_random_windows(case: Case, seed: int, count: int, folder: Path) -> list[tuple[int, int]]:
    """The starting windows: `geoseg suggest --strategy random`, which reads only the model's bands, with an
    untrained one."""
    from tests.conftest import make_random_bundle

    with rasterio.open(case.train_image) as ds:
        bands = list(range(1, ds.count + 1))
    scratch = make_random_bundle(folder / "untrained", bands, n_classes=len(case.classes), tile=64, seed=seed)
    return choose(case, scratch, None, "random", count, seed)


def summarize(rounds: list[Round]) -> str:
    lines = ["| case | strategy | round | windows | labelled px (mean) | mIoU mean ± sd | seeds |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    keys = sorted({(r.case, r.strategy, r.round) for r in rounds})
    for case, strategy, index in keys:
        group = [r for r in rounds if (r.case, r.strategy, r.round) == (case, strategy, index)]
        mious = [r.miou for r in group]
        pixels = statistics.mean(r.labelled_pixels for r in group)
        sd = statistics.stdev(mious) if len(mious) > 1 else 0.0
        lines.append(f"| {case} | {strategy} | {index} | {group[0].windows} | {pixels:,.0f} | "
                     f"{statistics.mean(mious):.3f} ± {sd:.3f} | {len(group)} |")  # fmt: skip
        curves.setdefault((case, strategy), []).append((pixels, statistics.mean(mious)))
    lines += ["", "| case | random's final mIoU | first suggest round reaching it | share of random's labelled px |",
              "|---|---|---|---|"]  # fmt: skip
    for case in sorted({r.case for r in rounds}):
        random_curve, suggest_curve = curves.get((case, "random"), []), curves.get((case, "uncertainty"), [])
        if not random_curve or not suggest_curve:
            continue
        final_pixels, final_miou = random_curve[-1]
        reached = next(((i, p) for i, (p, m) in enumerate(suggest_curve) if m >= final_miou), None)
        share = f"{reached[1] / final_pixels:.0%}" if reached else "not reached"
        lines.append(f"| {case} | {final_miou:.3f} | {reached[0] if reached else '–'} | {share} |")
    return "\n".join(lines)


def plot(rounds: list[Round], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({r.case for r in rounds})
    figure, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 3.4), squeeze=False)
    for axis, case in zip(axes[0], cases, strict=True):
        for strategy, colour in zip(STRATEGIES, ("#b22222", "#4169e1"), strict=True):
            group = [r for r in rounds if r.case == case and r.strategy == strategy]
            indices = sorted({r.round for r in group})
            x = [statistics.mean(r.labelled_pixels for r in group if r.round == i) for i in indices]
            y = [statistics.mean(r.miou for r in group if r.round == i) for i in indices]
            axis.plot(x, y, marker="o", color=colour, label=strategy)
        axis.set_title(case)
        axis.set_xlabel("labelled pixels")
        axis.set_ylabel("test mIoU")
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "label_efficiency")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start", type=int, default=2, help="windows labelled before the first round")
    parser.add_argument("--add", type=int, default=2, help="windows added each round")
    parser.add_argument("--steps", type=int, default=80, help="training steps per round")
    parser.add_argument("--summarize", action="store_true", help="only rewrite summary.md and curves.png from "
                        "--out's results.jsonl (e.g. of a run that was stopped)")  # fmt: skip
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        lines = (args.out / "results.jsonl").read_text().splitlines()
        write_summary([Round(**json.loads(line)) for line in lines if line.strip()], args.out)
        return
    cases = prepare_cases(args.data, args.out / "cases")
    results = args.out / "results.jsonl"
    rounds: list[Round] = []

    def log(entry: Round) -> None:
        rounds.append(entry)
        with results.open("a") as stream:
            stream.write(json.dumps(asdict(entry)) + "\n")
        print(f"{entry.case} {entry.strategy} seed {entry.seed} round {entry.round}: {entry.labelled_pixels:,} px, "
              f"mIoU {entry.miou:.3f} ({entry.seconds:.0f} s)", flush=True)  # fmt: skip

    for seed in args.seeds:  # seed by seed: an interrupted run still has every case
        for case_name in args.cases:
            run_seed(cases[case_name], seed, args, args.out, log)
    write_summary(rounds, args.out)


def write_summary(rounds: list[Round], out: Path) -> None:
    complete = complete_seeds(rounds)
    summary = summarize(complete)
    (out / "summary.md").write_text(summary + "\n")
    plot(complete, out / "curves.png")
    print(summary)


def complete_seeds(rounds: list[Round]) -> list[Round]:
    """The runs of (case, seed) pairs whose every round of both strategies finished: a stopped run's last seed
    would otherwise compare strategies on different rounds."""
    last = max((r.round for r in rounds), default=0)
    done = {(r.case, r.seed) for r in rounds if r.round == last and r.strategy == STRATEGIES[-1]}
    return [r for r in rounds if (r.case, r.seed) in done]


if __name__ == "__main__":
    main()
