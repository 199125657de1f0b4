"""ONNX: `geoseg export`, the exported model in ONNX Runtime and in Deepness's way, and `geoseg infer` on ONNX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from tests.conftest import make_random_bundle, shared_data

onnx = pytest.importorskip("onnx", reason="the ONNX extra is not installed: pip install 'geoseg[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install 'geoseg[onnx]'")

TILE, OVERLAP, CLASSES = 128, 16, 4


def geoseg_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", *args], capture_output=True, text=True, check=False)


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def fotomap() -> Path:
    return shared_data("uav_fotomap", "dummy_fotomap_small.tif")  # Deepness's own test orthophoto, RGBA


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bundle") / "rgb"
    return make_random_bundle(folder, [1, 2, 3], n_classes=CLASSES, tile=TILE, overlap=OVERLAP, resolution=0.02)


@pytest.fixture(scope="module")
def exported(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    run = geoseg_cli("export", str(bundle), "--format", "onnx", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert "ONNX model:" in run.stdout
    return out


def torch_probabilities(bundle: Path, raw: np.ndarray) -> np.ndarray:
    """geoseg's torch path on (N, bands, tile, tile) raw windows: normalization, U-Net, softmax."""
    from geoseg.model.bundle import load_bundle

    loaded = load_bundle(bundle)
    x = np.stack([loaded.meta.normalization.apply(w) for w in raw])
    with torch.no_grad():
        return torch.softmax(loaded.model(torch.from_numpy(x)), dim=1).numpy()


def fotomap_windows(path: Path, count: int = 6) -> np.ndarray:
    """``count`` windows of the orthophoto's RGB bands, raw uint8, on a grid across it."""
    with rasterio.open(path) as ds:
        rows = np.linspace(0, ds.height - TILE, 2).astype(int)
        cols = np.linspace(0, ds.width - TILE, count // 2).astype(int)
        return np.stack([ds.read([1, 2, 3], window=Window(c, r, TILE, TILE)) for r in rows for c in cols])


def test_export_writes_every_metadata_key(exported: Path, bundle: Path) -> None:
    model = onnx.load(str(exported))
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["model_type"] == "Segmentor"
    assert props["class_names"] == {str(i): f"class {i + 1}" for i in range(CLASSES)}
    assert props["resolution"] == pytest.approx(2.0)  # 0.02 m → cm per pixel
    assert props["tiles_size"] == props["tile_size"] == TILE
    assert props["tiles_overlap"] == round(100 * OVERLAP / TILE)
    assert props["standardization_mean"] == [0.0] * 3
    assert props["standardization_std"] == pytest.approx([1 / 255] * 3)
    assert props["geoseg"] == json.loads((bundle / "geoseg.json").read_text())
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (image,), (probabilities,) = session.get_inputs(), session.get_outputs()
    assert image.shape[1:] == [3, TILE, TILE] and isinstance(image.shape[0], str)  # dynamic batch
    assert probabilities.shape[1:] == [CLASSES, TILE, TILE]


def test_onnx_runtime_matches_torch_on_the_same_windows(exported: Path, bundle: Path, fotomap: Path) -> None:
    raw = fotomap_windows(fotomap)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"image": raw.astype(np.float32)})[0]
    torch_probs = torch_probabilities(bundle, raw)
    assert onnx_probs.shape == torch_probs.shape == (len(raw), CLASSES, TILE, TILE)
    np.testing.assert_allclose(onnx_probs.sum(axis=1), 1.0, atol=1e-4)
    assert np.abs(onnx_probs - torch_probs).max() < 1e-3
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).mean() >= 0.999


DEEPNESS_CHECK = textwrap.dedent(
    """
    # Deepness's steps for a Segmentor, from its metadata alone: NHWC 0-255 tile, / 255, standardize, NCHW.
    import json, sys
    import numpy as np
    import onnxruntime as ort

    model, tile_file, out_file = sys.argv[1:]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["model_type"]).capitalize() == "Segmentor"
    names = json.loads(meta["class_names"])
    size = json.loads(meta["tile_size"])
    channels = session.get_inputs()[0].shape[-3]
    tiles = np.load(tile_file)[:, :, :, :channels]  # Deepness keeps the first bands the model takes
    assert tiles.shape[1:3] == (size, size)
    x = np.float32(tiles * 1.0 / 255.0)
    x = (x - np.float32(json.loads(meta["standardization_mean"]))) / np.float32(json.loads(meta["standardization_std"]))
    probs = session.run(None, {session.get_inputs()[0].name: np.transpose(x, (0, 3, 1, 2))})[0]
    assert probs.shape[1] == len(names)
    np.save(out_file, probs)
    assert not any(m == "geoseg" or m.startswith("geoseg.") for m in sys.modules), "the check imported geoseg"
    """
)


