#!/usr/bin/env python3
"""Training-window loader throughput: geoseg vs torchgeo's documented reference (issue 2).

Both pipelines deliver the same thing to a training step: a batch of ``B`` windows of
``512 x 512`` px as float32 ``(B, 3, H, W)`` images, scaled to 0..1 and standardised with the
ImageNet mean/std, plus int64 ``(B, H, W)`` class masks (0..3, 255 = ignore).

torchgeo (reference, only documented API)
    ``RasterDataset(image) & RasterDataset(labels, is_image=False)`` (an ``IntersectionDataset``),
    ``RandomGeoSampler(ds, size=512, length=N)``, ``DataLoader(..., collate_fn=stack_samples)``.
    Per sample: a GeoDataFrame query of the index per dataset, then one ``rasterio.merge.merge``
    call per dataset (image: bilinear resampling because the image dtype is float32, but the
    queries are pixel-snapped; labels: nearest), cast to float32 / int64, and a dict merge. The
    image comes back as float 0..255, so the timed loop divides by 255 and applies the ImageNet
    mean/std to each batch (``--torchgeo-norm loop``, the default; ``dataset`` does it per sample
    through the dataset's ``transforms`` instead, i.e. inside the workers as geoseg does).

geoseg
    ``LabeledOrtho`` (labels read into memory once and mapped to class indices) and
    ``LabeledWindowSampler`` through a plain ``DataLoader(batch_size=B, sampler=...)``.
    Per sample (``geoseg.io.raster.read_window``): one plain ``rasterio`` read of the window's part
    inside the image plus its dataset-mask read, label slice copied from memory, scaling +
    standardisation in numpy.
    ``geoseg+aug`` also applies the default training augmentation (flips, 90° rotations,
    brightness/contrast jitter; ``AugmentConfig()``).

Method: every measurement builds fresh datasets, samplers and file handles (so each starts with a
cold GDAL block cache for its handle) and a fresh DataLoader; the first ``--warmup`` batches (and
the worker start-up) are not timed; then ``--windows`` windows are timed. Pipelines are
alternated within each round (order reversed every other round) and the median over rounds is
reported. CPU time used by *other* processes during each measurement is read from /proc/stat.

Example::

    python bench/loader_throughput.py --size 8192 --windows 200 --batch 8 --workers 0,2 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
import torchgeo
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import RandomGeoSampler

ROOT = Path(__file__).resolve().parent.parent
# Measure the geoseg of this checkout, wherever the environment's (editable) install points.
sys.path.insert(0, str(ROOT))

from rasterio.windows import Window  # noqa: E402

from geoseg.config import IGNORE_INDEX, AugmentConfig  # noqa: E402
from geoseg.data.datasets import LabeledOrtho  # noqa: E402
from geoseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalization  # noqa: E402
from geoseg.data.sampling import LabeledWindowSampler  # noqa: E402
from geoseg.io.raster import read_info  # noqa: E402

DEFAULT_MOSAIC_SCRIPT = Path("/work/shared/bench/make_mosaic.py")
SECTION = "## Training-window loader throughput (issue 2)"
TILE = 512
N_CLASSES = 4


class LabelRaster(RasterDataset):
    """The label raster as a torchgeo mask layer (``is_image=False`` → ``sample['mask']``, int64)."""

    is_image = False


# ---------------------------------------------------------------------------------------------
# inputs


def ensure_inputs(out_dir: Path, size: int, script: Path) -> tuple[Path, Path]:
    """Mosaic and label raster of ``size``² in ``out_dir``, generated if missing."""
    mosaic, labels = out_dir / f"m{size}.tif", out_dir / f"l{size}.tif"
    if mosaic.exists() and labels.exists():
        for p in (mosaic, labels):
            with rasterio.open(p) as ds:
                if (ds.width, ds.height) != (size, size):
                    sys.exit(f"{p} is {ds.width}x{ds.height}, not {size}²; delete it or pick another --out-dir")
        return mosaic, labels
    if not script.exists():
        sys.exit(f"{mosaic} missing and generator {script} not found (--mosaic-script)")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"generating {mosaic.name} + {labels.name} with {script} ...", flush=True)
    subprocess.run([sys.executable, str(script), str(mosaic), "--size", str(size), "--labels", str(labels)], check=True)
    return mosaic, labels


def load_labels(path: Path) -> np.ndarray:
    """Label raster → in-memory uint8 class indices 0..3, everything else IGNORE_INDEX."""
    with rasterio.open(path) as ds:
        raw = ds.read(1)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:N_CLASSES] = np.arange(N_CLASSES, dtype=np.uint8)  # raster values are the class indices
    return lut[raw]


# ---------------------------------------------------------------------------------------------
# pipelines

MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
STD = torch.tensor(IMAGENET_STD, dtype=torch.float32)


def tg_normalize_batch(image: torch.Tensor) -> torch.Tensor:
    """torchgeo image batch (B, C, H, W) float 0..255 → geoseg's network input."""
    return ((image / 255.0).clamp_(0.0, 1.0) - MEAN[:, None, None]) / STD[:, None, None]


