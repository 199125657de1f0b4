"""`geoseg train` from the command line, as the QGIS plugin and scripts drive it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from geoseg.demo_data import make_survey
from geoseg.model.bundle import load_bundle
from tests.conftest import write_config


@pytest.mark.slow
def test_train_reports_json_progress_and_writes_a_bundle(tmp_path: Path, lite0_weights: Path) -> None:
    survey = make_survey(tmp_path / "plot", size=320, seed=5)
    config = write_config(
        tmp_path / "train.yaml",
        f"""
data: {{images: [plot/survey_ortho.tif], labels: plot/survey_labels.gpkg, label_field: class,
        classes: {{1: soil, 2: crust, 3: lichen, 4: moss}}}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 128, batch_size: 2, samples_per_epoch: 6}}
""",
    )
    command = [sys.executable, "-m", "geoseg", "train", str(config), "--out", "model", "--max-steps", "3"]
    run = subprocess.run([*command, "--progress", "json"], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    train_events = [e for e in events if e["stage"] == "train"]
    assert [e["done"] for e in train_events] == [1, 2, 3]
    assert all(e["total"] == 3 for e in train_events)
    assert "bundle:" in run.stdout and "mIoU" in run.stdout
    bundle = load_bundle(tmp_path / "model")
    assert [c.name for c in bundle.meta.classes] == ["soil", "crust", "lichen", "moss"]
    assert survey.image.exists()
