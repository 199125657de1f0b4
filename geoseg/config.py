"""Training configuration: YAML in, typed and validated dataclasses out.

Every problem is reported as one line naming the config file and the key, and relative paths
are resolved against the config file's folder (docs/formats.md, "Training config").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import ConfigError

IGNORE_INDEX = 255
DEFAULT_COLORS = (
    "#a0522d", "#556b2f", "#daa520", "#2e8b57", "#4682b4", "#b22222", "#9370db", "#ff8c00",
    "#708090", "#00ced1", "#8b4513", "#ff69b4",
)  # fmt: skip


@dataclass(frozen=True)
class ClassSpec:
    """One class: the label value(s) it comes from, its output id (0-254), name and colour."""

    value: str
    id: int
    name: str
    color: str


@dataclass(frozen=True)
class QualityMaskConfig:
    enabled: bool = False
    overexposed: float = 0.98  # scaled intensity (0..1) at or above which a pixel is saturated
    underexposed: float = 0.02  # at or below which it is black
    blur_window: int = 31  # pixels; side of the window for local sharpness
    blur_threshold: float = 2e-4  # Laplacian variance (scaled units²) below which a region is blurred


@dataclass(frozen=True)
class ValidationConfig:
    fraction: float = 0.2  # share of each image's extent, a strip on its right or bottom side
    polygon: Path | None = None  # or an explicit region (any CRS)


@dataclass(frozen=True)
class DataConfig:
    images: list[Path]
    labels: list[Path]
    classes: list[ClassSpec]
    bands: list[int] | None = None
    label_field: str | None = None
    background: str | None = None  # for polygons: the class value of pixels no polygon covers
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    quality_mask: QualityMaskConfig = field(default_factory=QualityMaskConfig)
    unlabelled: list[Path] = field(default_factory=list)  # extra mosaics for semi-supervised training


@dataclass(frozen=True)
class PreprocessConfig:
    scaling: str = "auto"  # auto | fixed | percentile
    scale: tuple[float, float] | None = None  # for fixed: the raw range mapped to 0..1
    percentiles: tuple[float, float] = (2.0, 98.0)
    normalization: str = "auto"  # auto | imagenet | dataset


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "resnet34"
    weights: str | None = "imagenet"  # imagenet | torchgeo:<Enum>.<MEMBER> | None | path to a weights file


@dataclass(frozen=True)
class AugmentConfig:
    flips: bool = True
    rot90: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    scale_jitter: float = 0.25  # random zoom: window sides drawn in [size·(1-f), size·(1+f)], resized back
    color: float = 0.05  # per-band gain jitter (±f), a change of white balance
    blur: float = 1.0  # Gaussian blur with σ up to this many px, on a quarter of the windows (0 = off)
    noise: float = 0.02  # Gaussian noise of σ up to this, in scaled 0..1 units, on a quarter of the windows


@dataclass(frozen=True)
class SemiSupervisedConfig:
    """Pseudo-labels on unlabelled windows (geoseg/training/semi_supervised.py)."""

    enabled: bool = False
    threshold: float = 0.9  # the teacher's confidence a pseudo-label needs (per class, scaled, when balanced)
    weight: float = 1.0  # of the pseudo-label loss against the supervised loss, once ramped up
    rampup: float = 0.3  # share of the steps over which the weight ramps up from 0
    class_balanced: bool = True  # class-wise thresholds and loss weights
    batch_size: int | None = None  # unlabelled windows a step; None: a quarter of the labelled batch (at least 1)


LOSSES = ("ce", "ce+dice", "ce+lovasz", "focal", "ce+focal", "dice")
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. ``tile_size`` and ``steps`` None mean "auto": fitted to the labelled area
    (geoseg/recipe.py) once the images are read; ``epochs`` None means "as many as ``steps`` need"."""

    tile_size: int | None = None
    batch_size: int = 8
    lr: float = 5e-4
    steps: int | None = None
    epochs: int | None = None
    samples_per_epoch: int = 256
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    encoder_lr: float = 1.0  # the pretrained encoder's learning rate as a multiple of lr (0 freezes it)
    loss: str = "ce+dice"
    class_weights: str = "none"  # none | balanced: cross-entropy weighted by inverse square-root class frequency
    schedule: str = "cosine"  # cosine | onecycle | constant, after a linear warm-up
    warmup: float = 0.05  # share of the steps spent warming the learning rate up from zero
    ema: float = 0.998  # decay of an exponential moving average of the weights (0 = off); the bundle keeps the EMA
    tta: bool = True  # validate with flips and 90° rotations averaged, and make that the bundle's inference default
    decoder_dropout: float = 0.1  # channel dropout on the decoder's output, training only
    refit: bool = True  # after the validated run, train again on training + validation for the kept step count
    keep: str = "final"  # final: the last step's weights | best: those of the best validation mIoU (earliest on ties)
    early_stopping_patience: int = 50
    rare_class_sampling: bool = False
    seed: int = 0
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    semi_supervised: SemiSupervisedConfig = field(default_factory=SemiSupervisedConfig)
    neighbourhood_weight: float = 0.0  # similar neighbours, similar classes (semi_supervised.neighbourhood_loss)
    baseline: bool = True  # also fit a pixel classifier and report its validation scores beside the U-Net's


