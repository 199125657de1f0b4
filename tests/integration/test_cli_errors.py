"""The CLI's bad-input contract (DESIGN §3), checked by running the real `geoseg` command.

Every case makes one thing wrong in an otherwise valid run and expects: exit code 2, exactly one
non-empty line on stderr (no traceback) that names the offending file or option and says what to do,
and nothing written: no bundle, no `<out>.train`, no parent folder, no temporary file; an output
that was already there is unchanged byte for byte. Each case is a subprocess (a few seconds of
imports), so the cases share one valid base config and vary one thing each.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.errors import NotGeoreferencedWarning

from tests.conftest import make_random_bundle, shared_data

ROOT = Path(__file__).resolve().parents[2]
NB_IMAGE = ("new_brunswick", "23322E759967N_clipped_1m_1of2.tif")
NB_LABELS = ("new_brunswick", "BakerLake_2017_clipped.gpkg")
OUT = Path("models") / "nb"  # relative to the run's cwd (tmp_path); its parent must not appear either
CLI_TIMEOUT_S = 180


# --- helpers ---------------------------------------------------------------------------------------


def run_cli(cwd: Path, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geoseg", *map(str, args)],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"  # never download; only the offline case below lifts this
    env.pop("COLUMNS", None)
    return env


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``root``: equal before and after = nothing written."""
    tree: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        tree[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return tree


def assert_refused(
    result: subprocess.CompletedProcess[str], names: str | Path, fix: tuple[str, ...], before: dict, after: dict
) -> str:
    """Exit 2, one readable line naming ``names`` with one of the ``fix`` hints, and no file touched."""
    context = f"exit {result.returncode}\n--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout[-2000:]}"
    assert result.returncode == 2, context
    assert "Traceback" not in result.stderr, context
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected exactly one line on stderr\n{context}"
    line = lines[0]
    assert line.startswith("geoseg: error: "), context
    assert str(names) in line, f"the message does not name {names}\n{context}"
    assert any(hint.lower() in line.lower() for hint in fix), f"no hint among {fix} in the message\n{context}"
    assert after == before, f"files changed: {sorted(set(after) ^ set(before)) or 'contents'}\n{context}"
    return line


def base_config(tmp_path: Path, weights: Path, name: str = "config.yaml", **sections: dict) -> Path:
    """The valid New Brunswick config (tile 1, its polygons, the local Lite0 weights), sections overridden."""
    raw = {
        "data": {
            "images": [str(shared_data(*NB_IMAGE))],
            "labels": str(shared_data(*NB_LABELS)),
            "label_field": "Quatreclasses",
            "classes": {1: "forest", 2: "water", 3: "road", 4: "building"},
        },
        "model": {"encoder": "tu-efficientnet_lite0", "weights": str(weights)},
        "train": {"tile_size": 128, "batch_size": 2},
    }
    for section, values in sections.items():
        raw[section].update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_refused(
    tmp_path: Path,
    config: Path,
    names: str | Path,
    fix: tuple[str, ...],
    *extra: str,
    env: dict[str, str] | None = None,
    skip: tuple[Path, ...] = (),
) -> str:
    before = snapshot(tmp_path, skip)
    result = run_cli(tmp_path, "train", config, "--out", OUT, "--max-steps", "1", "--progress", "none", *extra, env=env)
    out = tmp_path / OUT
    assert not out.with_name(out.name + ".train").exists(), result.stderr
    return assert_refused(result, names, fix, before, snapshot(tmp_path, skip))


def write_far_polygon(path: Path) -> Path:
    """A 100 m square of class 1 in the image's CRS (EPSG:2953), ~350 km from the New Brunswick tiles."""
    square = [[2000000, 7300000], [2000100, 7300000], [2000100, 7300100], [2000000, 7300100], [2000000, 7300000]]
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2953"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"class": 1},
                        "geometry": {"type": "Polygon", "coordinates": [square]},
                    }
                ],
            }
        )
    )
    return path


# --- geoseg train ----------------------------------------------------------------------------------


@pytest.mark.parametrize("labels_kind", ["far_polygon", "other_continent"])
def test_train_labels_not_overlapping_the_image(tmp_path: Path, lite0_weights: Path, labels_kind: str) -> None:
    if labels_kind == "far_polygon":
        labels, field = write_far_polygon(tmp_path / "far.geojson"), "class"
    else:  # Atlanta buildings (EPSG:32616); partialDec is 1.0 on them, i.e. class 1 "forest"
        labels, field = shared_data("spacenet_atlanta", "geotiff_labels.geojson"), "partialDec"
    config = base_config(tmp_path, lite0_weights, data={"labels": str(labels), "label_field": field})
    train_refused(tmp_path, config, labels, ("overlap",))


