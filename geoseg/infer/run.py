"""`geoseg infer`: a mosaic of any size → class map (+ confidence) on its exact grid, blocks in parallel.

Everything the user can get wrong is checked before any output is created; outputs appear atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from rasterio.errors import RasterioIOError

from geoseg.config import ClassSpec
from geoseg.device import resolve_device
from geoseg.drift.check import band_report
from geoseg.drift.remedies import remedied_normalization, remedy_record
from geoseg.drift.report import DriftReport
from geoseg.errors import InputError, OutputError
from geoseg.infer.assemble import Assembler, Contribution, block_grid
from geoseg.infer.balance import balanced_jobs
from geoseg.infer.block import cached_bundle
from geoseg.infer.cluster import check_scheduler
from geoseg.infer.engine import InferenceSpec
from geoseg.infer.parallel import SCHEDULERS, BlockJob, run_blocks
from geoseg.infer.settings import default_batch_size, resolve_precision, window_size
from geoseg.io.classmap import confidence_percent, open_class_map, open_confidence_map
from geoseg.io.raster import (
    RasterInfo,
    cap_gdal_cache,
    ensure_writable,
    first_line,
    read_info,
    removed_if_left_empty,
)
from geoseg.io.vector import aoi_geometry
from geoseg.memory import PeriodicRelease
from geoseg.model.bundle import Bundle, bundle_version, check_bundle_fits, load_bundle
from geoseg.progress import Progress

RELEASE_EVERY = 8  # contributions between handing freed memory back to the system (geoseg.memory)


def default_workers() -> int:
    """One block per core (each forward pass is single-threaded on the CPU), at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class InferOptions:
    tile: int | None = None
    overlap: int | None = None
    block_size: int = 1024
    batch_size: int | None = None  # None: 1 on the CPU (no padded slots), 8 on a GPU
    workers: int = field(default_factory=default_workers)
    scheduler: str = "threads"  # sync | threads | processes | local (LocalCluster) | a scheduler address
    device: str = "auto"
    precision: str = "auto"
    aoi: Path | None = None
    confidence: bool = False
    remedy: str = "none"  # none | mosaic-stats | histogram: map each band onto the training data first
    tta: bool | None = None  # None: the bundle's default (its training recipe's)


@dataclass(frozen=True)
class ClassMapResult:
    classes: Path
    confidence: Path | None
    spec: InferenceSpec
    blocks: int
    drift: DriftReport | None = None