@dataclass(frozen=True)
class AdaptationConfig:
    """Unlabeled target mosaics the model should also work on (joint energy-based domain adaptation).

    Target windows are drawn like source windows, and a term lowering their free energy relative to the
    source's (see ``geoseg/adaptation.py``) joins the supervised loss. Target labels are never read: this
    section has no key for them.
    """

    targets: list[Path] = field(default_factory=list)
    weight: float = 0.01  # as in the source paper; 0 runs the target windows through the model without the term

    @property
    def enabled(self) -> bool:
        return bool(self.targets)


@dataclass(frozen=True)
class Config:
    path: Path
    data: DataConfig
    preprocess: PreprocessConfig
    model: ModelConfig
    train: TrainConfig
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found; check the path", path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"is not valid YAML{where} ({problem}); fix the syntax there", path) from None
    if not isinstance(raw, dict):
        raise ConfigError("must be a mapping with sections data, model, train", path)
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    reader = _Reader(path)
    unknown = set(raw) - {"data", "preprocess", "model", "train", "adaptation"}
    if unknown:
        raise ConfigError(
            f"unknown section(s) {sorted(unknown)}; expected data, preprocess, model, train, adaptation", path
        )
    config = Config(
        path=path,
        data=_parse_data(reader, raw.get("data")),
        preprocess=_parse_preprocess(reader, raw.get("preprocess") or {}),
        model=_parse_model(reader, raw.get("model") or {}),
        train=_parse_train(reader, raw.get("train") or {}),
        adaptation=_parse_adaptation(reader, raw.get("adaptation") or {}),
    )
    if config.data.unlabelled and not config.train.semi_supervised.enabled:
        raise reader.fail("data.unlabelled", "only semi-supervised training reads these mosaics; add "
                          "train: {semi_supervised: true}, or remove the key")  # fmt: skip
    return config


class _Reader:
    """Reads typed values out of YAML sections, naming the config file and key on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{key}: {message}", self.path)

    def path_of(self, key: str, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected a file path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)

    def number(self, section: dict, key: str, default: float, lo: float, hi: float, name: str) -> float:
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise self.fail(name, f"expected a number in [{lo}, {hi}], got {value!r}")
        return float(value)

    def integer(self, section: dict, key: str, default: int, lo: int, hi: int, name: str) -> int:
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(name, f"expected an integer in [{lo}, {hi}], got {value!r}")
        return value

    def auto_integer(self, section: dict, key: str, lo: int, hi: int, name: str) -> int | None:
        """An integer, or None for ``auto`` (also when the key is absent)."""
        value = section.get(key, "auto")
        if value in ("auto", None):
            return None
        return self.integer(section, key, 0, lo, hi, name + " (or auto)")

    def choice(self, section: dict, key: str, default: str, options: tuple[str, ...], name: str) -> str:
        value = section.get(key, default)
        if value not in options:
            raise self.fail(name, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def flag(self, section: dict, key: str, default: bool, name: str) -> bool:
        value = section.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {value!r}")
        return value

    def unknown_keys(self, section: dict, allowed: set[str], name: str) -> None:
        extra = set(section) - allowed
        if extra:
            raise self.fail(name, f"unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")


def _parse_data(r: _Reader, data: Any) -> DataConfig:
    if not isinstance(data, dict):
        raise r.fail("data", "section missing; it needs images, labels and classes")
    allowed = {"images", "labels", "label_field", "background", "classes", "bands", "validation", "quality_mask",
               "unlabelled"}  # fmt: skip
    r.unknown_keys(data, allowed, "data")
    images_raw = data.get("images")
    if isinstance(images_raw, str):
        images_raw = [images_raw]
    if not images_raw or not isinstance(images_raw, list):
        raise r.fail("data.images", "expected one or more orthomosaic paths")
    images = [r.path_of("data.images", p) for p in images_raw]
    labels_raw = data.get("labels")
    if isinstance(labels_raw, str):
        labels_raw = [labels_raw]
    if not labels_raw or not isinstance(labels_raw, list):
        raise r.fail("data.labels", "expected a label raster or vector file (or one per image)")
    labels = [r.path_of("data.labels", p) for p in labels_raw]
    if len(labels) not in (1, len(images)):
        raise r.fail("data.labels", f"give one label file for all images or one per image ({len(images)})")
    bands = data.get("bands")
    if bands is not None and (
        not isinstance(bands, list) or not bands or not all(isinstance(b, int) and b >= 1 for b in bands)
    ):
        raise r.fail("data.bands", f"expected a list of 1-based band numbers, got {bands!r}")
    label_field = data.get("label_field")
    if label_field is not None and not isinstance(label_field, str):
        raise r.fail("data.label_field", "expected an attribute name")
    classes = _parse_classes(r, data.get("classes"))
    background = data.get("background")
    if background is not None:
        background = normalize_label_value(background)
        if background not in {c.value for c in classes}:
            raise r.fail("data.background", f"{background!r} is not one of the values in data.classes")
    return DataConfig(
        images=images,
        labels=labels,
        classes=classes,
        bands=bands,
        label_field=label_field,
        background=background,
        validation=_parse_validation(r, data.get("validation") or {}),
        quality_mask=_parse_quality(r, data.get("quality_mask") or {}),
        unlabelled=_parse_paths(r, data.get("unlabelled"), "data.unlabelled"),
    )


def _parse_paths(r: _Reader, value: Any, key: str) -> list[Path]:
    """A path or a list of paths (absent: none)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise r.fail(key, "expected one or more orthomosaic paths")
    return [r.path_of(key, p) for p in value]