def tg_normalize_sample(sample: dict) -> dict:
    """Same, for one sample (used as the dataset's ``transforms`` with ``--torchgeo-norm dataset``)."""
    sample["image"] = ((sample["image"] / 255.0).clamp_(0.0, 1.0) - MEAN[:, None, None]) / STD[:, None, None]
    return sample


@dataclass
class Inputs:
    mosaic: Path
    label_path: Path
    labels: np.ndarray
    normalization: Normalization


@dataclass
class Pipeline:
    name: str
    describe: str
    #: (length, seed) → (DataLoader, per-batch function returning (image, mask))
    build: Callable[[int, int, int], tuple[DataLoader, Callable[[dict], tuple[torch.Tensor, torch.Tensor]]]]


def make_torchgeo(inputs: Inputs, batch: int, norm: str) -> Pipeline:
    def build(length: int, seed: int, workers: int):
        transforms = tg_normalize_sample if norm == "dataset" else None
        image = RasterDataset(paths=str(inputs.mosaic), transforms=transforms)
        mask = LabelRaster(paths=str(inputs.label_path))
        ds = image & mask
        gen = torch.Generator().manual_seed(seed)
        with warnings.catch_warnings():  # 0.10 deprecates it for RandomPatchSampler; the brief names it
            warnings.simplefilter("ignore", DeprecationWarning)
            sampler = RandomGeoSampler(ds, size=TILE, length=length, generator=gen)
        loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=stack_samples)

        def consume(b: dict) -> tuple[torch.Tensor, torch.Tensor]:
            img = b["image"] if norm == "dataset" else tg_normalize_batch(b["image"])
            return img, b["mask"]

        return loader, consume

    where = "per sample in the dataset" if norm == "dataset" else "per batch in the loop"
    return Pipeline("torchgeo", f"RasterDataset & RasterDataset, RandomGeoSampler; normalisation {where}", build)


def make_geoseg(inputs: Inputs, batch: int, augment: bool) -> Pipeline:
    info = read_info(inputs.mosaic)

    def build(length: int, seed: int, workers: int):
        ds = LabeledOrtho(
            inputs.mosaic,
            info.grid,
            inputs.labels,
            info.image_bands,
            inputs.normalization,
            augment=AugmentConfig() if augment else None,
            out_size=TILE if augment else None,
            seed=seed,
        )
        sampler = LabeledWindowSampler(ds, TILE, length, seed=seed)
        loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers)
        return loader, lambda b: (b["image"], b["mask"])

    if augment:
        return Pipeline("geoseg+aug", "LabeledOrtho(augment=AugmentConfig()), LabeledWindowSampler", build)
    return Pipeline("geoseg", "LabeledOrtho (no augmentation, no quality mask), LabeledWindowSampler", build)


