"""`geoseg batch` on real Dask processes on loopback: identical outputs, dead workers, interrupts, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import torch

from geoseg.demo_data import make_survey
from geoseg.infer.run import InferOptions, segment_mosaic
from geoseg.progress import Progress, ProgressMode
from tests.conftest import make_random_bundle, noise_mosaic, shared_data
from tests.dask_cluster import loopback_cluster

pytestmark = pytest.mark.slow

QUIET = Progress(ProgressMode.none)
BLOCK = "256"  # small blocks: many tasks, so a worker can be killed mid-run


def batch_command(out: Path, bundle: Path, *inputs: Path | str, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "geoseg", "batch", *map(str, inputs), "--model", str(bundle), "--out-dir", str(out),
            "--block-size", BLOCK, *extra]  # fmt: skip


def run_batch_cli(out: Path, bundle: Path, *inputs, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = batch_command(out, bundle, *inputs, extra=("--progress", "none", *extra))
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)


def classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def manifest(out: Path) -> dict[str, dict]:
    return {m["id"]: m for m in json.loads((out / "geoseg_batch.json").read_text())["mosaics"]}


def partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".partial")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_bundle(tmp_path_factory.mktemp("bundle") / "b", [1, 2, 3], n_classes=3, tile=128, overlap=16)


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two generated surveys (same file name in two folders, as ODM writes them) and two real rasters."""
    root = tmp_path_factory.mktemp("survey")
    generated = [make_survey(root / f"plot{i}", size=768, seed=i).image for i in (1, 2)]
    real = [shared_data("landsat_collar", "RGB.byte.tif"), shared_data("building_tiles", "tiled_image_1.tif")]
    return generated + real


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory, mosaics: list[Path], bundle: Path) -> dict[str, np.ndarray]:
    """Each mosaic alone through `geoseg infer`'s engine, on the synchronous scheduler, by output name."""
    out = tmp_path_factory.mktemp("alone")
    names = [f"plot1__{mosaics[0].stem}", f"plot2__{mosaics[1].stem}", "RGB.byte", "tiled_image_1"]
    maps = {}
    for name, mosaic in zip(names, mosaics, strict=True):
        segment_mosaic(mosaic, bundle, out / f"{name}.tif", InferOptions(scheduler="sync"), progress=QUIET)
        maps[name] = classes(out / f"{name}.tif")
    return maps


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with loopback_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def assert_outputs_match(out: Path, expected: dict[str, np.ndarray]) -> None:
    for name, reference in expected.items():
        assert np.array_equal(classes(out / f"{name}_classes.tif"), reference), name
    assert partial_files(out) == []