def _parse_classes(r: _Reader, classes: Any) -> list[ClassSpec]:
    """``{label value: name}`` or ``{label value: {name, id, color}}``; ids default to the value."""
    if not isinstance(classes, dict) or not classes:
        raise r.fail("data.classes", "expected a mapping of label value to class name, e.g. {1: crust}")
    specs: list[ClassSpec] = []
    numeric = all(_as_int(v) is not None for v in classes)
    for index, (value, spec) in enumerate(classes.items()):
        key = f"data.classes.{value}"
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise r.fail(key, "expected a class name or a mapping with name (and optional id, color)")
        class_id = spec.get("id", _as_int(value) if numeric else index)
        if not isinstance(class_id, int) or not 0 <= class_id <= 254:
            raise r.fail(
                key,
                f"class id {class_id!r} is outside 0-254 (255 marks nodata in class maps); "
                "give it an explicit id, e.g. {name: ..., id: 5}",
            )
        color = spec.get("color", DEFAULT_COLORS[index % len(DEFAULT_COLORS)])
        specs.append(ClassSpec(value=normalize_label_value(value), id=class_id, name=spec["name"], color=color))
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise r.fail("data.classes", f"class ids must be unique, got {ids}")
    return specs


def normalize_label_value(value: Any) -> str:
    """Label values compare as text, so 1, 1.0 and '1' in a vector attribute are the same class."""
    as_int = _as_int(value)
    return str(as_int) if as_int is not None else str(value).strip()


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        f = float(str(value).strip())
    except ValueError:
        return None
    return int(f) if f.is_integer() else None


def _parse_validation(r: _Reader, section: dict) -> ValidationConfig:
    r.unknown_keys(section, {"fraction", "polygon"}, "data.validation")
    polygon = section.get("polygon")
    return ValidationConfig(
        fraction=r.number(section, "fraction", 0.2, 0.0, 0.9, "data.validation.fraction"),
        polygon=r.path_of("data.validation.polygon", polygon) if polygon else None,
    )


def _parse_quality(r: _Reader, section: dict) -> QualityMaskConfig:
    d = QualityMaskConfig()
    r.unknown_keys(section, set(QualityMaskConfig.__dataclass_fields__), "data.quality_mask")
    return QualityMaskConfig(
        enabled=r.flag(section, "enabled", d.enabled, "data.quality_mask.enabled"),
        overexposed=r.number(section, "overexposed", d.overexposed, 0.0, 1.0, "data.quality_mask.overexposed"),
        underexposed=r.number(section, "underexposed", d.underexposed, 0.0, 1.0, "data.quality_mask.underexposed"),
        blur_window=r.integer(section, "blur_window", d.blur_window, 3, 1025, "data.quality_mask.blur_window"),
        blur_threshold=r.number(
            section, "blur_threshold", d.blur_threshold, 0.0, 1.0, "data.quality_mask.blur_threshold"
        ),
    )


