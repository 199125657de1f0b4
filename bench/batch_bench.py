"""`geoseg batch` makespan: 1 vs 2 workers, and block-level vs file-level scheduling.

    python bench/batch_bench.py [--large 4096] [--small 1024] [--n-small 6]

One large mosaic and several small ones from make_mosaic.py (different seeds), the cheap U-Net of
infer_scale.py, each run a separate `geoseg batch` process on a local cluster (class maps only):

- block-level, 1 worker: the total work, W;
- block-level, 2 workers (default --block-size 1024);
- file-level, 2 workers: --block-size larger than any mosaic, so each mosaic is one task, with the
  large mosaic first (the best order for file-level) and last (the worst).

The ideal makespan with 2 workers is W / 2; each run is reported as its wall time over W / 2. Wall
times include start-up (imports, cluster start, model loading: measured by a batch of one tiny
mosaic), which is subtracted before the ratios are taken.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import platform
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infer_bench import ensure_mosaic, timed  # noqa: E402
from infer_scale import make_cheap_bundle  # noqa: E402


def batch(inputs: list[Path], bundle: Path, out: Path, workers: int, block: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    seconds, _, _ = timed([
        sys.executable, "-m", "geoseg", "batch", *map(str, inputs), "--model", str(bundle), "--out-dir", str(out),
        "--workers", str(workers), "--block-size", str(block), "--no-polygons", "--precision", "fp32",
        "--progress", "none",
    ])  # fmt: skip
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=4096)
    parser.add_argument("--small", type=int, default=1024)
    parser.add_argument("--n-small", type=int, default=6)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    folder = args.out_dir / "batch_inputs"
    folder.mkdir(parents=True, exist_ok=True)
    bundle = make_cheap_bundle(args.out_dir / "bundle_cheap")
    large = ensure_mosaic(folder / f"large{args.large}.tif", args.large, "--seed", "100")
    smalls = [ensure_mosaic(folder / f"small{i}.tif", args.small, "--seed", str(200 + i)) for i in range(args.n_small)]
    tiny = ensure_mosaic(folder / "tiny.tif", 256, "--seed", "300")
    file_level = 2 * max(args.large, args.small)
    out = args.out_dir / "batch_runs"

    startup = {w: batch([tiny], bundle, out / f"startup{w}", w, 1024) for w in (1, 2)}
    runs = {
        "block-level, 1 worker": (batch([large, *smalls], bundle, out / "b1", 1, 1024), 1),
        "block-level, 2 workers": (batch([large, *smalls], bundle, out / "b2", 2, 1024), 2),
        "file-level, 2 workers, large first": (batch([large, *smalls], bundle, out / "f2a", 2, file_level), 2),
        "file-level, 2 workers, large last": (batch([*smalls, large], bundle, out / "f2b", 2, file_level), 2),
    }
    work = runs["block-level, 1 worker"][0] - startup[1]
    when = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {multiprocessing.cpu_count()} CPUs"
    print(f"\n{args.large}² + {args.n_small} × {args.small}², cheap U-Net (infer_scale.py), fp32; {when}")
    print(f"start-up (a batch of one 256² mosaic): 1 worker {startup[1]:.1f} s, 2 workers {startup[2]:.1f} s; "
          f"total work W = {work:.1f} s")  # fmt: skip
    print("| run | wall s | minus start-up s | over ideal (W / workers) |\n|---|---|---|---|")
    for name, (seconds, workers) in runs.items():
        net = seconds - startup[workers]
        print(f"| {name} | {seconds:.1f} | {net:.1f} | {net / (work / workers):.2f} |")


if __name__ == "__main__":
    main()