def test_batch_on_a_cluster_matches_infer_and_reports_the_survey(
    tmp_path: Path, cluster, mosaics: list[Path], bundle: Path, expected: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    result = run_batch_cli(out, bundle, *mosaics, extra=("--scheduler", cluster.address, "--merge-polygons"))
    assert result.returncode == 0, result.stderr
    assert_outputs_match(out, expected)
    records = manifest(out)
    assert sorted(records) == sorted(expected)
    assert {r["status"] for r in records.values()} == {"done"}
    for record in records.values():
        assert Path(record["outputs"]["polygons"]).exists()
        assert record["fingerprint"]["size"] == Path(record["input"]).stat().st_size

    report = json.loads((out / "survey_report.json").read_text())
    done = [m for m in report["mosaics"] if m["valid_area_m2"] is not None]
    for cls in report["total"]["classes"]:
        per_mosaic = sum(c["area_m2"] for m in done for c in m["classes"] if c["class_id"] == cls["class_id"])
        assert cls["area_m2"] == pytest.approx(per_mosaic)
    assert report["total"]["valid_area_m2"] == pytest.approx(sum(m["valid_area_m2"] for m in done))
    csv_rows = (out / "survey_report.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(mosaics) + 1 and csv_rows[-1].startswith("TOTAL")

    merged = pyogrio.read_dataframe(out / "survey_polygons.gpkg")
    singles = [pyogrio.read_dataframe(Path(r["outputs"]["polygons"])) for r in records.values()]
    assert len(merged) == sum(len(s) for s in singles)
    assert set(merged["mosaic"]) == set(records)


def test_a_worker_killed_mid_run_does_not_change_the_outputs(
    tmp_path: Path, mosaics: list[Path], bundle: Path, expected: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    with loopback_cluster(tmp_path / "cluster") as running:
        command = batch_command(out, bundle, *mosaics, extra=("--scheduler", running.address, "--progress", "json"))
        batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done, total = _wait_for_progress(batch, fraction=0.2)
        assert batch.poll() is None and done < total, "the batch finished before a worker could be killed"
        running.kill_worker(0)
        _, stderr = batch.communicate(timeout=600)
    assert batch.returncode == 0, stderr
    assert_outputs_match(out, expected)
    assert {r["status"] for r in manifest(out).values()} == {"done"}


def test_interrupted_batch_resumes_without_redoing_finished_mosaics(
    tmp_path: Path, mosaics: list[Path], bundle: Path, expected: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    command = batch_command(out, bundle, *mosaics, extra=("--workers", "2", "--progress", "json"))
    # a test runner started in the background (nohup …  &) ignores SIGINT, and children inherit that
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    finished = _wait_for_finished_mosaics(out, batch, at_least=1)
    assert len(finished) < len(mosaics), "the batch finished before it could be interrupted"
    batch.send_signal(signal.SIGINT)
    _, stderr = batch.communicate(timeout=120)
    assert batch.returncode == 130, stderr
    assert partial_files(out) == []
    records = manifest(out)
    finished = {i for i, r in records.items() if r["status"] == "done"}
    assert finished and len(finished) < len(mosaics)
    untouched = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for i in finished for p in out.glob(f"{i}_*")}

    again = run_batch_cli(out, bundle, *mosaics, extra=("--workers", "2", "--resume"))
    assert again.returncode == 0, again.stderr
    assert f"{len(finished)} already done (skipped)" in again.stdout
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in untouched} == untouched
    assert_outputs_match(out, expected)

    refused = run_batch_cli(out, bundle, *mosaics)
    assert refused.returncode == 2
    assert "--resume" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_bad_inputs_are_recorded_and_the_others_complete(
    tmp_path: Path, cluster, mosaics: list[Path], bundle: Path, expected: dict[str, np.ndarray]
) -> None:
    corrupt = tmp_path / "damaged" / "corrupt.tif"
    corrupt.parent.mkdir()
    shutil.copy(mosaics[0], corrupt)
    size = corrupt.stat().st_size
    with open(corrupt, "r+b") as stream:  # the header survives; the compressed tiles in the middle do not
        stream.seek(size // 3)
        stream.write(os.urandom(size // 3))
    single_band = shared_data("spacenet_atlanta", "sample_geotiff.tif")
    listing = tmp_path / "mosaics.txt"
    listing.write_text("\n".join(str(p) for p in [mosaics[2], corrupt, single_band, tmp_path / "missing.tif"]) + "\n")

    out = tmp_path / "out"
    result = run_batch_cli(out, bundle, listing, mosaics[3], extra=("--scheduler", cluster.address))
    assert result.returncode == 3, result.stderr
    records = manifest(out)
    assert records["RGB.byte"]["status"] == records["tiled_image_1"]["status"] == "done"
    failed = {i: r["reason"] for i, r in records.items() if r["status"] == "failed"}
    assert sorted(failed) == ["corrupt", "missing", "sample_geotiff"]
    assert "band" in failed["sample_geotiff"]
    assert "does not exist" in failed["missing"]
    for name in failed:
        assert f"failed: {name}" in result.stdout
        assert not list(out.glob(f"{name}_*"))
    assert partial_files(out) == []
    for name in ("RGB.byte", "tiled_image_1"):
        assert np.array_equal(classes(out / f"{name}_classes.tif"), expected[name])


def _wait_for_progress(process: subprocess.Popen, fraction: float, timeout: float = 300) -> tuple[int, int]:
    """Read --progress json lines until the given share of blocks is done."""
    deadline = time.monotonic() + timeout
    for line in process.stderr:
        if time.monotonic() > deadline:
            break
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event["stage"] == "batch" and event["done"] >= fraction * event["total"] and event["done"] > 0:
            return event["done"], event["total"]
    raise AssertionError("no progress from the batch")


def _wait_for_finished_mosaics(out: Path, process: subprocess.Popen, at_least: int, timeout: float = 300) -> set:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "geoseg_batch.json").exists():
            done = {i for i, r in manifest(out).items() if r["status"] == "done"}
            if len(done) >= at_least:
                return done
        time.sleep(0.05)
    raise AssertionError(f"no mosaic finished (exit code {process.poll()})")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so its workers could use cuda")
def test_the_device_is_resolved_by_the_workers_not_the_client(tmp_path: Path, cluster, mosaics: list[Path],
                                                               bundle: Path) -> None:  # fmt: skip
    """From a login node without a GPU, `--device cuda` is the cluster's business: not refused up front; here
    the workers have no GPU either, so each mosaic fails with the worker's reason and the batch exits 3."""
    out = tmp_path / "out"
    result = run_batch_cli(out, bundle, mosaics[2], extra=("--scheduler", cluster.address, "--device", "cuda"))
    assert result.returncode == 3, result.stderr
    (record,) = manifest(out).values()
    assert record["status"] == "failed" and "no CUDA GPU is visible" in record["reason"]
    assert partial_files(out) == [] and not (out / "RGB.byte_classes.tif").exists()


def test_device_auto_from_a_client_that_sees_no_gpu_runs_on_the_workers(
    tmp_path: Path, cluster, mosaics: list[Path], bundle: Path, expected: dict[str, np.ndarray]
) -> None:
    """`--device auto --precision auto` from a client with no GPU visible: the workers choose (here the CPU),
    and the class map is the one `geoseg infer` makes."""
    out = tmp_path / "out"
    command = batch_command(out, bundle, mosaics[2], extra=("--scheduler", cluster.address, "--device", "auto",
                                                            "--precision", "auto", "--progress", "none"))  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = manifest(out).values()
    assert record["status"] == "done" and record["settings"]["precision"] == "auto", record
    assert np.array_equal(classes(out / "RGB.byte_classes.tif"), expected["RGB.byte"])


def test_resume_reruns_a_mosaic_when_more_is_asked_and_keeps_foreign_outputs(tmp_path: Path, cluster,
                                                                            mosaics: list[Path],
                                                                            bundle: Path) -> None:  # fmt: skip
    out = tmp_path / "out"
    first = run_batch_cli(out, bundle, mosaics[2], extra=("--scheduler", cluster.address, "--no-polygons"))
    assert first.returncode == 0, first.stderr
    again = run_batch_cli(out, bundle, mosaics[2], extra=("--scheduler", cluster.address, "--no-polygons", "--resume"))
    assert again.returncode == 0 and "1 already done (skipped)" in again.stdout, again.stdout + again.stderr
    more = run_batch_cli(out, bundle, mosaics[2], extra=("--scheduler", cluster.address, "--no-polygons", "--resume",
                                                         "--confidence"))  # fmt: skip
    assert more.returncode == 0 and "1 mosaic(s) done" in more.stdout, more.stdout + more.stderr
    assert (out / "RGB.byte_confidence.tif").is_file()
    # an output folder whose outputs no manifest explains: --resume does not overwrite them
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "RGB.byte_classes.tif").write_bytes(b"someone's map")
    refused = run_batch_cli(foreign, bundle, mosaics[2], extra=("--scheduler", cluster.address, "--resume"))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr, refused.stderr
    assert (foreign / "RGB.byte_classes.tif").read_bytes() == b"someone's map"


def test_ctrl_c_while_polygons_are_made_stops_at_once_and_resume_makes_them(tmp_path: Path, bundle: Path) -> None:
    """Ctrl-C while a mosaic's polygons are being made (here a noisy 2048 px map, coverage-simplified: seconds
    of work) stops the batch without waiting for them: exit 130, no temporary file, the mosaic recorded as
    interrupted; --resume then makes its polygons."""
    mosaic = noise_mosaic(tmp_path / "noise.tif", 2048)
    out = tmp_path / "out"
    command = batch_command(out, bundle, mosaic, extra=("--workers", "2", "--simplify", "0.2", "--progress", "none"))
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / "noise_classes.tif").exists() and batch.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batch.poll() is None and not (out / "noise_polygons.gpkg").exists(), "no polygon stage to interrupt"
    batch.send_signal(signal.SIGINT)
    _, stderr = batch.communicate(timeout=60)  # a hang guard; the promise (seconds) is measured, not asserted
    assert batch.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert partial_files(out) == [] and not (out / "noise_polygons.gpkg").exists()
    record = manifest(out)["noise"]
    assert record["status"] == "failed" and "--resume" in record["reason"], record

    again = run_batch_cli(out, bundle, mosaic, extra=("--workers", "2", "--simplify", "0.2", "--resume"))
    assert again.returncode == 0, again.stderr
    assert manifest(out)["noise"]["status"] == "done"
    assert pyogrio.read_info(out / "noise_polygons.gpkg")["features"] > 1000


def test_a_cluster_of_one_worker_per_gpu_pins_each_and_matches_infer(
    mosaics: list[Path], bundle: Path, expected: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """`geoseg batch --gpus` starts one worker per GPU, each seeing only its own through CUDA_VISIBLE_DEVICES.
    Here the cluster is built for two GPU ids on the CPU (the variable is then harmless), so the pinning and
    the batch through that cluster are checked without a GPU."""
    from distributed import Client

    from geoseg.batch.run import BatchOptions, run_batch
    from geoseg.infer.cluster import ClusterOptions, gpu_cluster

    with gpu_cluster(("3", "GPU-5d2c"), dashboard=False) as cluster, Client(cluster) as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        threads = [w["nthreads"] for w in client.scheduler_info()["workers"].values()]
    assert sorted(seen.values()) == ["3", "GPU-5d2c"] and threads == [1, 1]

    options = BatchOptions(infer=InferOptions(device="cpu", block_size=int(BLOCK)),
                           cluster=ClusterOptions(gpus=("0", "1")))  # fmt: skip
    summary = run_batch(mosaics, bundle, tmp_path / "out", options, QUIET)
    assert summary.exit_code == 0 and len(summary.done) == len(mosaics)
    assert_outputs_match(tmp_path / "out", expected)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (("--gpus", "all", "--scheduler", "tcp://127.0.0.1:1"), "leave out --scheduler"),
        (("--gpus", "2", "--workers", "2"), "leave out --workers"),
        (("--gpus", "two"), "'all' or a number"),
    ],
)
def test_gpus_with_conflicting_or_bad_options_is_one_line(
    mosaics: list[Path], bundle: Path, tmp_path: Path, extra: tuple[str, ...], says: str
) -> None:
    done = run_batch_cli(tmp_path / "out", bundle, mosaics[2], extra=extra)
    assert done.returncode == 2 and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpus_without_a_gpu_is_one_line(mosaics: list[Path], bundle: Path, tmp_path: Path) -> None:
    done = run_batch_cli(tmp_path / "out", bundle, mosaics[2], extra=("--gpus", "all"))
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr and "--gpus" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