def check_output_folder(folder: Path) -> None:
    """Fail early, in one line, when outputs could not be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".geoseg-write-check-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write here ({exc.strerror}); choose another --out-dir", folder) from None


@dataclass
class MosaicPlan:
    """A checked mosaic, ready to run: its block jobs, the assembler that completes blocks, output tags."""

    mosaic: Path
    info: RasterInfo
    spec: InferenceSpec
    classes: list[ClassSpec]
    jobs: list[BlockJob]
    assembler: Assembler
    tags: dict[str, str]
    drift: DriftReport | None

    @property
    def blocks(self) -> int:
        """The blocks written (jobs can be fewer blocks' bands too: ``balance.py``)."""
        return len(self.assembler.blocks)


def plan_mosaic(mosaic: Path, bundle: Bundle, options: InferOptions, device: str, confidence: bool,
                on_workers: bool = False) -> MosaicPlan:  # fmt: skip
    """Check the mosaic against the (loaded) bundle and cut it into block jobs; creates no output.

    ``on_workers``: ``device`` is the one asked for ("auto", "cuda", "cpu"), and each worker resolves it,
    with the precision and batch size that follow from it (a cluster's GPUs, seen from a login node).
    """
    cap_gdal_cache()
    info = read_info(mosaic)
    precision = resolve_precision(options.precision, "cpu" if on_workers else device, meta=bundle.meta)
    if on_workers and bundle.meta.runtime != "onnx":
        precision = options.precision  # checked above; "auto" is resolved by the worker
    check_bundle_fits(bundle, info)
    meta = bundle.meta
    bundle_path = bundle.path
    tile, overlap = window_size(options.tile, options.overlap, meta)
    aoi = aoi_geometry(options.aoi, info.grid, info.path) if options.aoi is not None else None
    report = band_report(mosaic, meta)
    drift = report if report.bands else None
    normalization = remedied_normalization(meta.normalization, options.remedy, drift, bundle_path, mosaic)
    spec = InferenceSpec(
        normalization=normalization,
        class_ids=[c.id for c in meta.classes],
        tile=tile,
        overlap=overlap,
        batch_size=options.batch_size or (0 if on_workers else default_batch_size(device)),
        precision=precision,
        tta=meta.tta_default if options.tta is None else options.tta,
    )
    shape = (info.grid.height, info.grid.width)
    blocks = block_grid(shape, options.block_size, tile, overlap).blocks.values()
    # where each worker picks its batch size (a cluster seen from a login node), the cost of a job is unknown
    parts = balanced_jobs(blocks, shape, tile, overlap, options.workers if spec.batch_size else 1, spec.batch_size)
    assembler = Assembler(shape, options.block_size, spec, confidence, parts)
    version = bundle_version(bundle_path)
    jobs = [
        BlockJob(str(mosaic), str(Path(bundle_path).resolve()), device, spec, tuple(meta.bands), window, shape, aoi,
                 version, assembler.layout(window), confidence)
        for window in assembler.jobs
    ]  # fmt: skip
    tags = {"GEOSEG_INPUT": json.dumps({"normalization": normalization.to_json(),
                                         **remedy_record(options.remedy, normalization),
                                         "drift": drift.without_histograms() if drift else None, "tile": tile,
                                         "overlap": overlap, "precision": spec.precision, "tta": spec.tta,
                                         "bundle": str(bundle_path)})}  # fmt: skip
    return MosaicPlan(Path(mosaic), info, spec, list(meta.classes), jobs, assembler, tags, drift)


class MosaicWriter:
    """The one writer of a mosaic's class map (and confidence map): completed blocks go straight to disk.

    Use as a context manager: the files appear, finished, only when it exits without an exception.
    """

    def __init__(self, plan: MosaicPlan, classes_path: Path, confidence_path: Path | None) -> None:
        self.plan = plan
        self.classes_path = classes_path
        self.confidence_path = confidence_path
        self.blocks_written = 0
        self._release = PeriodicRelease(every=RELEASE_EVERY)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> MosaicWriter:
        grid = self.plan.info.grid
        with self._stack as stack:
            self._classes = stack.enter_context(open_class_map(self.classes_path, grid, self.plan.classes,
                                                               self.plan.tags))  # fmt: skip
            self._confidence = (
                stack.enter_context(open_confidence_map(self.confidence_path, grid))
                if self.confidence_path is not None
                else None
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> bool | None:
        return self._stack.__exit__(*exc_info)

    def add(self, contribution: Contribution) -> int:
        """Adds a block's contribution; writes the blocks it completes and returns how many."""
        finished = self.plan.assembler.add(contribution)
        for window, result in finished:
            self._classes.write(result.classes, 1, window=window)
            if self._confidence is not None and result.confidence is not None:
                self._confidence.write(confidence_percent(result.confidence, result.classes), 1, window=window)
        self.blocks_written += len(finished)
        count = len(finished)
        del contribution, finished
        self._release()
        return count

    @property
    def complete(self) -> bool:
        return self.plan.assembler.complete


def planning_bundle(bundle_path: Path, device: str) -> Bundle:
    """The bundle, loaded on the CPU for planning. On a CPU run it comes from the process's worker cache,
    so the thread workers that follow use the same network instead of building it a second time."""
    if device != "cpu":
        return load_bundle(bundle_path, device="cpu")
    cached = cached_bundle(str(Path(bundle_path).resolve()), "cpu", bundle_version(bundle_path))
    return replace(cached, path=Path(bundle_path))


def segment_mosaic(
    mosaic: Path,
    bundle_path: Path,
    classes_path: Path,
    options: InferOptions,
    overwrite: bool = False,
    confidence_path: Path | None = None,
    progress: Progress | None = None,
) -> ClassMapResult:
    device = resolve_device(options.device)
    for path in (classes_path, confidence_path):
        if path is not None:
            ensure_writable(path, overwrite, instead="another --out-dir")
    check_scheduler(options.scheduler, known=(*SCHEDULERS, "local"))
    bundle = planning_bundle(bundle_path, device)
    plan = plan_mosaic(mosaic, bundle, options, device, confidence_path is not None)
    folder = classes_path.parent
    with removed_if_left_empty(folder):
        check_output_folder(folder)  # last: it creates the folder, so a refused run leaves none
        return _segment(plan, mosaic, classes_path, confidence_path, options, progress or Progress())


def _segment(plan: MosaicPlan, mosaic: Path, classes_path: Path, confidence_path: Path | None,
             options: InferOptions, reporter: Progress) -> ClassMapResult:  # fmt: skip
    with MosaicWriter(plan, classes_path, confidence_path) as writer:

        def write(contribution: Contribution) -> None:
            if writer.add(contribution):
                reporter.update("segment", writer.blocks_written, plan.blocks)

        reporter.update("segment", 0, plan.blocks)
        try:
            run_blocks(plan.jobs, options.scheduler, options.workers, write)
        except RasterioIOError as exc:
            raise InputError(f"could not be read to the end ({first_line(exc)}); re-copy it", mosaic) from None
        if not writer.complete:
            raise RuntimeError("internal: some blocks never received all their windows")
    return ClassMapResult(classes_path, confidence_path, plan.spec, plan.blocks, plan.drift)
