"""Every file in examples/ runs, with short settings (the QGIS one runs in tests/qgis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.demo_data import make_survey
from tests.conftest import SHARED_DATA, make_random_bundle, shared_data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GEOSEG = Path(sys.executable).with_name("geoseg")  # the environment's own command, as a user's shell finds it


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=dict(os.environ, **env),
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory):
    return make_survey(tmp_path_factory.mktemp("survey"), size=512, seed=3)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_bundle(tmp_path_factory.mktemp("bundle") / "model", [1, 2, 3], n_classes=4, tile=128,
                              overlap=16, resolution=0.01)  # fmt: skip


def test_the_readme_links_every_example() -> None:
    listed = (EXAMPLES / "README.md").read_text()
    files = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh"))
    assert files and all(f"`{name}`" in listed for name in files)
    assert "examples/" in (EXAMPLES.parent / "README.md").read_text()


@pytest.mark.slow
def test_train_and_segment_on_real_tiles(tmp_path: Path, lite0_weights: Path) -> None:
    shared_data("new_brunswick")
    work = tmp_path / "run"
    run(["bash", str(EXAMPLES / "train_and_segment.sh"), str(SHARED_DATA), str(work)], GEOSEG=str(GEOSEG),
        STEPS="2", ENCODER="tu-efficientnet_lite0", WEIGHTS=str(lite0_weights))  # fmt: skip
    scores = json.loads((work / "scores.json").read_text())
    assert 0.0 <= scores["miou"] <= 1.0 and len(scores["per_class"]) == 4
    tile2 = SHARED_DATA / "new_brunswick" / "23322E759967N_clipped_1m_2of2.tif"
    with rasterio.open(work / f"{tile2.stem}_classes.tif") as classes, rasterio.open(tile2) as mosaic:
        assert (classes.crs, classes.transform, classes.shape) == (mosaic.crs, mosaic.transform, mosaic.shape)
    assert (work / f"{tile2.stem}_polygons.gpkg").stat().st_size > 0


def test_notebook_api_crops_segments_counts_and_draws(tmp_path: Path, survey, bundle: Path) -> None:
    out = tmp_path / "api"
    printed = run([sys.executable, str(EXAMPLES / "notebook_api.py"), str(bundle), str(survey.image), str(out)])
    assert "crop_classes.png" in printed.stdout
    assert (out / "crop_classes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with rasterio.open(out / "crop_classes.tif") as ds:
        classes = ds.read(1)
        assert ds.shape == (256, 256)  # the central half of the 512² survey
    rows = (out / "crop_areas.csv").read_text().splitlines()
    assert rows[0] == "class,pixels,area,share_%" and len(rows) == 5
    counted = sum(int(r.split(",")[1]) for r in rows[1:])
    assert counted == int((classes != 255).sum()) > 0


@pytest.mark.parametrize("script", ["cluster_slurm.py", "cluster_kubernetes.py"])
def test_cluster_recipes_run_their_batch_on_a_local_cluster(script: str, tmp_path: Path, survey, bundle: Path) -> None:
    helped = run([sys.executable, str(EXAMPLES / script), "--help"])  # no dask-jobqueue or -kubernetes needed
    assert "--local" in helped.stdout
    out = tmp_path / "results"
    workers = "--jobs" if script == "cluster_slurm.py" else "--workers"
    run([sys.executable, str(EXAMPLES / script), str(survey.image), "--model", str(bundle), "--out-dir", str(out),
         workers, "1", "--local"])  # fmt: skip
    report = json.loads((out / "survey_report.json").read_text())
    assert json.dumps(report).count(survey.image.stem) >= 1
    assert (out / f"{survey.image.stem}_classes.tif").is_file()


def test_export_to_deepness_runs_the_onnx_file_both_ways(tmp_path: Path, bundle: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install 'geoseg[onnx]'")
    mosaic = shared_data("uav_fotomap", "dummy_fotomap_small.tif")
    out = tmp_path / "onnx"
    printed = run(["bash", str(EXAMPLES / "export_to_deepness.sh"), str(bundle), str(mosaic), str(out)],
                  GEOSEG=str(GEOSEG), PYTHON=sys.executable)  # fmt: skip
    assert (out / "model.onnx").stat().st_size > 1_000_000
    assert "'model_type': 'Segmentor'" in printed.stdout and "first tile:" in printed.stdout
    with rasterio.open(out / f"{mosaic.stem}_classes.tif") as ds:
        assert len(np.unique(ds.read(1))) > 1
