"""`geoseg infer` side by side with the torchgeo reference pipeline and with the model's forward pass alone.

    python bench/infer_bench.py --size 4096 --encoder resnet18 [--rounds 1]

Makes the mosaic with ../shared/bench/make_mosaic.py and one seeded U-Net bundle
(`torch.manual_seed(0)`; `smp.Unet(E, encoder_weights=None, classes=4)`, exactly the baseline's model),
then runs, as separate processes under /usr/bin/time -v:

- geoseg infer (fp32, tile 512, overlap 64 = the baseline's stride 448, class map only),
- torchgeo_baseline.py on the same bundle (`--weights`), tile 512, stride 448, batch 4, 2 threads,
- torchgeo_baseline.py --forward-only with as many tiles as geoseg's grid has windows (the compute floor).

Reports wall seconds, peak RSS, ratios, and pixel agreement between the two class maps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import rasterio

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in GiB and output of ``command`` run under /usr/bin/time -v."""
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"failed ({run.returncode}): {' '.join(command)}\n{run.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    return seconds, rss_kb / 2**20, run.stdout + run.stderr


def ensure_mosaic(path: Path, size: int, *extra: str) -> Path:
    """make_mosaic.py's mosaic at ``path``, made only once: the generator is deterministic."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(SHARED_BENCH / "make_mosaic.py"), str(path), "--size", str(size), *extra]
        subprocess.run(command, check=True)
    return path


def make_bundle(path: Path, encoder: str) -> Path:
    import segmentation_models_pytorch as smp
    import torch

    from geoseg.config import DEFAULT_COLORS, ClassSpec
    from geoseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalization
    from geoseg.model.bundle import BundleMeta, save_bundle

    torch.manual_seed(0)
    model = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=4)
    classes = [ClassSpec(str(i), i, f"class {i}", DEFAULT_COLORS[i]) for i in range(4)]
    norm = Normalization([(0.0, 255.0)] * 3, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return save_bundle(model, BundleMeta(classes, [1, 2, 3], norm, tile_size=512, overlap=64), path, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--skip-forward", action="store_true", help="no forward-only run (for memory comparisons)")
    args = parser.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    mosaic = ensure_mosaic(out / f"m{args.size}.tif", args.size)
    bundle = make_bundle(out / f"bundle_{args.encoder}", args.encoder)
    from geoseg.infer.windows import window_grid

    n_windows = len(window_grid(args.size, args.size, 512, 64))
    geoseg_dir = out / f"geoseg_{args.size}_{args.encoder}"
    results = {}
    results["geoseg infer"] = timed([
        sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir", str(geoseg_dir),
        "--precision", "fp32", "--no-polygons", "--overwrite", "--progress", "none", "--workers", str(args.workers),
        "--block-size", str(args.block_size),
    ])  # fmt: skip
    baseline_out = out / f"baseline_{args.size}_{args.encoder}.tif"
    results["torchgeo baseline"] = timed([
        sys.executable, str(SHARED_BENCH / "torchgeo_baseline.py"), str(mosaic), str(baseline_out), "--encoder",
        args.encoder, "--weights", str(bundle), "--batch", "4", "--threads", "2",
    ])  # fmt: skip
    if not args.skip_forward:
        results["forward only"] = timed([
            sys.executable, str(SHARED_BENCH / "torchgeo_baseline.py"), str(mosaic), "--forward-only", "--tiles",
            str(n_windows), "--encoder", args.encoder, "--batch", "4", "--threads", "2",
        ])  # fmt: skip
    with rasterio.open(geoseg_dir / f"{mosaic.stem}_classes.tif") as a, rasterio.open(baseline_out) as b:
        agreement = float((a.read(1) == b.read(1)).mean())
    forward_line = re.search(r"forward tiles=\d+ seconds=([\d.]+)", results.get("forward only", (0, 0, ""))[2])
    forward_s = float(forward_line.group(1)) if forward_line else float("nan")
    print(f"\n{args.size}² mosaic, {args.encoder}, {n_windows} grid windows, {dt.date.today()}, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print("| run | wall s (incl. start-up) | peak RSS GiB |\n|---|---|---|")
    for name, (seconds, rss, _) in results.items():
        print(f"| {name} | {seconds:.1f} | {rss:.2f} |")
    g, t = results["geoseg infer"], results["torchgeo baseline"]
    print(f"\ngeoseg / forward-only model time: {g[0] / max(forward_s, 1e-9):.2f} (forward {forward_s:.1f} s)")
    print(f"torchgeo baseline / geoseg wall: {t[0] / g[0]:.2f}×; peak RSS geoseg / baseline: {g[1] / t[1]:.2f}")
    print(f"class agreement geoseg vs baseline (different blending): {agreement:.4%}")


if __name__ == "__main__":
    main()