# ---------------------------------------------------------------------------------------------
# measuring


def cpu_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (the DataLoader workers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class Measurement:
    pipeline: str
    workers: int
    round: int
    windows: int
    seconds: float
    build_seconds: float
    other_cpu: float
    load: float
    wall: float
    mask_dtype: str
    attempts: int = 1

    @property
    def other_share(self) -> float:
        """Average number of cores other processes kept busy during the measurement."""
        return self.other_cpu / self.wall

    @property
    def wps(self) -> float:
        return self.windows / self.seconds


def measure(p: Pipeline, workers: int, rnd: int, windows: int, batch: int, warmup: int, seed: int) -> Measurement:
    busy0, own0 = cpu_busy_seconds(), own_cpu_seconds()
    t0 = time.perf_counter()
    loader, consume = p.build(warmup * batch + windows, seed, workers)
    build_seconds = time.perf_counter() - t0
    it = iter(loader)
    for _ in range(warmup):
        consume(next(it))
    n, start, mask_dtype = 0, time.perf_counter(), ""
    for b in it:
        image, mask = consume(b)
        ok_mask = mask.dtype in (torch.int64, torch.uint8) and mask.shape[-2:] == (TILE, TILE)
        if image.dtype != torch.float32 or image.shape[-3:] != (3, TILE, TILE) or not ok_mask:
            raise RuntimeError(f"{p.name}: unexpected batch {image.dtype} {tuple(image.shape)} {mask.dtype}")
        n += image.shape[0]
        mask_dtype = str(mask.dtype).removeprefix("torch.")
    seconds = time.perf_counter() - start
    del it, loader
    wall = time.perf_counter() - t0
    other = max((cpu_busy_seconds() - busy0) - (own_cpu_seconds() - own0), 0.0)
    return Measurement(p.name, workers, rnd, n, seconds, build_seconds, other, os.getloadavg()[0], wall, mask_dtype)


def check_equivalence(inputs: Inputs, n: int = 4) -> str:
    """Same windows through both datasets: do they produce the same tensors?"""
    info = read_info(inputs.mosaic)
    g = LabeledOrtho(inputs.mosaic, info.grid, inputs.labels, info.image_bands, inputs.normalization)
    tg = RasterDataset(paths=str(inputs.mosaic)) & LabelRaster(paths=str(inputs.label_path))
    rng = np.random.default_rng(1)
    worst_img, mask_diff = 0.0, 0
    for _ in range(n):
        r, c = (int(v) for v in rng.integers(0, info.grid.height - TILE, size=2))
        w = Window(c, r, TILE, TILE)
        a = g.read(w)
        b = tg[g.geo_slice(w)]
        img_b = tg_normalize_batch(b["image"][None])[0]
        worst_img = max(worst_img, float((a["image"] - img_b).abs().max()))
        mask_diff += int((a["mask"] != b["mask"]).sum())
    return (
        f"{n} random windows read through both datasets: max |image diff| = {worst_img:.2e}, "
        f"differing mask pixels = {mask_diff}"
    )


def read_breakdown(inputs: Inputs, n: int = 40) -> list[tuple[str, float, float]]:
    """ms per window, first and second pass over the same ``n`` windows (GDAL block cache cold/warm)."""
    info = read_info(inputs.mosaic)
    rng = np.random.default_rng(2)
    wins = [Window(int(c), int(r), TILE, TILE) for r, c in rng.integers(0, info.grid.height - TILE, size=(n, 2))]
    bands = info.image_bands
    out = []

    def two_passes(label: str, make: Callable[[], Callable[[Window], object]]) -> None:
        f = make()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            for w in wins:
                f(w)
            times.append((time.perf_counter() - t0) / n * 1000)
        out.append((label, times[0], times[1]))

    def raw(**kw):
        def make():
            ds = rasterio.open(inputs.mosaic)
            return lambda w: ds.read(bands, window=w, **kw)

        return make

    def mask(**kw):
        def make():
            ds = rasterio.open(inputs.mosaic)
            return lambda w: ds.dataset_mask(window=w, **kw)

        return make

    def geoseg():
        ds = LabeledOrtho(inputs.mosaic, info.grid, inputs.labels, bands, inputs.normalization)
        return lambda w: ds[ds.geo_slice(w)]

    def tg():
        g = LabeledOrtho(inputs.mosaic, info.grid, inputs.labels, bands, inputs.normalization)
        ds = RasterDataset(paths=str(inputs.mosaic)) & LabelRaster(paths=str(inputs.label_path))
        return lambda w: ds[g.geo_slice(w)]

    two_passes("rasterio `read(window)` of the 3 bands", raw())
    two_passes("rasterio `read(window, boundless=True)` (a VRT per call)", raw(boundless=True, fill_value=0))
    two_passes("rasterio `dataset_mask(window)`", mask())
    two_passes("rasterio `dataset_mask(window, boundless=True)`", mask(boundless=True))
    two_passes("torchgeo `ds[query]` (image & labels, no normalisation)", tg)
    two_passes("geoseg `LabeledOrtho[query]` (image, mask, normalised)", geoseg)
    return out


# ---------------------------------------------------------------------------------------------
# reporting


def others_busy(seconds: float) -> float:
    """Cores used by other processes over ``seconds`` (this process idles meanwhile)."""
    busy0, own0 = cpu_busy_seconds(), own_cpu_seconds()
    time.sleep(seconds)
    return max((cpu_busy_seconds() - busy0) - (own_cpu_seconds() - own0), 0.0) / seconds


def wait_until_others_idle(max_other: float, timeout: float = 120.0) -> float:
    """Before a measurement: if others are busy, wait for a quiet 5 s spell (up to ``timeout``)."""
    waited, busy = 0.0, others_busy(1.0)
    while busy > max_other and waited < timeout:
        busy = others_busy(5.0)
        waited += 5.0
    if waited:
        print(f"  waited {waited:.0f} s for other processes to go quiet (now {busy:.2f} cores)", flush=True)
    return waited


def wait_for_quiet(max_load: float, max_wait: float) -> tuple[float, float]:
    """Wait (60 s steps, up to ``max_wait``) until the 1-min load average is at most ``max_load``."""
    waited = 0.0
    load = os.getloadavg()[0]
    while load > max_load and waited < max_wait:
        print(f"load average {load:.2f} > {max_load}; waiting 60 s ({waited:.0f}/{max_wait:.0f} s)", flush=True)
        time.sleep(60)
        waited += 60
        load = os.getloadavg()[0]
    return load, waited


def geoseg_state() -> str:
    """Commit, working-tree status and a digest of the geoseg modules this process imported."""
    files = sorted(
        Path(m.__file__).resolve()
        for name, m in list(sys.modules.items())
        if (name == "geoseg" or name.startswith("geoseg.")) and getattr(m, "__file__", None)
    )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + (f.read_bytes() if f.exists() else b""))
    head = "?"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        rel = [str(f.relative_to(ROOT)) for f in files if f.is_relative_to(ROOT)]
        dirty = subprocess.run(["git", "status", "--porcelain", *rel], cwd=ROOT, capture_output=True, text=True)
        head += " + uncommitted changes" if dirty.stdout.strip() else ""
    except (OSError, ValueError):
        pass
    return f"{head} (sha256 of the {len(files)} imported geoseg modules: {digest.hexdigest()[:12]})"