def _parse_preprocess(r: _Reader, section: dict) -> PreprocessConfig:
    r.unknown_keys(section, {"scaling", "scale", "percentiles", "normalization"}, "preprocess")
    scaling = r.choice(section, "scaling", "auto", ("auto", "fixed", "percentile"), "preprocess.scaling")
    scale = section.get("scale")
    if scaling == "fixed" and not (isinstance(scale, list) and len(scale) == 2 and scale[0] < scale[1]):
        raise r.fail("preprocess.scale", "scaling: fixed needs scale: [low, high] in raw pixel values")
    percentiles = section.get("percentiles", [2.0, 98.0])
    if not (isinstance(percentiles, list) and len(percentiles) == 2 and 0 <= percentiles[0] < percentiles[1] <= 100):
        raise r.fail("preprocess.percentiles", "expected [low, high] with 0 <= low < high <= 100")
    return PreprocessConfig(
        scaling=scaling,
        scale=(float(scale[0]), float(scale[1])) if scaling == "fixed" else None,
        percentiles=(float(percentiles[0]), float(percentiles[1])),
        normalization=r.choice(
            section, "normalization", "auto", ("auto", "imagenet", "dataset"), "preprocess.normalization"
        ),
    )


def _parse_model(r: _Reader, section: dict) -> ModelConfig:
    r.unknown_keys(section, {"encoder", "weights", "architecture"}, "model")
    if section.get("architecture", "unet").lower() != "unet":
        raise r.fail("model.architecture", "only unet is supported")
    encoder = section.get("encoder", "resnet34")
    if not isinstance(encoder, str):
        raise r.fail("model.encoder", "expected an encoder name such as resnet34 or tu-efficientnet_lite0")
    weights = section.get("weights", "imagenet")
    if weights is not None and not isinstance(weights, str):
        raise r.fail("model.weights", "expected imagenet, torchgeo:<weights>, null or a path to a weights file")
    if isinstance(weights, str) and weights.startswith("torchgeo:"):
        if not re.fullmatch(r"torchgeo:\w+_Weights\.\w+", weights):
            raise r.fail("model.weights", f"expected torchgeo:<Enum>_Weights.<MEMBER>, e.g. "
                         f"torchgeo:ResNet18_Weights.LANDSAT_ETM_SR_MOCO, got {weights!r}")  # fmt: skip
    elif weights not in (None, "imagenet"):
        weights = str(r.path_of("model.weights", weights))
    return ModelConfig(encoder=encoder, weights=weights)


