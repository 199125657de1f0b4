"""How often each class is seen in drawn training windows, uniform vs `rare_class_sampling: true`,
on real labels (new_brunswick: water and roads are scarce next to forest and buildings).

    python bench/rare_class_sampling.py [--data ../shared/data/new_brunswick] [--windows 2000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from geoseg.config import IGNORE_INDEX, load_config
from geoseg.data.prepare import build_training_set, load_images

CONFIG = """
data:
  images: [{data}/23322E759967N_clipped_1m_1of2.tif, {data}/23322E759967N_clipped_1m_2of2.tif]
  labels: {data}/BakerLake_2017_clipped.gpkg
  label_field: Quatreclasses
  classes: {{1: forest, 2: water, 3: road, 4: building, 255: {{name: train corridor, id: 5}}}}
  validation: {{fraction: 0.2}}
model: {{encoder: tu-efficientnet_lite0, weights: null}}
train: {{tile_size: 64, samples_per_epoch: {windows}, rare_class_sampling: {rare}}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/new_brunswick")
    parser.add_argument("--windows", type=int, default=2000)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rare in (False, True):
            path = Path(tmp) / f"{rare}.yaml"
            path.write_text(CONFIG.format(data=args.data, windows=args.windows, rare=str(rare).lower()))
            cfg = load_config(path)
            images = load_images(cfg)
            ts = build_training_set(cfg, images, pretrained=False)
            n = len(cfg.data.classes)
            seen = sum(np.pad(f, (0, n - len(f))) for f in (s.class_frequencies() for s in ts.train_sampler.samplers))
            rows[rare] = seen / seen.sum()
            names = [c.name for c in cfg.data.classes]
            labelled = sum(
                np.bincount(np.where(im.validation, IGNORE_INDEX, im.labels)[~im.validation].ravel(), minlength=256)[
                    : len(names)
                ]
                for im in images
            )
    share = labelled / labelled.sum()
    print("| class | share of labelled training pixels | share seen, uniform | share seen, rare_class_sampling |")
    print("|---|---|---|---|")
    for k, name in enumerate(names):
        print(f"| {name} | {share[k]:.1%} | {rows[False][k]:.1%} | {rows[True][k]:.1%} |")


if __name__ == "__main__":
    main()