def machine_lines() -> list[str]:
    model = cores = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
        model, cores = info.get("Model name", "?"), info.get("CPU(s)", "?")
    except (OSError, subprocess.CalledProcessError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- Machine: {model}, {cores} CPU(s), {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}",
        f"- Date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, torchgeo {torchgeo.__version__}, "
        f"rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}), numpy {np.__version__}",
    ]


def by_key(ms: Iterable[Measurement]) -> dict[tuple[str, int], list[Measurement]]:
    out: dict[tuple[str, int], list[Measurement]] = {}
    for m in ms:
        out.setdefault((m.pipeline, m.workers), []).append(m)
    return out


def table(ms: list[Measurement], names: list[str], workers: list[int], max_other: float) -> str:
    groups = by_key(ms)
    rows = [
        "| pipeline | workers | windows/s per round | median windows/s | ms / window | vs torchgeo |",
        "|---|---|---|---|---|---|",
    ]
    for w in workers:
        ref = statistics.median(m.wps for m in groups[("torchgeo", w)])
        for name in names:
            g = groups[(name, w)]
            med = statistics.median(m.wps for m in g)
            per_round = ", ".join(
                f"{m.wps:.1f}" + ("†" if m.other_share > max_other else "") for m in sorted(g, key=lambda m: m.round)
            )
            ratio = "1.00 (reference)" if name == "torchgeo" else f"**{med / ref:.2f}×**"
            rows.append(f"| {name} | {w} | {per_round} | {med:.1f} | {1000 / med:.1f} | {ratio} |")
    return "\n".join(rows)