def _parse_train(r: _Reader, section: dict) -> TrainConfig:
    d = TrainConfig()
    allowed = set(TrainConfig.__dataclass_fields__)
    r.unknown_keys(section, allowed, "train")
    aug = section.get("augment") or {}
    r.unknown_keys(aug, set(AugmentConfig.__dataclass_fields__), "train.augment")
    da = AugmentConfig()
    return TrainConfig(
        tile_size=r.auto_integer(section, "tile_size", 32, 4096, "train.tile_size"),
        batch_size=r.integer(section, "batch_size", d.batch_size, 1, 1024, "train.batch_size"),
        lr=r.number(section, "lr", d.lr, 1e-8, 1.0, "train.lr"),
        steps=r.auto_integer(section, "steps", 1, 100_000_000, "train.steps"),
        epochs=r.auto_integer(section, "epochs", 1, 1_000_000, "train.epochs"),
        samples_per_epoch=r.integer(
            section, "samples_per_epoch", d.samples_per_epoch, 1, 10_000_000, "train.samples_per_epoch"
        ),
        optimizer=r.choice(section, "optimizer", d.optimizer, ("adam", "adamw"), "train.optimizer"),
        weight_decay=r.number(section, "weight_decay", d.weight_decay, 0.0, 1.0, "train.weight_decay"),
        encoder_lr=r.number(section, "encoder_lr", d.encoder_lr, 0.0, 10.0, "train.encoder_lr"),
        loss=r.choice(section, "loss", d.loss, LOSSES, "train.loss"),
        class_weights=r.choice(section, "class_weights", d.class_weights, ("none", "balanced"), "train.class_weights"),
        schedule=r.choice(section, "schedule", d.schedule, SCHEDULES, "train.schedule"),
        warmup=r.number(section, "warmup", d.warmup, 0.0, 0.5, "train.warmup"),
        ema=r.number(section, "ema", d.ema, 0.0, 0.99999, "train.ema"),
        tta=r.flag(section, "tta", d.tta, "train.tta"),
        decoder_dropout=r.number(section, "decoder_dropout", d.decoder_dropout, 0.0, 0.9, "train.decoder_dropout"),
        refit=r.flag(section, "refit", d.refit, "train.refit"),
        keep=r.choice(section, "keep", d.keep, ("best", "final"), "train.keep"),
        early_stopping_patience=r.integer(
            section,
            "early_stopping_patience",
            d.early_stopping_patience,
            0,
            1_000_000,
            "train.early_stopping_patience",
        ),
        rare_class_sampling=r.flag(section, "rare_class_sampling", d.rare_class_sampling, "train.rare_class_sampling"),
        seed=r.integer(section, "seed", d.seed, 0, 2**31 - 1, "train.seed"),
        num_workers=r.integer(section, "num_workers", d.num_workers, 0, 64, "train.num_workers"),
        augment=AugmentConfig(
            flips=r.flag(aug, "flips", da.flips, "train.augment.flips"),
            rot90=r.flag(aug, "rot90", da.rot90, "train.augment.rot90"),
            brightness=r.number(aug, "brightness", da.brightness, 0.0, 1.0, "train.augment.brightness"),
            contrast=r.number(aug, "contrast", da.contrast, 0.0, 1.0, "train.augment.contrast"),
            scale_jitter=r.number(aug, "scale_jitter", da.scale_jitter, 0.0, 0.9, "train.augment.scale_jitter"),
            color=r.number(aug, "color", da.color, 0.0, 0.5, "train.augment.color"),
            blur=r.number(aug, "blur", da.blur, 0.0, 10.0, "train.augment.blur"),
            noise=r.number(aug, "noise", da.noise, 0.0, 0.5, "train.augment.noise"),
        ),
        semi_supervised=_parse_semi_supervised(r, section.get("semi_supervised")),
        neighbourhood_weight=r.number(
            section, "neighbourhood_weight", d.neighbourhood_weight, 0.0, 100.0, "train.neighbourhood_weight"
        ),
        baseline=r.flag(section, "baseline", d.baseline, "train.baseline"),
    )


def _parse_semi_supervised(r: _Reader, section: Any) -> SemiSupervisedConfig:
    """A mapping of the keys below, or just true/false (absent: off)."""
    if section is None:
        return SemiSupervisedConfig()
    if isinstance(section, bool):
        return SemiSupervisedConfig(enabled=section)
    if not isinstance(section, dict):
        raise r.fail("train.semi_supervised", f"expected true, false or a mapping of its keys, got {section!r}")
    name = "train.semi_supervised"
    r.unknown_keys(section, set(SemiSupervisedConfig.__dataclass_fields__), name)
    d = SemiSupervisedConfig()
    return SemiSupervisedConfig(
        enabled=r.flag(section, "enabled", True, f"{name}.enabled"),  # a mapping given means "on" unless it says not
        threshold=r.number(section, "threshold", d.threshold, 0.0, 1.0, f"{name}.threshold"),
        weight=r.number(section, "weight", d.weight, 0.0, 100.0, f"{name}.weight"),
        rampup=r.number(section, "rampup", d.rampup, 0.0, 1.0, f"{name}.rampup"),
        class_balanced=r.flag(section, "class_balanced", d.class_balanced, f"{name}.class_balanced"),
        batch_size=r.auto_integer(section, "batch_size", 1, 1024, f"{name}.batch_size"),
    )


def _parse_adaptation(r: _Reader, section: Any) -> AdaptationConfig:
    if not isinstance(section, dict):
        raise r.fail("adaptation", "expected a mapping with targets (and optional weight)")
    if "labels" in section:
        raise r.fail(
            "adaptation.labels",
            "adaptation never reads target labels; remove the key (score the adapted model with `geoseg evaluate`)",
        )
    r.unknown_keys(section, {"targets", "weight"}, "adaptation")
    targets_raw = section.get("targets", [])
    if isinstance(targets_raw, str):
        targets_raw = [targets_raw]
    if not isinstance(targets_raw, list):
        raise r.fail("adaptation.targets", "expected one or more unlabeled orthomosaic paths")
    d = AdaptationConfig()
    return AdaptationConfig(
        targets=[r.path_of("adaptation.targets", p) for p in targets_raw],
        weight=r.number(section, "weight", d.weight, 0.0, 100.0, "adaptation.weight"),
    )
