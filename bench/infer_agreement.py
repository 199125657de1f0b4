"""How close is windowed inference to running the model on the whole image at once? Trained model.

    python bench/infer_agreement.py BUNDLE MOSAIC [--labels LABELS.tif]

Whole-image inference (one forward pass over the full raster, padded to a multiple of 32) is the
reference that windowing approximates. Compared on the mosaic's valid pixels, each path run as a
user runs it:

- `geoseg infer` in fp32 and in bf16 (on a CPU without bf16 units, bf16 is emulated: slow, but
  the agreement figure is what a bf16 machine gives);
- `../shared/bench/torchgeo_baseline.py` with the same weights, tile and stride, `--mask-nodata`.

The bundle must use the baseline's input scaling (uint8 /255, then ImageNet mean/std), which a
bundle trained from ImageNet weights on uint8 mosaics does (`make demo` writes one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def whole_image(bundle_path: Path, mosaic: Path) -> tuple[np.ndarray, np.ndarray]:
    """Class ids from one forward pass over the whole raster, and the validity mask."""
    import torch

    from geoseg.io.raster import open_raster, read_info, read_window
    from geoseg.model.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    meta = bundle.meta
    info = read_info(mosaic)
    with open_raster(mosaic) as ds:
        raw, valid = read_window(ds, meta.bands, rasterio.windows.Window(0, 0, info.grid.width, info.grid.height))
    image = meta.normalization.apply(raw)
    image[:, ~valid] = 0.0
    height, width = valid.shape
    padded = np.zeros((image.shape[0], -(-height // 32) * 32, -(-width // 32) * 32), dtype=np.float32)
    padded[:, :height, :width] = image
    with torch.inference_mode():
        logits = bundle.model.eval()(torch.from_numpy(padded)[None])[0, :, :height, :width]
    ids = np.asarray([c.id for c in meta.classes], dtype=np.uint8)
    return ids[logits.argmax(0).numpy()], valid


def geoseg_infer(bundle: Path, mosaic: Path, out: Path, precision: str) -> np.ndarray:
    command = [sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir", str(out),
               "--precision", precision, "--no-polygons", "--progress", "none", "--overwrite"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    with rasterio.open(out / f"{mosaic.stem}_classes.tif") as ds:
        return ds.read(1)


def baseline(bundle_path: Path, mosaic: Path, out: Path) -> np.ndarray:
    import json

    from geoseg.model.bundle import load_bundle

    meta = load_bundle(bundle_path).meta
    encoder = json.loads((bundle_path / "config.json").read_text())["encoder_name"]
    norm = meta.normalization
    if any(s != (0.0, 255.0) for s in map(tuple, norm.scale)) or (list(norm.mean), list(norm.std)) != IMAGENET:
        sys.exit("the bundle's input scaling is not the baseline's (/255 + ImageNet mean/std)")
    target = out / "baseline.tif"
    subprocess.run([
        sys.executable, str(SHARED_BENCH / "torchgeo_baseline.py"), str(mosaic), str(target), "--encoder", encoder,
        "--weights", str(bundle_path), "--classes", str(len(meta.classes)), "--tile", str(meta.tile_size),
        "--stride", str(meta.tile_size - meta.overlap), "--mask-nodata",
    ], check=True, capture_output=True)  # fmt: skip
    with rasterio.open(target) as ds:
        index = ds.read(1)
    ids = np.asarray([c.id for c in meta.classes] + [255] * (256 - len(meta.classes)), dtype=np.uint8)
    return ids[index]


def miou(pred: np.ndarray, labels: np.ndarray, valid: np.ndarray, ids: list[int]) -> float:
    scored = valid & np.isin(labels, ids)
    ious = []
    for i in ids:
        p, t = (pred == i) & scored, (labels == i) & scored
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("mosaic", type=Path)
    parser.add_argument("--labels", type=Path)
    args = parser.parse_args()
    from geoseg.model.bundle import load_bundle

    meta = load_bundle(args.bundle).meta
    reference, valid = whole_image(args.bundle, args.mosaic)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        runs = {
            "geoseg infer, fp32": geoseg_infer(args.bundle, args.mosaic, out / "fp32", "fp32"),
            "geoseg infer, bf16": geoseg_infer(args.bundle, args.mosaic, out / "bf16", "bf16"),
            "torchgeo baseline (fp32, uniform average)": baseline(args.bundle, args.mosaic, out),
        }
    labels = None
    if args.labels:
        with rasterio.open(args.labels) as ds:
            labels = ds.read(1)
    ids = [c.id for c in meta.classes]
    print(f"{args.mosaic.name}: {valid.shape[1]}×{valid.shape[0]}, {valid.sum():,} valid px; tile "
          f"{meta.tile_size}, overlap {meta.overlap}; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    header = "| run | agreement with whole-image inference |" + (" mIoU vs labels |" if labels is not None else "")
    print(header + "\n|---|---|" + ("---|" if labels is not None else ""))
    rows = {"whole image (reference)": reference, **runs}
    for name, classes in rows.items():
        agree = float((classes[valid] == reference[valid]).mean())
        cells = f"| {name} | {agree:.4%} |"
        if labels is not None:
            cells += f" {miou(classes, labels, valid, ids):.4f} |"
        print(cells)
    fp32, bf16 = runs["geoseg infer, fp32"], runs["geoseg infer, bf16"]
    print(f"\nbf16 vs fp32 (geoseg): {float((bf16[valid] == fp32[valid]).mean()):.4%} of valid pixels agree")


if __name__ == "__main__":
    main()