@dataclass
class Report:
    args: argparse.Namespace
    pipelines: list[Pipeline]
    measurements: list[Measurement] = field(default_factory=list)
    load_start: float = 0.0
    waited: float = 0.0
    load_end: float = 0.0
    equivalence: str = ""
    breakdown: list[tuple[str, float, float]] = field(default_factory=list)
    breakdown_other: float = 0.0
    total_seconds: float = 0.0
    code_start: str = ""
    code_end: str = ""

    def markdown(self) -> str:
        a = self.args
        names = [p.name for p in self.pipelines]
        other = [m.other_share for m in self.measurements]
        repeated = sum(m.attempts > 1 for m in self.measurements)
        disturbed = sum(m.other_share > a.max_other for m in self.measurements)
        dtypes = {m.pipeline: m.mask_dtype for m in self.measurements}
        lines = [
            SECTION,
            "",
            f"Command: `python bench/loader_throughput.py --size {a.size} --windows {a.windows} --batch {a.batch} "
            f"--workers {','.join(map(str, a.workers))} --rounds {a.rounds} --warmup {a.warmup}"
            f"{' --no-augment' if a.no_augment else ''} --torchgeo-norm {a.torchgeo_norm}`",
            "",
            *machine_lines(),
            f"- geoseg measured: {self.code_start}"
            + (
                ""
                if self.code_end == self.code_start
                else f" — **WARNING: geoseg/ changed during the run (now {self.code_end}); "
                "the figures are for the code imported at start**"
            ),
            f"- Conditions: torch.set_num_threads({a.threads}); load average (1 min) {self.load_start:.2f} at start"
            f"{f' after waiting {self.waited:.0f} s' if self.waited else ''}, {self.load_end:.2f} at end "
            "(includes this benchmark). Cores kept busy by other processes during a measurement (/proc/stat "
            f"minus this process and its workers): median {statistics.median(other):.2f}, max {max(other):.2f}; "
            f"{repeated} measurement(s) repeated because others used > {a.max_other} cores, {disturbed} still "
            f"above that (marked †). Whole run {self.total_seconds:.0f} s.",
            f"- Input: synthetic {a.size}² 3-band uint8 mosaic + uint8 label raster from `make_mosaic.py` "
            "(tiled 512, deflate), EPSG:32633, 5 cm pixels.",
            f"- Each cell: {a.windows} timed windows of {TILE}² px in batches of {a.batch}, after {a.warmup} "
            "untimed warm-up batches (worker start-up untimed too); fresh datasets, file handles and "
            "DataLoader per measurement. Rounds alternate the pipelines (order reversed every other round).",
            f"- Same output for both: {self.equivalence}. Mask dtype delivered per batch: "
            + ", ".join(f"{n} {d}" for n, d in dtypes.items())
            + " (the torchgeo mask is int64 by design; a uint8 mask is a quarter of the bytes to collate and ship).",
            "",
            table(self.measurements, names, a.workers, a.max_other),
            "",
            "What each pipeline does per window:",
            "",
            "- **torchgeo**: `RasterDataset(mosaic) & RasterDataset(labels, is_image=False)` → "
            "`RandomGeoSampler(size=512)` → `DataLoader(collate_fn=stack_samples)`. Per window, for each of "
            "the two datasets: a GeoDataFrame spatial query of its index, then `rasterio.merge.merge` into a new "
            "array (image with bilinear resampling since it is cast to float32 — the queries are pixel-snapped, "
            "so values are exact), cast to float32/int64; the two dicts are merged. Image arrives as float "
            "0..255; the /255 + ImageNet standardisation is "
            + ("applied per batch in the timed loop." if a.torchgeo_norm == "loop" else "applied per sample.")
            + " Labels come from the label raster on every read.",
            "- **geoseg**: `LabeledOrtho` + `LabeledWindowSampler` → plain `DataLoader(batch_size, sampler)`. "
            "Per window (`geoseg.io.raster.read_window`): one plain rasterio `read` of the three bands over "
            "the part of the window inside the raster plus one `dataset_mask` read (no boundless VRT), "
            "the label window sliced from the in-memory array (read and mapped once, "
            "before timing), scaling and ImageNet standardisation in numpy (per sample, inside the workers). "
            "**geoseg+aug** adds the training augmentation (`AugmentConfig()`: flips, 90° rotations, "
            "brightness/contrast ±0.1, done on numpy arrays in scaled units).",
            "- Not timed: dataset/sampler construction, shown here as median seconds per measurement: "
            + ", ".join(
                f"{n} {statistics.median(m.build_seconds for m in self.measurements if m.pipeline == n):.2f} s"
                for n in names
            )
            + " (geoseg's sampler scans the labels for candidate windows; torchgeo builds its index).",
            "",
        ]
        if self.breakdown:
            lines += [
                "Per-window read cost, single process, same 40 random windows read twice through one "
                "handle (first pass: GDAL block cache cold; second: the blocks were read before); other "
                f"processes kept {self.breakdown_other:.2f} cores busy meanwhile:",
                "",
                "| read | 1st pass ms/window | 2nd pass ms/window |",
                "|---|---|---|",
                *(f"| {label} | {a:.1f} | {b:.1f} |" for label, a, b in self.breakdown),
                "",
            ]
        return "\n".join(lines)