def test_train_image_without_crs(tmp_path: Path, lite0_weights: Path) -> None:
    with rasterio.open(shared_data(*NB_IMAGE)) as src:
        pixels = src.read()
    image = tmp_path / "no_crs.tif"
    profile = {"driver": "GTiff", "count": 3, "dtype": "uint8", "width": pixels.shape[2], "height": pixels.shape[1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # that is the point
        with rasterio.open(image, "w", **profile) as dst:
            dst.write(pixels)
    config = base_config(tmp_path, lite0_weights, data={"images": [str(image)]})
    train_refused(tmp_path, config, image, ("assign one", "georeference"))


def test_train_image_with_no_valid_pixel_under_the_labels(tmp_path: Path, lite0_weights: Path) -> None:
    """A float copy of the tile that is NaN everywhere (no nodata tag): nothing to learn from."""
    with rasterio.open(shared_data(*NB_IMAGE)) as src:
        profile = src.profile | {"dtype": "float32", "nodata": None}
        shape = (src.count, src.height, src.width)
    image = tmp_path / "all_nan.tif"
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(np.full(shape, np.nan, dtype=np.float32))
    config = base_config(tmp_path, lite0_weights, data={"images": [str(image)]})
    train_refused(tmp_path, config, image, ("no valid pixel under the labels", "nodata value"))


def test_train_label_field_that_does_not_exist(tmp_path: Path, lite0_weights: Path) -> None:
    config = base_config(tmp_path, lite0_weights, data={"label_field": "nope"})
    line = train_refused(tmp_path, config, shared_data(*NB_LABELS), ("Quatreclasses",))  # lists the real fields
    assert "nope" in line


def test_train_bands_beyond_the_band_count(tmp_path: Path, lite0_weights: Path) -> None:
    config = base_config(tmp_path, lite0_weights, data={"bands": [1, 2, 5]})
    line = train_refused(tmp_path, config, shared_data(*NB_IMAGE), ("3 band",))
    assert "data.bands" in line


@pytest.mark.parametrize("damage", ["truncated", "random_bytes"])
def test_train_corrupted_geotiff(tmp_path: Path, lite0_weights: Path, damage: str) -> None:
    image = tmp_path / f"{damage}.tif"
    if damage == "truncated":
        data = shared_data(*NB_IMAGE).read_bytes()
        image.write_bytes(data[: int(len(data) * 0.6)])
    else:
        image.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    config = base_config(tmp_path, lite0_weights, data={"images": [str(image)]})
    train_refused(tmp_path, config, image, ("re-export", "complete geotiff"))


def test_train_existing_output_without_overwrite(tmp_path: Path, lite0_weights: Path) -> None:
    out = tmp_path / OUT
    out.mkdir(parents=True)
    (out / "marker.txt").write_text("an earlier bundle\n")
    config = base_config(tmp_path, lite0_weights)
    train_refused(tmp_path, config, OUT, ("--overwrite",))  # snapshot: marker and folder unchanged
    assert (out / "marker.txt").read_text() == "an earlier bundle\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible, so --device cuda is valid here")
def test_train_cuda_without_gpu(tmp_path: Path, lite0_weights: Path) -> None:
    config = base_config(tmp_path, lite0_weights)
    train_refused(tmp_path, config, "--device", ("--device cpu",), "--device", "cuda")


@pytest.mark.parametrize("problem", ["unknown_key", "invalid_yaml", "missing_file"])
def test_train_bad_config(tmp_path: Path, lite0_weights: Path, problem: str) -> None:
    if problem == "unknown_key":
        config = base_config(tmp_path, lite0_weights, train={"tile_sise": 256})
        line = train_refused(tmp_path, config, config, ("allowed",))
        assert "tile_sise" in line and "tile_size" in line
    elif problem == "invalid_yaml":
        config = tmp_path / "config.yaml"
        config.write_text("data:\n  images: [tile.tif\n  labels: labels.gpkg\n")
        line = train_refused(tmp_path, config, config, ("fix the syntax",))
        assert "line " in line
    else:
        train_refused(tmp_path, tmp_path / "missing.yaml", tmp_path / "missing.yaml", ("check the path",))


def offline_env(hf_home: Path) -> dict[str, str]:
    """HF_HUB_OFFLINE unset and an empty cache: geoseg must find out by itself that it cannot download."""
    env = cli_env()
    env.pop("HF_HUB_OFFLINE")
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE"):
        env.pop(key, None)
    env["HF_HOME"] = str(hf_home)
    env["TORCH_HOME"] = str(hf_home / "torch")
    if _hub_reachable(env.get("HF_ENDPOINT", "https://huggingface.co")):
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # online machine: a closed port stands in for no network
    return env


def _hub_reachable(endpoint: str) -> bool:
    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=2):
            return True
    except OSError:
        return False


