"""The model bundle contract (DESIGN §3): smp's files + geoseg.json, made by anyone, loaded safely."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from geoseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from geoseg.errors import BundleError, OutputExistsError
from geoseg.model.bundle import load_bundle, save_bundle

# DESIGN §3's example, verbatim.
DESIGN_EXAMPLE = """\
{
  "format_version": 1,
  "classes": [{"id": 0, "name": "bare soil", "color": "#a0522d"}, {"id": 1, "name": "crust", "color": "#556b2f"}],
  "ignore_index": 255,
  "bands": [1, 2, 3],
  "input": {"scale": [0, 255], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
  "tile_size": 512,
  "overlap": 64,
  "resolution": 0.05,
  "train_stats": null,
  "metrics": null,
  "created": "2026-11-26T12:00:00Z",
  "geoseg_version": "0.1.0"
}
"""


def _small_unet(classes: int = 2, seed: int = 0) -> smp.Unet:
    torch.manual_seed(seed)
    model = smp.Unet(
        "tu-efficientnet_lite0", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=classes
    )
    return model.eval()


@pytest.fixture(scope="module")
def smp_model() -> smp.Unet:
    return _small_unet()


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory: pytest.TempPathFactory, smp_model: smp.Unet) -> Path:
    """A bundle written with smp alone plus DESIGN's geoseg.json; no geoseg code involved."""
    folder = tmp_path_factory.mktemp("hand") / "bundle"
    smp_model.save_pretrained(str(folder))
    (folder / "geoseg.json").write_text(DESIGN_EXAMPLE)
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _input(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 3, 64, 64)).astype(np.float32))


