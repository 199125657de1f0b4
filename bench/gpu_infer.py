"""`geoseg infer` on a GPU: end-to-end time over the model's forward passes alone, and throughput.

    python bench/gpu_infer.py --size 8192 --encoder resnet34 --batch 16 --workers 2,8

One seeded U-Net bundle (as in infer_bench.py) and a make_mosaic.py mosaic, then, as separate processes
timed from launch to exit (interpreter start-up, imports, CUDA initialisation and model loading included
in both):

- **end to end**: `geoseg infer --device cuda --precision P --batch-size B --workers W` (class map only):
  reading, normalization, host-to-device copies, blending, assembly, writing, overviews;
- **forward only**: the bundle loaded the way geoseg's workers load it, as many windows as geoseg's grid
  has, in batches of B random tiles made on the GPU (no reading, no copies), same precision, softmax,
  synchronized at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infer_bench import SHARED_BENCH, make_bundle  # noqa: E402


def forward_only(bundle: str, windows: int, batch: int, precision: str) -> None:
    import torch

    from geoseg.infer.block import cached_bundle

    model = cached_bundle(bundle, "cuda").model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    generator = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        for _ in range(math.ceil(windows / batch)):
            x = torch.randn(batch, 3, 512, 512, device="cuda", generator=generator)
            model(x.contiguous(memory_format=torch.channels_last)).float().softmax(1)
    torch.cuda.synchronize()
    print(f"forward windows={windows} batch={batch} gpu_seconds={time.perf_counter() - start:.2f}")


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"failed ({run.returncode}): {' '.join(command)}\n{run.stderr[-3000:]}")
    return seconds, run.stdout + run.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--workers", default="2,8", help="comma-separated worker counts for geoseg infer")
    parser.add_argument("--mosaic-script", type=Path, default=SHARED_BENCH / "make_mosaic.py")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--forward-only", nargs=2, metavar=("BUNDLE", "WINDOWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward_only:
        forward_only(args.forward_only[0], int(args.forward_only[1]), args.batch, args.precision)
        return
    import torch

    from geoseg.infer.windows import window_grid

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    mosaic = out / f"m{args.size}.tif"
    if not mosaic.exists():
        subprocess.run([sys.executable, str(args.mosaic_script), str(mosaic), "--size", str(args.size)], check=True)
    bundle = make_bundle(out / f"bundle_{args.encoder}", args.encoder)
    windows = len(window_grid(args.size, args.size, 512, 64))
    megapixels = args.size * args.size / 1e6
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; {args.size}² mosaic, {windows} windows of "
          f"512² (overlap 64), {args.encoder}, {args.precision}, batch {args.batch}; "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    forward = [sys.executable, __file__, "--batch", str(args.batch), "--precision", args.precision]
    forward += ["--forward-only", str(bundle), str(windows)]
    timed(forward)  # warm-up: first CUDA start-up and cuDNN autotuning caches
    f_s, f_out = timed(forward)
    gpu = next((line for line in f_out.splitlines() if line.startswith("forward ")), "")
    print("| workers | end to end s | forward only s | ratio | end to end Mpx/s |")
    print("|---|---|---|---|---|")
    for workers in (int(w) for w in args.workers.split(",")):
        end_to_end = [
            sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir",
            str(out / f"gpu_{args.size}_{workers}"), "--device", "cuda", "--precision", args.precision,
            "--batch-size", str(args.batch), "--workers", str(workers), "--no-polygons", "--overwrite",
            "--progress", "none",
        ]  # fmt: skip
        e_s, _ = timed(end_to_end)
        print(f"| {workers} | {e_s:.1f} | {f_s:.1f} | **{e_s / f_s:.2f}** | {megapixels / e_s:.1f} |", flush=True)
    print(f"<!-- {gpu} -->")


if __name__ == "__main__":
    main()