def write_results(path: Path, section: str) -> None:
    """Insert or replace the section in RESULTS.md (created with a short intro if absent)."""
    if path.exists():
        text = path.read_text()
    else:
        text = (
            "# geoseg benchmarks\n\n"
            "Results of the scripts in `bench/`. Figures depend on the machine and its load; compare "
            "only numbers taken in the same run.\n"
        )
    start = text.find(SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section.rstrip() + "\n" + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    path.write_text(text)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=8192, help="mosaic width = height, px (default 8192)")
    p.add_argument("--windows", type=int, default=200, help="timed windows per measurement (default 200)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--workers", default="0,2", help="comma-separated DataLoader num_workers values (default 0,2)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per pipeline (default 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up batches per measurement (default 3)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out", help="where the inputs live/are made")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--no-augment", action="store_true", help="leave out the geoseg+aug pipeline")
    p.add_argument(
        "--torchgeo-norm",
        choices=("loop", "dataset"),
        default="loop",
        help="where torchgeo's /255 + ImageNet standardisation runs: per batch in the loop (default) "
        "or per sample as the dataset's transforms",
    )
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-read cost table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mosaic-script", type=Path, default=DEFAULT_MOSAIC_SCRIPT)
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md", help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only; do not touch --results")
    p.add_argument("--max-load", type=float, default=1.5, help="wait while the 1-min load average exceeds this")
    p.add_argument("--max-wait", type=float, default=600, help="longest wait for a quiet machine, s")
    p.add_argument(
        "--max-other",
        type=float,
        default=0.2,
        help="cores other processes may use (from /proc/stat): wait for a quiet spell before each "
        "measurement, repeat one during which they used more (default 0.2)",
    )
    p.add_argument("--retries", type=int, default=2, help="repeats of a disturbed measurement (default 2)")
    args = p.parse_args(argv)
    try:
        args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        p.error("--workers takes comma-separated integers, e.g. 0,2")
    if not args.workers or min(args.workers) < 0:
        p.error("--workers needs at least one value >= 0")
    if args.size < TILE or args.windows < 1 or args.batch < 1 or args.rounds < 1 or args.warmup < 0:
        p.error(f"--size >= {TILE}, --windows/--batch/--rounds >= 1 and --warmup >= 0 required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    code_start = geoseg_state()  # modules were imported moments ago: this is the code that runs
    torch.set_num_threads(args.threads)
    t_run = time.perf_counter()
    mosaic, label_path = ensure_inputs(args.out_dir, args.size, args.mosaic_script)
    inputs = Inputs(
        mosaic,
        label_path,
        load_labels(label_path),
        Normalization(scale=[(0.0, 255.0)] * 3, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    )
    pipelines = [make_torchgeo(inputs, args.batch, args.torchgeo_norm), make_geoseg(inputs, args.batch, False)]
    if not args.no_augment:
        pipelines.append(make_geoseg(inputs, args.batch, True))
    report = Report(args, pipelines, code_start=code_start)
    report.equivalence = check_equivalence(inputs)
    print(report.equivalence, flush=True)

    report.load_start, report.waited = wait_for_quiet(args.max_load, args.max_wait)
    print(f"load average {report.load_start:.2f}; starting", flush=True)
    for rnd in range(args.rounds):
        order = pipelines if rnd % 2 == 0 else pipelines[::-1]
        for workers in args.workers:
            for p in order:
                for attempt in range(1, args.retries + 2):
                    wait_until_others_idle(args.max_other)
                    m = measure(p, workers, rnd, args.windows, args.batch, args.warmup, args.seed + rnd)
                    m.attempts = attempt
                    print(
                        f"round {rnd} workers={workers} {p.name:<10} {m.wps:7.1f} windows/s "
                        f"({m.windows} in {m.seconds:.2f} s; build {m.build_seconds:.2f} s; other processes "
                        f"{m.other_cpu:.1f} CPU-s = {m.other_share:.2f} cores; load {m.load:.2f})",
                        flush=True,
                    )
                    if m.other_share <= args.max_other or attempt > args.retries:
                        break
                    print(f"  disturbed (> {args.max_other} cores used by others); repeating", flush=True)
                report.measurements.append(m)
    if not args.no_breakdown:
        busy0, own0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
        report.breakdown = read_breakdown(inputs)
        other = (cpu_busy_seconds() - busy0) - (own_cpu_seconds() - own0)
        report.breakdown_other = max(other, 0.0) / (time.perf_counter() - t0)
        for label, a, b in report.breakdown:
            print(f"{label:<75} {a:6.1f} {b:6.1f} ms/window", flush=True)
    report.load_end = os.getloadavg()[0]
    report.code_end = geoseg_state()
    if report.code_end != report.code_start:
        print(f"WARNING: geoseg/ changed during the run: {report.code_start} -> {report.code_end}", file=sys.stderr)
    report.total_seconds = time.perf_counter() - t_run
    section = report.markdown()
    print()
    print(section)
    if not args.no_write:
        write_results(args.results, section)
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
