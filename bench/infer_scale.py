"""Does `geoseg infer`'s memory stay flat as mosaics grow? Peak RSS and wall time from 4096² to 32768².

    python bench/infer_scale.py --sizes 4096,8192,16384,32768

One cheap seeded U-Net for every size (timm's mobilenetv3_small_050 encoder, depth 3, decoder
channels 16/8/4: about 70 ms per 512² window on one core), so the largest mosaic (1.07 Gpx, 5329
windows) runs in minutes; the machinery around the model (reading, drift statistics, blending,
assembly, writing, overviews) is the same as for any model. Each run is its own process under
/usr/bin/time -v: class map only, fp32, default block size, 2 workers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infer_bench import ensure_mosaic, timed  # noqa: E402

ENCODER = "tu-mobilenetv3_small_050"


def make_cheap_bundle(path: Path) -> Path:
    import segmentation_models_pytorch as smp
    import torch

    from geoseg.config import DEFAULT_COLORS, ClassSpec
    from geoseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalization
    from geoseg.model.bundle import BundleMeta, save_bundle

    torch.manual_seed(0)
    model = smp.Unet(ENCODER, encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 4), classes=4)
    classes = [ClassSpec(str(i), i, f"class {i}", DEFAULT_COLORS[i]) for i in range(4)]
    norm = Normalization([(0.0, 255.0)] * 3, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return save_bundle(model, BundleMeta(classes, [1, 2, 3], norm, tile_size=512, overlap=64), path, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4096,8192,16384,32768")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    bundle = make_cheap_bundle(out / "bundle_cheap")
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {multiprocessing.cpu_count()} CPUs; "
          f"{ENCODER} depth 3, {args.workers} workers, default blocks")  # fmt: skip
    print("| mosaic | Mpx | wall s | µs per px | peak RSS GiB |\n|---|---|---|---|---|")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        mosaic = ensure_mosaic(out / f"m{size}.tif", size)
        seconds, rss, _ = timed([
            sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir",
            str(out / f"scale_{size}"), "--precision", "fp32", "--no-polygons", "--overwrite", "--progress", "none",
            "--workers", str(args.workers),
        ])  # fmt: skip
        rows.append((size, seconds, rss))
        per_px = seconds / (size * size) * 1e6
        print(f"| {size}² | {size * size / 1e6:.0f} | {seconds:.1f} | {per_px:.3f} | {rss:.2f} |", flush=True)
    low, high = min(r[2] for r in rows), max(r[2] for r in rows)
    print(f"\npeak RSS spread: largest / smallest = {high / low:.3f}")


if __name__ == "__main__":
    main()
