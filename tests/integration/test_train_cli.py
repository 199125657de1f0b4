"""`geoseg train` from the command line, as the QGIS plugin and scripts drive it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from geoseg.demo_data import make_survey
from geoseg.model.bundle import load_bundle
from tests.conftest import signal_once_ready, write_config


@pytest.mark.slow
def test_train_reports_json_progress_and_writes_a_bundle(tmp_path: Path, lite0_weights: Path) -> None:
    survey = make_survey(tmp_path / "plot", size=320, seed=5)
    config = write_config(
        tmp_path / "train.yaml",
        f"""
data: {{images: [plot/survey_ortho.tif], labels: plot/survey_labels.gpkg, label_field: class,
        classes: {{1: soil, 2: crust, 3: lichen, 4: moss}}}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 128, batch_size: 2, samples_per_epoch: 6, refit: true}}
""",
    )
    command = [sys.executable, "-m", "geoseg", "train", str(config), "--out", "model", "--max-steps", "3"]
    run = subprocess.run([*command, "--progress", "json"], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    train_events = [e for e in events if e["stage"] == "train"]
    assert [e["done"] for e in train_events] == [1, 2, 3]
    assert all(e["total"] == 3 for e in train_events)
    refit_events = [e for e in events if e["stage"] == "refit"]  # keep: final, so as long as the first run
    assert refit_events and refit_events[-1]["done"] == refit_events[-1]["total"] == 3
    assert "bundle:" in run.stdout and "mIoU" in run.stdout
    bundle = load_bundle(tmp_path / "model")
    assert [c.name for c in bundle.meta.classes] == ["soil", "crust", "lichen", "moss"]
    assert survey.image.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_says_how_to_resume_and_resumes(tmp_path: Path, lite0_weights: Path, sent: int) -> None:
    """Ctrl-C (or SLURM's SIGTERM) mid-training: exit 130, one line pointing at --resume, no bundle; then
    --resume finishes and writes the bundle."""
    make_survey(tmp_path / "plot", size=320, seed=5)
    config = write_config(tmp_path / "train.yaml", f"""
data: {{images: [plot/survey_ortho.tif], labels: plot/survey_labels.gpkg, label_field: class,
        classes: {{1: soil, 2: crust, 3: lichen, 4: moss}}}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
train: {{tile_size: 64, batch_size: 2, samples_per_epoch: 8, tta: false}}
""")  # fmt: skip
    command = [sys.executable, "-m", "geoseg", "train", str(config), "--out", "model", "--progress", "json"]
    code, _, rest = signal_once_ready([*command, "--max-steps", "5000"], tmp_path, "train", 10, sent)
    assert code == 130, rest
    assert rest.strip().splitlines()[-1].startswith("geoseg: interrupted; rerun the same command with --resume"), rest
    assert not (tmp_path / "model").exists() and (tmp_path / "model.train" / "checkpoints" / "last.ckpt").exists()
    resumed = subprocess.run([*command, "--max-steps", "14", "--resume"], cwd=tmp_path, capture_output=True,
                             text=True, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert load_bundle(tmp_path / "model").meta.classes[0].name == "soil"
