"""Training config: paths relative to the file, one-line errors naming file and key, label values."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.config import load_config, normalize_label_value
from geoseg.errors import ConfigError

MINIMAL = """\
data:
  images: [survey/ortho.tif]
  labels: survey/labels.gpkg
  label_field: class
  classes: {1: bare soil, 2: cyanobacteria}
"""


def _write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    folder = tmp_path / "cfg"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> tuple[ConfigError, Path]:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value, path


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert [c.value for c in cfg.data.classes] == ["1", "2"]
    assert [c.id for c in cfg.data.classes] == [1, 2]  # ids default to the numeric label value
    assert [c.name for c in cfg.data.classes] == ["bare soil", "cyanobacteria"]
    assert cfg.data.label_field == "class"
    assert cfg.train.tile_size is None and cfg.train.steps is None  # auto: fitted to the labelled area
    assert (cfg.train.schedule, cfg.train.tta, cfg.train.refit, cfg.train.loss) == ("cosine", True, True, "ce+dice")
    assert cfg.model.weights == "imagenet"
    assert cfg.preprocess.scaling == "auto"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    text = MINIMAL + "  validation: {polygon: ../val.gpkg}\nmodel:\n  weights: weights/enc.safetensors\n"
    path = _write(tmp_path, text)
    cfg = load_config(path)
    folder = path.parent
    assert cfg.data.images == [folder / "survey" / "ortho.tif"]
    assert cfg.data.labels == [folder / "survey" / "labels.gpkg"]
    assert cfg.data.validation.polygon is not None
    assert cfg.data.validation.polygon.resolve() == (tmp_path / "val.gpkg").resolve()
    assert Path(cfg.model.weights) == folder / "weights" / "enc.safetensors"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    image = tmp_path / "abs" / "ortho.tif"
    cfg = load_config(_write(tmp_path, MINIMAL.replace("survey/ortho.tif", str(image))))
    assert cfg.data.images == [image]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + "training: {epochs: 3}\n", "training"),
        (MINIMAL + "  colour: red\n", "colour"),
        (MINIMAL + "train:\n  epoch: 3\n", "train"),
        (MINIMAL + "train:\n  augment: {flip: true}\n", "train.augment"),
        (MINIMAL + "preprocess:\n  scale_mode: fixed\n", "preprocess"),
    ],
)
def test_unknown_section_or_key(tmp_path: Path, text: str, key: str) -> None:
    err, path = _error(tmp_path, text)
    message = str(err)
    assert "\n" not in message
    assert str(path) in message
    assert key in message
    assert "unknown" in message


def test_class_value_255_needs_an_explicit_id(tmp_path: Path) -> None:
    err, path = _error(tmp_path, MINIMAL.replace("2: cyanobacteria", "255: corridor"))
    message = str(err)
    assert str(path) in message and "data.classes.255" in message and "id" in message
    assert "\n" not in message
    # With an explicit id it is accepted and keeps its label value.
    cfg = load_config(_write(tmp_path, MINIMAL.replace("2: cyanobacteria", "255: {name: corridor, id: 5}")))
    corridor = cfg.data.classes[1]
    assert (corridor.value, corridor.id, corridor.name) == ("255", 5, "corridor")


def test_duplicate_class_ids(tmp_path: Path) -> None:
    err, path = _error(tmp_path, MINIMAL.replace("2: cyanobacteria", "2: {name: cyano, id: 1}"))
    assert str(path) in str(err) and "data.classes" in str(err) and "unique" in str(err)


@pytest.mark.parametrize("fraction", [-0.1, 0.95, 1.5, "half"])
def test_validation_fraction_out_of_range(tmp_path: Path, fraction: object) -> None:
    err, path = _error(tmp_path, MINIMAL + f"  validation: {{fraction: {fraction}}}\n")
    assert str(path) in str(err) and "data.validation.fraction" in str(err)


def test_fixed_scaling_without_scale(tmp_path: Path) -> None:
    err, path = _error(tmp_path, MINIMAL + "preprocess:\n  scaling: fixed\n")
    assert str(path) in str(err) and "preprocess.scale" in str(err)
    cfg = load_config(_write(tmp_path, MINIMAL + "preprocess:\n  scaling: fixed\n  scale: [0, 4095]\n"))
    assert cfg.preprocess.scale == (0.0, 4095.0)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("train:\n  tile_size: 8\n", "train.tile_size"),
        ("train:\n  batch_size: two\n", "train.batch_size"),
        ("train:\n  loss: hinge\n", "train.loss"),
        ("train:\n  rare_class_sampling: 1\n", "train.rare_class_sampling"),
        ("  bands: [0, 1]\n", "data.bands"),
        ("preprocess:\n  percentiles: [98, 2]\n", "preprocess.percentiles"),
        ("model:\n  architecture: fpn\n", "model.architecture"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    err, path = _error(tmp_path, MINIMAL + extra)
    assert str(path) in str(err) and key in str(err) and "\n" not in str(err)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found"):
        load_config(missing)
    err, path = _error(tmp_path, "data: [unclosed\n")
    assert str(path) in str(err) and "YAML" in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("value", [1, 1.0, "1", " 1 ", "1.0"])
def test_label_values_normalize(value: object) -> None:
    assert normalize_label_value(value) == "1"


def test_text_label_values_stay_text() -> None:
    assert normalize_label_value(" moss ") == "moss"
    assert normalize_label_value(1.5) == "1.5"


def test_string_and_numeric_class_keys_are_the_same_class(tmp_path: Path) -> None:
    numeric = load_config(_write(tmp_path, MINIMAL))
    quoted = load_config(_write(tmp_path, MINIMAL.replace("{1: bare soil, 2:", "{'1': bare soil, '2.0':"), "q.yaml"))
    assert [(c.value, c.id) for c in numeric.data.classes] == [(c.value, c.id) for c in quoted.data.classes]


def test_text_class_values_get_ids_by_position(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL.replace("{1: bare soil, 2: cyanobacteria}", "{soil: bare, crust: c}")))
    assert [(c.value, c.id) for c in cfg.data.classes] == [("soil", 0), ("crust", 1)]


@pytest.mark.parametrize("background", ["1", "1.0", "'1'"])
def test_background_is_a_class_value(tmp_path: Path, background: str) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL + f"  background: {background}\n"))
    assert cfg.data.background == "1"


def test_background_not_a_class_value(tmp_path: Path) -> None:
    err, path = _error(tmp_path, MINIMAL + "  background: 7\n")
    assert str(path) in str(err) and "data.background" in str(err)


def test_semi_supervised_on_by_flag_or_mapping_and_off_by_default(tmp_path: Path) -> None:
    assert not load_config(_write(tmp_path, MINIMAL)).train.semi_supervised.enabled
    flag = load_config(_write(tmp_path, MINIMAL + "train: {semi_supervised: true}\n")).train.semi_supervised
    assert flag.enabled and flag.threshold == 0.9 and flag.batch_size is None
    mapping = MINIMAL + "  unlabelled: [survey/2025.tif]\ntrain: {semi_supervised: {threshold: 0.8, batch_size: 3}}\n"
    cfg = load_config(_write(tmp_path, mapping))
    assert cfg.train.semi_supervised.enabled and cfg.train.semi_supervised.threshold == 0.8
    assert cfg.train.semi_supervised.batch_size == 3
    assert cfg.data.unlabelled == [tmp_path / "cfg" / "survey" / "2025.tif"]
    assert not load_config(
        _write(tmp_path, MINIMAL + "train: {semi_supervised: {enabled: false}}\n")
    ).train.semi_supervised.enabled


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train: {semi_supervised: 1}\n", "train.semi_supervised"),
        ("train: {semi_supervised: {threshold: 1.5}}\n", "train.semi_supervised.threshold"),
        ("train: {semi_supervised: {treshold: 0.8}}\n", "train.semi_supervised"),
        ("train: {semi_supervised: {batch_size: 0}}\n", "train.semi_supervised.batch_size"),
        ("train: {neighbourhood_weight: -1}\n", "train.neighbourhood_weight"),
        ("train: {baseline: 'yes'}\n", "train.baseline"),
        ("  unlabelled: [survey/2025.tif]\n", "data.unlabelled"),  # given, but semi-supervision is off
        ("  unlabelled: 5\ntrain: {semi_supervised: true}\n", "data.unlabelled"),
    ],
)
def test_few_label_keys_refuse_bad_values_in_one_line(tmp_path: Path, text: str, key: str) -> None:
    error, path = _error(tmp_path, MINIMAL + text)
    message = str(error)
    assert str(path) in message and key in message and "\n" not in message
