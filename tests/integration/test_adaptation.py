"""Energy-based adaptation end to end on CPU: train on new_brunswick tile 1, adapt to tile 2 for a few steps.

The source label file (BakerLake GPKG) also covers tile 2, so "target labels are never read" is a real
question here: the only label reader training calls is watched, and must see tile 1's grid only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import geoseg.data.prepare as prepare
from geoseg.config import load_config
from geoseg.errors import InputError
from geoseg.io.raster import read_info
from geoseg.train import train
from tests.conftest import shared_data, write_config

pytestmark = pytest.mark.slow


def adaptation_config(tmp_path: Path, targets: list[Path], weight: float = 0.01) -> Path:
    image = shared_data("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
    labels = shared_data("new_brunswick", "BakerLake_2017_clipped.gpkg")
    return write_config(
        tmp_path / "adapt.yaml",
        f"""
data:
  images: [{image}]
  labels: {labels}
  label_field: Quatreclasses
  classes: {{1: forest, 2: water, 3: road, 4: building}}
model: {{encoder: tu-efficientnet_lite0, weights: null}}
train: {{tile_size: 64, batch_size: 2, samples_per_epoch: 6, epochs: 1, seed: 0, refit: false}}
adaptation:
  targets: {json.dumps([str(t) for t in targets])}
  weight: {weight}
""",
    )


def test_adaptation_trains_end_to_end_and_never_reads_target_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = shared_data("new_brunswick", "23322E759967N_clipped_1m_2of2.tif")
    target_grid = read_info(target).grid
    labelled_grids = []
    read_labels = prepare.labels_on_grid

    def watched(path, field, classes, grid, background=None):  # type: ignore[no-untyped-def]
        assert not grid.same_grid(target_grid), "training read labels on the target mosaic's grid"
        labelled_grids.append(grid)
        return read_labels(path, field, classes, grid, background)

    monkeypatch.setattr(prepare, "labels_on_grid", watched)
    cfg = load_config(adaptation_config(tmp_path, [target], weight=0.5))
    result = train(cfg, tmp_path / "adapted", max_steps=3, emit=lambda _: None, progress_bar=False)

    assert len(labelled_grids) == 1  # tile 1 only
    assert result.steps == 3
    meta = json.loads((result.bundle / "geoseg.json").read_text())
    adaptation = meta["adaptation"]
    assert adaptation["targets"] == [str(target.resolve())]
    assert adaptation["weight"] == 0.5 and adaptation["method"].startswith("joint energy-based")
    assert isinstance(adaptation["final_energy_gap"], float)
    low = meta["train_stats"]["low_confidence"]
    assert 0.0 <= low["share"] <= 1.0 and low["threshold"] == 0.5
    logged = (tmp_path / "adapted.train" / "logs" / "metrics.csv").read_text()
    assert "train/energy_gap_step" in logged.splitlines()[0]


def test_a_target_that_does_not_fit_is_refused_before_training(tmp_path: Path) -> None:
    single_band = shared_data("spacenet_atlanta", "sample_geotiff.tif")  # 1 band, uint16
    cfg = load_config(adaptation_config(tmp_path, [single_band]))
    with pytest.raises(InputError, match=r"sample_geotiff\.tif"):
        train(cfg, tmp_path / "never", max_steps=1, emit=lambda _: None, progress_bar=False)
    assert not (tmp_path / "never").exists()