def test_train_pretrained_weights_offline(tmp_path: Path, lite0_weights: Path) -> None:
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    config = base_config(tmp_path, lite0_weights, model={"encoder": "resnet18", "weights": "imagenet"})
    line = train_refused(tmp_path, config, "resnet18", ("model.weights",), env=offline_env(hf_home), skip=(hf_home,))
    assert "offline" in line or "unreachable" in line


def test_build_unet_offline_fails_fast(tmp_path: Path) -> None:
    """The model-building step alone, timed inside its own process (imports excluded)."""
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    script = (
        "import json, time\n"
        "from geoseg.errors import WeightsUnavailableError\n"
        "from geoseg.model.build import build_unet\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    build_unet('resnet18', 3, 2, 'imagenet')\n"
        "    raised = None\n"
        "except WeightsUnavailableError as exc:\n"
        "    raised = str(exc)\n"
        "print(json.dumps({'elapsed': time.perf_counter() - start, 'raised': raised}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=offline_env(hf_home),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"build_unet offline: {report['elapsed']:.2f} s")
    assert report["raised"] is not None, "build_unet should raise WeightsUnavailableError offline"
    assert "model.weights" in report["raised"]
    assert report["elapsed"] < 5.0


# --- geoseg evaluate -------------------------------------------------------------------------------


def write_prediction(path: Path) -> Path:
    """A class map on tile 1's grid (all class 1), as `geoseg infer` would write it."""
    with rasterio.open(shared_data(*NB_IMAGE)) as src:
        profile = {**src.profile, "count": 1, "nodata": 255}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, profile["height"], profile["width"]), dtype="uint8"))
    return path


def test_evaluate_missing_prediction(tmp_path: Path) -> None:
    labels = shared_data(*NB_LABELS)
    missing = tmp_path / "missing_classes.tif"
    before = snapshot(tmp_path)
    result = run_cli(
        tmp_path, "evaluate", missing, labels, "--label-field", "Quatreclasses", "--json", "reports/scores.json"
    )
    assert_refused(result, missing, ("check the path",), before, snapshot(tmp_path))


def test_evaluate_polygons_without_a_label_field_name_the_option(tmp_path: Path) -> None:
    """The message names what an evaluate user types (--label-field), not the training config's key."""
    prediction = tmp_path / "classes.tif"
    with rasterio.open(shared_data(*NB_IMAGE)) as src:
        profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": 255}
        with rasterio.open(prediction, "w", **profile) as dst:
            dst.write(np.ones((1, src.height, src.width), dtype=np.uint8))
    before = snapshot(tmp_path)
    result = run_cli(tmp_path, "evaluate", prediction, shared_data(*NB_LABELS))
    line = assert_refused(result, NB_LABELS[1], ("--label-field",), before, snapshot(tmp_path))
    assert "data.label_field" not in line


@pytest.mark.parametrize("labels_kind", ["far_polygon", "other_continent_raster"])
def test_evaluate_labels_not_overlapping(tmp_path: Path, labels_kind: str) -> None:
    prediction = write_prediction(tmp_path / "pred_classes.tif")
    if labels_kind == "far_polygon":
        labels = write_far_polygon(tmp_path / "far.geojson")
        extra = ["--label-field", "class"]
    else:
        labels, extra = shared_data("spacenet_atlanta", "sample_geotiff.tif"), []
    before = snapshot(tmp_path)
    result = run_cli(tmp_path, "evaluate", prediction, labels, *extra, "--json", "scores.json")
    assert_refused(result, labels, ("overlap", "covers"), before, snapshot(tmp_path))


def test_evaluate_existing_json_without_overwrite(tmp_path: Path) -> None:
    prediction = write_prediction(tmp_path / "pred_classes.tif")
    scores = tmp_path / "scores.json"
    scores.write_text('{"miou": 0.5}\n')
    before = snapshot(tmp_path)
    result = run_cli(
        tmp_path, "evaluate", prediction, shared_data(*NB_LABELS), "--label-field", "Quatreclasses", "--json", scores
    )
    assert_refused(result, scores, ("--overwrite",), before, snapshot(tmp_path))
    assert scores.read_text() == '{"miou": 0.5}\n'


@pytest.mark.parametrize(
    ("option", "value", "hint"),
    [
        ("--overlap", "500", "less than the tile"),
        ("--precision", "half", "one of"),
        ("--scheduler", "nonsense", "scheduler address"),
    ],
)
def test_batch_settings_wrong_for_every_mosaic_stop_it_before_it_starts(
    tmp_path: Path, option: str, value: str, hint: str
) -> None:
    bundle = make_random_bundle(tmp_path / "bundle", [1, 2, 3], n_classes=2, tile=128, overlap=16)
    mosaic = shared_data(*NB_IMAGE)
    before = snapshot(tmp_path)
    result = run_cli(tmp_path, "batch", mosaic, "--model", bundle, "--out-dir", tmp_path / "survey", option, value)
    assert_refused(result, option, (hint,), before, snapshot(tmp_path))