def test_deepness_runs_the_export_from_its_metadata_alone(exported: Path, bundle: Path, fotomap: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    with rasterio.open(fotomap) as ds:  # RGBA: Deepness drops the alpha band itself
        rgba = np.stack([ds.read(window=Window(c, 0, TILE, TILE)) for c in (0, 300, 600)])
    np.save(tmp_path / "tiles.npy", np.transpose(rgba, (0, 2, 3, 1)))  # Deepness hands tiles over as NHWC
    script = tmp_path / "deepness_check.py"
    script.write_text(DEEPNESS_CHECK)
    command = [sys.executable, str(script), str(exported), str(tmp_path / "tiles.npy"), str(tmp_path / "probs.npy")]
    run = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    deepness = np.load(tmp_path / "probs.npy")
    reference = torch_probabilities(bundle, rgba[:, :3])
    assert np.abs(deepness - reference).max() < 1e-3
    assert (deepness.argmax(1) == reference.argmax(1)).mean() >= 0.999


def test_infer_with_the_onnx_model_writes_the_bundles_outputs(exported: Path, bundle: Path, fotomap: Path,
                                                              tmp_path: Path) -> None:  # fmt: skip
    outputs = {}
    for name, model in (("bundle", bundle), ("onnx", exported)):
        out = tmp_path / name
        run = geoseg_cli("infer", str(fotomap), "--model", str(model), "--out-dir", str(out), "--precision", "fp32",
                         "--progress", "none")  # fmt: skip
        assert run.returncode == 0, run.stderr
        outputs[name] = out
    stem = fotomap.stem
    torch_map, onnx_map = (read_band(outputs[n] / f"{stem}_classes.tif") for n in ("bundle", "onnx"))
    assert np.array_equal(torch_map == 255, onnx_map == 255)  # the alpha band's nodata, both ways
    valid = torch_map != 255
    assert valid.mean() > 0.5 and len(np.unique(torch_map[valid])) > 1
    assert (torch_map[valid] == onnx_map[valid]).mean() >= 0.999
    for name in ("bundle", "onnx"):
        assert (outputs[name] / f"{stem}_polygons.gpkg").stat().st_size > 0
        areas = json.loads((outputs[name] / f"{stem}_areas.json").read_text())
        assert areas
    with rasterio.open(outputs["onnx"] / f"{stem}_classes.tif") as ds, rasterio.open(fotomap) as src:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)


# A Python startup hook that makes torch and its family unimportable, in this process and in every process it
# starts (PYTHONPATH is inherited): an install of `geoseg[onnx]` without `geoseg[torch]`, on this venv.
NO_TORCH_SITE = textwrap.dedent(
    """
    import sys

    class NoTorch:
        BLOCKED = frozenset({"torch", "torchvision", "torchgeo", "lightning", "segmentation_models_pytorch", "timm",
                             "torchmetrics"})

        def find_spec(self, name, path=None, target=None, _error=ModuleNotFoundError):
            if name.partition(".")[0] in self.BLOCKED:
                raise _error(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    """
)


def geoseg_without_torch(site: Path, *args: str) -> subprocess.CompletedProcess:
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_TORCH_SITE)
    env = {**os.environ, "PYTHONPATH": str(site)}
    command = [sys.executable, "-m", "geoseg", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, env=env)


