"""The training recipe in short real runs: the learning-rate schedule, the weights' average, refit, and the
bundle's record of it all, which `geoseg infer` follows for test-time augmentation."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import lightning as L
import pytest
import rasterio

from geoseg.config import load_config
from geoseg.model.bundle import load_bundle
from geoseg.train import train
from tests.conftest import make_random_bundle, shared_data, write_config


class LearningRates(L.Callback):
    """The learning rate each optimizer step used, as the optimizer saw it."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *_: object) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def _config(tmp_path: Path, lite0_weights: Path, train_keys: str) -> Path:
    tile = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    labels = shared_data("new_brunswick", "BakerLake_2017_clipped.gpkg")
    return write_config(
        tmp_path / "nb.yaml",
        f"""
data:
  images: [{tile}]
  labels: {labels}
  label_field: Quatreclasses
  classes: {{1: forest, 2: water, 3: road, 4: building}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 64, batch_size: 2, samples_per_epoch: 4, lr: 0.001, {train_keys}}}
""",
    )


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["final", "best"])
def test_schedule_warms_up_and_decays_and_refit_repeats_the_kept_length(
    tmp_path: Path, lite0_weights: Path, keep: str
) -> None:
    cfg = load_config(_config(tmp_path, lite0_weights, f"steps: 8, warmup: 0.25, refit: true, ema: 0.9, keep: {keep}"))
    rates = LearningRates()
    result = train(cfg, tmp_path / "bundle", emit=lambda _: None, progress_bar=False, callbacks=[rates])
    main_run = rates.rates[:8]
    assert main_run[0] == pytest.approx(0.0005) and main_run[1] == pytest.approx(0.001)  # two warm-up steps
    assert main_run[2] == pytest.approx(0.001)
    assert all(b < a for a, b in pairwise(main_run[2:]))  # then cosine decay
    recipe = load_bundle(result.bundle).meta.extra["recipe"]
    assert recipe["steps"] == 8 and recipe["refit"] is True and recipe["ema"] == 0.9 and recipe["keep"] == keep
    best = recipe["best_step"]
    assert best in (2, 4, 6, 8)  # validation after every epoch of two steps
    # The refit repeats the schedule on training + validation regions, as long as the run whose weights are kept:
    # the whole run (keep: final), or up to its best validation step (keep: best).
    refit_rates = rates.rates[8:]
    expected = 8 if keep == "final" else best
    assert len(refit_rates) == expected == result.steps
    assert refit_rates == pytest.approx(main_run[:expected])
    assert result.scores is not None  # the validation scores of the run that held the validation region out


@pytest.mark.slow
def test_max_steps_caps_the_recipe_and_the_schedule_fits_the_cap(tmp_path: Path, lite0_weights: Path) -> None:
    cfg = load_config(_config(tmp_path, lite0_weights, "warmup: 0.5, refit: false"))
    rates = LearningRates()
    result = train(cfg, tmp_path / "bundle", max_steps=4, emit=lambda _: None, progress_bar=False, callbacks=[rates])
    assert result.steps == 4
    assert rates.rates == pytest.approx([0.0005, 0.001, 0.001, 0.0005050], rel=1e-3)
    meta = load_bundle(result.bundle).meta
    assert meta.extra["recipe"]["steps"] == 4 and meta.tta_default is True


def test_infer_follows_the_bundle_tta_default_unless_told(tmp_path: Path) -> None:
    mosaic = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    bundle = make_random_bundle(tmp_path / "bundle", [1, 2, 3], n_classes=2, tile=128, overlap=16)
    meta_file = bundle / "geoseg.json"
    meta = json.loads(meta_file.read_text())
    meta["recipe"] = {"tta": True}
    meta_file.write_text(json.dumps(meta))
    recorded = {}
    for name, extra in {"bundle default": [], "--no-tta": ["--no-tta"]}.items():
        out = tmp_path / name.replace(" ", "_")
        command = [sys.executable, "-m", "geoseg", "infer", str(mosaic), "--model", str(bundle), "--out-dir", str(out),
                   "--no-polygons", "--progress", "none", *extra]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        with rasterio.open(out / f"{mosaic.stem}_classes.tif") as ds:
            recorded[name] = json.loads(ds.tags()["GEOSEG_INPUT"])["tta"]
    assert recorded == {"bundle default": True, "--no-tta": False}


@pytest.mark.slow
def test_torchgeo_weights_train_with_their_own_normalization(tmp_path: Path) -> None:
    """A 6-band Landsat-like raster trained from remote-sensing weights (a local file in torch's hub cache)."""
    import numpy as np
    import timm
    import torch
    from rasterio.transform import from_origin

    from geoseg.model import remote_sensing

    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": 160, "height": 160, "crs": "EPSG:32618",
               "transform": from_origin(500_000, 4_000_000, 30, 30)}  # fmt: skip
    image = rng.integers(0, 255, (6, 160, 160), dtype=np.uint8)
    with rasterio.open(tmp_path / "landsat.tif", "w", count=6, dtype="uint8", **profile) as ds:
        ds.write(image)
    with rasterio.open(tmp_path / "labels.tif", "w", count=1, dtype="uint8", nodata=255, **profile) as ds:
        ds.write((image[3] > 127).astype(np.uint8), 1)
    weights = "torchgeo:ResNet18_Weights.LANDSAT_ETM_SR_MOCO"
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        cache = remote_sensing.describe(weights).cache_file
        cache.parent.mkdir(parents=True)
        torch.save(timm.create_model("resnet18", in_chans=6, num_classes=0).state_dict(), cache)
        config = write_config(tmp_path / "c.yaml", f"""
data: {{images: [landsat.tif], labels: labels.tif, classes: {{0: dry, 1: wet}}}}
model: {{encoder: resnet18, weights: "{weights}"}}
train: {{tile_size: 64, batch_size: 2, steps: 2, tta: false}}
""")  # fmt: skip
        result = train(load_config(config), tmp_path / "bundle", emit=lambda _: None, progress_bar=False)
    finally:
        torch.hub.set_dir(previous)
    meta = load_bundle(result.bundle).meta
    assert meta.normalization.scale == [(0.0, 65535.0)] * 6
    np.testing.assert_allclose(meta.normalization.std, [255 / 65535] * 6)  # the network sees x / 255
    assert meta.extra["training"]["weights"] == weights