def _same_predictions(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = _input()
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def _one_line_bundle_error(path: Path) -> BundleError:
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert str(path) in message
    return info.value


def test_hand_made_bundle_loads_and_predicts_like_smp(hand_made: Path, smp_model: smp.Unet) -> None:
    bundle = load_bundle(hand_made)
    meta = bundle.meta
    assert [(c.id, c.name, c.color) for c in meta.classes] == [(0, "bare soil", "#a0522d"), (1, "crust", "#556b2f")]
    assert meta.bands == [1, 2, 3]
    assert meta.normalization.scale == [(0.0, 255.0)] * 3
    assert meta.normalization.mean == list(IMAGENET_MEAN) and meta.normalization.std == list(IMAGENET_STD)
    assert (meta.tile_size, meta.overlap, meta.resolution, meta.ignore_index) == (512, 64, 0.05, 255)
    assert meta.train_stats is None and meta.metrics is None
    assert meta.created == "2026-11-26T12:00:00Z" and meta.extra == {}
    assert not bundle.model.training
    _same_predictions(bundle.model, smp_model)


def test_unknown_keys_are_kept_and_written_back(hand_made: Path, tmp_path: Path) -> None:
    folder = _copy(hand_made, tmp_path / "b")
    data = json.loads(DESIGN_EXAMPLE)
    data["sensor"] = {"name": "DJI P1", "bands": ["r", "g", "b"]}
    data["notes"] = "trained on plot 7"
    (folder / "geoseg.json").write_text(json.dumps(data))
    bundle = load_bundle(folder)
    assert bundle.meta.extra == {"sensor": {"name": "DJI P1", "bands": ["r", "g", "b"]}, "notes": "trained on plot 7"}
    out = save_bundle(bundle.model, bundle.meta, tmp_path / "resaved")
    written = json.loads((out / "geoseg.json").read_text())
    assert written["sensor"] == data["sensor"] and written["notes"] == "trained on plot 7"
    # everything DESIGN's example says survives a load/save round trip
    for key in ("classes", "ignore_index", "bands", "tile_size", "overlap", "resolution", "created"):
        assert written[key] == data[key], key
    assert written["input"] == {"scale": [0.0, 255.0], "mean": data["input"]["mean"], "std": data["input"]["std"]}
    _same_predictions(load_bundle(out).model, bundle.model)


def test_saved_bundle_loads_with_smp_alone_and_never_downloads(tmp_path: Path, hand_made: Path) -> None:
    bundle = load_bundle(hand_made)
    # a model built from ImageNet weights records encoder_weights="imagenet" in its constructor arguments
    bundle.model._hub_mixin_config["encoder_weights"] = "imagenet"
    out = save_bundle(bundle.model, bundle.meta, tmp_path / "out")
    assert {"config.json", "model.safetensors", "geoseg.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert "encoder_weights" in config and config["encoder_weights"] is None
    assert bundle.model._hub_mixin_config["encoder_weights"] == "imagenet"  # the live model is left as it was
    _same_predictions(smp.from_pretrained(str(out)), bundle.model)


@pytest.mark.parametrize("nested", [False, True])
def test_zipped_bundle_loads(hand_made: Path, smp_model: smp.Unet, tmp_path: Path, nested: bool) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in hand_made.iterdir():
            zf.write(f, f"my_model/{f.name}" if nested else f.name)
    bundle = load_bundle(archive)
    assert bundle.path == archive
    assert [c.name for c in bundle.meta.classes] == ["bare soil", "crust"]
    _same_predictions(bundle.model, smp_model)


def test_zip_without_geoseg_json(hand_made: Path, tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(hand_made / "config.json", "config.json")
    _one_line_bundle_error(archive)


def test_class_count_must_match_output_channels(tmp_path: Path) -> None:
    folder = tmp_path / "three"
    _small_unet(classes=3).save_pretrained(str(folder))
    (folder / "geoseg.json").write_text(DESIGN_EXAMPLE)
    err = _one_line_bundle_error(folder)
    assert "3 output channels" in str(err) and "2 classes" in str(err)


def test_missing_weights(hand_made: Path, tmp_path: Path) -> None:
    folder = _copy(hand_made, tmp_path / "b")
    (folder / "model.safetensors").unlink()
    assert "model.safetensors" in str(_one_line_bundle_error(folder))


def test_malformed_json(hand_made: Path, tmp_path: Path) -> None:
    folder = _copy(hand_made, tmp_path / "b")
    (folder / "geoseg.json").write_text('{"format_version": 1, "classes": [')
    assert "geoseg.json" in str(_one_line_bundle_error(folder))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("classes"),
        lambda d: d.update(bands="rgb"),
        lambda d: d["input"].update(mean=[0.5]),
        lambda d: d.update(tile_size="large"),
    ],
)
def test_wrong_structure(hand_made: Path, tmp_path: Path, change) -> None:
    folder = _copy(hand_made, tmp_path / "b")
    data = json.loads(DESIGN_EXAMPLE)
    change(data)
    (folder / "geoseg.json").write_text(json.dumps(data))
    message = str(_one_line_bundle_error(folder))
    assert "geoseg.json" in message or "input" in message


def test_pickled_weights_are_refused_not_unpickled(hand_made: Path, smp_model: smp.Unet, tmp_path: Path) -> None:
    folder = _copy(hand_made, tmp_path / "b")
    torch.save(smp_model.state_dict(), folder / "model.safetensors")  # a pickle under the safetensors name
    assert "cannot load the network" in str(_one_line_bundle_error(folder))


def test_newer_format_version(hand_made: Path, tmp_path: Path) -> None:
    folder = _copy(hand_made, tmp_path / "b")
    (folder / "geoseg.json").write_text(DESIGN_EXAMPLE.replace('"format_version": 1', '"format_version": 99'))
    assert "format_version 99" in str(_one_line_bundle_error(folder))


def test_not_a_bundle(tmp_path: Path) -> None:
    _one_line_bundle_error(tmp_path / "missing")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _one_line_bundle_error(text)


def test_save_refuses_an_existing_dir_and_leaves_nothing_behind(hand_made: Path, tmp_path: Path) -> None:
    bundle = load_bundle(hand_made)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="overwrite"):
        save_bundle(bundle.model, bundle.meta, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    save_bundle(bundle.model, bundle.meta, out, overwrite=True)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "geoseg.json"} <= names and "keep.txt" not in names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_save_leaves_no_partial_dir(hand_made: Path, tmp_path: Path) -> None:
    bundle = load_bundle(hand_made)
    bundle.meta.extra["bad"] = {1, 2}  # not JSON-serializable: fails after the weights are written
    with pytest.raises(TypeError):
        save_bundle(bundle.model, bundle.meta, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
    # with overwrite, the existing bundle survives a failed save untouched
    existing = _copy(hand_made, tmp_path / "existing")
    with pytest.raises(TypeError):
        save_bundle(bundle.model, bundle.meta, existing, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert (existing / "geoseg.json").read_text() == DESIGN_EXAMPLE


@pytest.mark.parametrize(
    ("find", "replace", "message"),
    [
        (DESIGN_EXAMPLE, "[1, 2, 3]\n", "must hold a JSON object, not list"),
        ('"bands": [1, 2, 3]', '"bands": [0, 1, 2]', "'bands' are 1-based band numbers"),
        ('"bands": [1, 2, 3]', '"bands": [1, 2]', "input.mean/std/scale must have one entry per band"),
        ('"scale": [0, 255]', '"scale": [255, 255]', "input.scale of band 1 needs lo < hi"),
        ('"std": [0.229, 0.224, 0.225]', '"std": [0.229, 0.0, 0.225]', "input.std of band 2 must be above 0"),
        ('"tile_size": 512', '"tile_size": 16', "tile_size must be at least 32"),
        ('"overlap": 64', '"overlap": 512', "overlap must be at least 0 and less than tile_size"),
    ],
)
def test_meaningless_bundle_numbers_are_refused(hand_made: Path, tmp_path: Path, find: str, replace: str,
                                                message: str) -> None:  # fmt: skip
    folder = _copy(hand_made, tmp_path / "b")
    (folder / "geoseg.json").write_text(DESIGN_EXAMPLE.replace(find, replace))
    assert message in str(_one_line_bundle_error(folder))


def test_bands_that_do_not_match_the_network_are_refused(hand_made: Path, tmp_path: Path) -> None:
    folder = _copy(hand_made, tmp_path / "b")
    four = (
        DESIGN_EXAMPLE.replace('"bands": [1, 2, 3]', '"bands": [1, 2, 3, 4]')
        .replace('"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]', '"mean": [0.5] * 4, "std": [0.25] * 4')
        .replace("[0.5] * 4", "[0.5, 0.5, 0.5, 0.5]")
        .replace("[0.25] * 4", "[0.25, 0.25, 0.25, 0.25]")
    )
    (folder / "geoseg.json").write_text(four)
    assert "the network takes 3 input band(s)" in str(_one_line_bundle_error(folder))