def test_an_install_without_torch_segments_with_the_onnx_model(exported: Path, bundle: Path, fotomap: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    site = tmp_path / "site"
    probe = geoseg_without_torch(site, "export", str(bundle), "-o", str(tmp_path / "again.onnx"))
    assert probe.returncode == 2 and "pip install 'geoseg[torch]'" in probe.stderr, probe.stderr  # torch is gone
    assert "Traceback" not in probe.stderr
    common = ("--precision", "fp32", "--tta", "--progress", "none")
    run = geoseg_without_torch(site, "infer", str(fotomap), "--model", str(exported), "--out-dir",
                               str(tmp_path / "onnx"), *common)  # fmt: skip
    assert run.returncode == 0, run.stderr
    reference = geoseg_cli("infer", str(fotomap), "--model", str(bundle), "--out-dir", str(tmp_path / "torch"), *common)
    assert reference.returncode == 0, reference.stderr
    stem = fotomap.stem
    onnx_map, torch_map = (read_band(tmp_path / n / f"{stem}_classes.tif") for n in ("onnx", "torch"))
    valid = torch_map != 255
    assert np.array_equal(valid, onnx_map != 255) and len(np.unique(torch_map[valid])) > 1
    assert (torch_map[valid] == onnx_map[valid]).mean() >= 0.999  # numpy's TTA views against torch's
    assert (tmp_path / "onnx" / f"{stem}_polygons.gpkg").stat().st_size > 0

    batch = geoseg_without_torch(site, "batch", str(fotomap), "--model", str(exported), "--out-dir",
                                 str(tmp_path / "batch"), "--workers", "1", *common)  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    assert np.array_equal(read_band(tmp_path / "batch" / f"{stem}_classes.tif"), onnx_map)


def test_a_torch_bundle_without_torch_is_refused_in_one_line(bundle: Path, fotomap: Path, tmp_path: Path) -> None:
    run = geoseg_without_torch(tmp_path / "site", "infer", str(fotomap), "--model", str(bundle), "--out-dir",
                               str(tmp_path / "out"))  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert str(bundle) in run.stderr and "pip install 'geoseg[torch]'" in run.stderr and "geoseg export" in run.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------------------------- models built by hand


def conv_graph(path: Path, weights: np.ndarray, props: dict[str, object], size: int | str = 64) -> Path:
    """A 1×1 convolution and a softmax as an ONNX file, with ``props`` as JSON metadata (as Deepness writes)."""
    from onnx import TensorProto, helper, numpy_helper

    n_out, n_in = weights.shape
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_in, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", n_out, size, size])
    kernel = numpy_helper.from_array(weights.reshape(n_out, n_in, 1, 1).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "conv", [x], [y], initializer=[kernel])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))
    return path


def test_a_deepness_segmentor_runs_as_deepness_would_run_it(tmp_path: Path) -> None:
    image = shared_data("landsat_collar", "RGB.byte.tif")  # uint8 RGB with a nodata=0 collar
    weights = np.array([[4.0, -2.0, -2.0], [-2.0, 4.0, -2.0]])
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    model = conv_graph(tmp_path / "deepness.onnx", weights, {
        "model_type": "Segmentor", "class_names": {"0": "reddish", "1": "greenish"}, "tiles_size": 64,
        "tiles_overlap": 25, "standardization_mean": mean, "standardization_std": std,
    })  # fmt: skip
    run = geoseg_cli("infer", str(image), "--model", str(model), "--out-dir", str(tmp_path), "--no-polygons",
                     "--progress", "none")  # fmt: skip
    assert run.returncode == 0, run.stderr
    classes = read_band(tmp_path / f"{image.stem}_classes.tif")
    with rasterio.open(image) as ds:
        raw = ds.read().astype(np.float32)
        valid = ds.dataset_mask() > 0
    x = (raw / 255 - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    expected = np.einsum("oc,chw->ohw", weights, x).argmax(0)  # a 1×1 convolution needs no neighbours
    assert np.array_equal(classes == 255, ~valid)
    assert (classes[valid] == expected[valid]).mean() >= 0.999
    assert len(np.unique(classes[valid])) == 2


@pytest.mark.parametrize(
    ("props", "n_in", "message"),
    [
        ({}, 3, "neither geoseg's nor Deepness's metadata"),
        ({"model_type": "Detector", "class_names": {"0": "car"}}, 3, "Deepness Detector model"),
        ({"model_type": "Regressor"}, 3, "Deepness Regressor model"),
        ({"model_type": "Segmentor", "class_names": {"0": "a", "1": "b"}}, 4, "has 3 band(s)"),
    ],
)
def test_unusable_onnx_models_are_refused_in_one_line(tmp_path: Path, props: dict, n_in: int, message: str) -> None:
    image = shared_data("landsat_collar", "RGB.byte.tif")
    model = conv_graph(tmp_path / "model.onnx", np.ones((2, n_in)), props)
    run = geoseg_cli("infer", str(image), "--model", str(model), "--out-dir", str(tmp_path / "out"), "--progress",
                     "none")  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_existing_file_and_keeps_it(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"an earlier export")
    run = geoseg_cli("export", str(bundle), "-o", str(target))
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert target.read_bytes() == b"an earlier export"
