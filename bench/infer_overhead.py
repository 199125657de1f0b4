"""Overhead of `geoseg infer`: end-to-end time over the model's forward passes alone, same setup.

    python bench/infer_overhead.py --size 8192 --encoders resnet18,resnet34

For each encoder, one seeded U-Net bundle (as in infer_bench.py) and two processes under
/usr/bin/time -v, alternating which runs first:

- **end to end**: `geoseg infer` (fp32, tile 512, overlap 64, class map only, `--workers W`):
  reading, normalization, drift statistics, blending, assembly, writing, overviews;
- **forward only**: the same bundle loaded the way geoseg's workers load it, run by W threads of one
  process with one intra-op torch thread each (geoseg's default threads scheduler), as many 512²
  forward passes (batch 1, channels-last, inference mode, softmax) as geoseg's grid has windows, on
  random tiles. Nothing is read or written.

Both walls include interpreter start-up, imports and model loading, so the ratio charges geoseg
only for what it does beyond the forward passes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infer_bench import ensure_mosaic, make_bundle, timed  # noqa: E402


def forward_share(bundle: str, passes: int, tile: int, seed: int) -> float:
    """Seconds for ``passes`` forward passes on this thread, with the model geoseg's workers use."""
    import torch

    from geoseg.infer.block import cached_bundle

    model = cached_bundle(bundle, "cpu").model
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(passes):
            x = torch.randn(1, 3, tile, tile, generator=generator).contiguous(memory_format=torch.channels_last)
            model(x).softmax(1)
    return time.perf_counter() - start


def forward_only(bundle: str, windows: int, workers: int, tile: int) -> None:
    import torch

    from geoseg.infer.block import cached_bundle

    torch.set_num_threads(1)
    cached_bundle(bundle, "cpu")  # loaded once before the threads start, as geoseg's first block does
    shares = [windows // workers + (i < windows % workers) for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        seconds = list(pool.map(forward_share, [bundle] * workers, shares, [tile] * workers, range(workers)))
    print(f"forward passes={windows} workers={workers} seconds_per_worker={','.join(f'{s:.1f}' for s in seconds)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--encoders", default="resnet18,resnet34")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--forward-only", nargs=2, metavar=("BUNDLE", "WINDOWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward_only:
        forward_only(args.forward_only[0], int(args.forward_only[1]), args.workers, 512)
        return
    from geoseg.infer.windows import window_grid

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    mosaic = ensure_mosaic(out / f"m{args.size}.tif", args.size)
    windows = len(window_grid(args.size, args.size, 512, 64))
    print(f"{args.size}² mosaic, {windows} windows of 512² (overlap 64), {args.workers} workers × 1 thread, fp32, "
          f"blocks {args.block_size}; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
          f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs")  # fmt: skip
    print("| encoder | end to end s | forward only s | ratio | peak RSS end to end / forward only GiB |")
    print("|---|---|---|---|---|")
    for i, encoder in enumerate(args.encoders.split(",")):
        bundle = make_bundle(out / f"bundle_{encoder}", encoder)
        end_to_end = [
            sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir",
            str(out / f"overhead_{args.size}_{encoder}"), "--precision", "fp32", "--no-polygons", "--overwrite",
            "--progress", "none", "--workers", str(args.workers), "--block-size", str(args.block_size),
        ]  # fmt: skip
        forward = [sys.executable, __file__, "--workers", str(args.workers)]
        forward += ["--forward-only", str(bundle), str(windows)]
        runs = {"e2e": end_to_end, "fwd": forward}
        order = ["e2e", "fwd"] if i % 2 == 0 else ["fwd", "e2e"]
        results = {name: timed(runs[name]) for name in order}
        (e_s, e_rss, _), (f_s, f_rss, f_out) = results["e2e"], results["fwd"]
        print(f"| {encoder} | {e_s:.1f} | {f_s:.1f} | **{e_s / f_s:.3f}** | {e_rss:.2f} / {f_rss:.2f} |", flush=True)
        detail = next((line for line in f_out.splitlines() if line.startswith("forward passes=")), "")
        print(f"<!-- {detail} -->", flush=True)


if __name__ == "__main__":
    main()
