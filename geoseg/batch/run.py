"""`geoseg batch`: many mosaics on one Dask cluster, block by block; resumable, failures recorded.

How the work flows:

- This process (the client) expands the inputs, reads each mosaic's header, skips mosaics finished by
  an earlier run (``--resume``), and plans each remaining mosaic just before its blocks are submitted.
- The block jobs of all mosaics form one queue, about two per worker in flight, in input order. One
  huge mosaic keeps every worker busy, and so do many small ones: the tail of a mosaic overlaps the
  head of the next.
- Workers run the block engine of `geoseg infer` (each worker process loads the model once) and send
  back contributions. The client is the only writer of class maps (`MosaicWriter`), so each output
  file has one writer; a finishing thread then writes the polygons and areas and records the mosaic
  in the manifest.
- A block that fails fails its mosaic only; its partial outputs are discarded and the rest go on.
  A worker that dies has its tasks rerun on the others by Dask.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from rasterio.errors import RasterioIOError

from geoseg.batch.finisher import Finisher
from geoseg.batch.inputs import expand_inputs, output_stems
from geoseg.batch.manifest import DONE, FAILED, Fingerprint, Manifest, MosaicRecord, bundle_sha256
from geoseg.batch.report import SurveyReport, write_survey_report
from geoseg.device import DEVICES, resolve_device
from geoseg.errors import Cancelled, GeoSegError, InputError, OutputExistsError
from geoseg.infer.assemble import block_layout
from geoseg.infer.cluster import ClusterOptions, check_scheduler, dashboard_link, dask_client, worker_count
from geoseg.infer.outputs import OutputPaths, finish_outputs
from geoseg.infer.parallel import BlockJob, run_block
from geoseg.infer.run import InferOptions, MosaicWriter, check_output_folder, plan_mosaic, resolve_precision
from geoseg.infer.settings import window_size
from geoseg.io.raster import first_line, read_info
from geoseg.model.bundle import Bundle, load_bundle
from geoseg.polygons import DEFAULT_SIEVE
from geoseg.progress import Progress

EXIT_SOME_FAILED = 3
INTERRUPTED_REASON = "interrupted before its polygons and areas were written; --resume makes them"


@dataclass(frozen=True)
class BatchOptions:
    infer: InferOptions = field(default_factory=InferOptions)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    polygons: bool = True
    sieve: int = DEFAULT_SIEVE
    min_area: float = 0.0
    simplify: float = 0.0
    merge_polygons: bool = False
    resume: bool = False
    overwrite: bool = False

    def result_settings(self, tile: int, overlap: int) -> dict:
        """What decides a mosaic's outputs beyond its input and bundle: --resume reruns when any differs."""
        i = self.infer
        return {"confidence": i.confidence, "polygons": self.polygons, "tile": tile, "overlap": overlap,
                "remedy": i.remedy, "precision": i.precision, "tta": i.tta, "aoi": str(i.aoi) if i.aoi else None,
                "sieve": self.sieve, "min_area": self.min_area, "simplify": self.simplify}  # fmt: skip


@dataclass
class BatchSummary:
    done: list[str]
    skipped: list[str]  # finished by an earlier run (--resume)
    failed: dict[str, str]  # id -> reason
    report: SurveyReport

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed else 0


@dataclass
class _Mosaic:
    id: str
    path: Path
    paths: OutputPaths
    fingerprint: Fingerprint | None
    blocks: int  # expected block count, for the progress bar
    started: float = 0.0
    writer: MosaicWriter | None = None
    remaining: deque[BlockJob] = field(default_factory=deque)
    in_flight: set = field(default_factory=set)
    blocks_reported: int = 0


def run_batch(
    inputs: Sequence[str | Path],
    bundle: Path,
    out_dir: Path,
    options: BatchOptions,
    progress: Progress | None = None,
) -> BatchSummary:
    reporter = progress or Progress()
    mosaics = expand_inputs(inputs, out_dir)
    model = load_bundle(bundle)  # a bundle that cannot load stops the batch here, in one line
    # On a cluster, each worker resolves the device it has (and the precision it supports); here only the
    # local cluster's workers are this machine.
    remote = options.cluster.scheduler is not None
    device = options.infer.device if remote else resolve_device(options.infer.device)
    if remote and device not in DEVICES:
        resolve_device(device)  # the one-line refusal of a misspelt --device
    # Settings wrong for every mosaic stop the batch before it starts (exit 2), not each mosaic (exit 3).
    window_size(options.infer.tile, options.infer.overlap, model.meta)
    if options.cluster.scheduler is not None:
        check_scheduler(options.cluster.scheduler, known=(), files=True)
    resolve_precision(options.infer.precision, "cpu" if remote else device, meta=model.meta)
    manifest = Manifest.load(out_dir, str(bundle.absolute()), bundle_sha256(bundle))
    names = output_stems(mosaics)
    batch = _Batch(model, out_dir, options, manifest, device, reporter, on_workers=remote)
    todo, skipped = batch.select(mosaics, names)
    check_output_folder(out_dir)
    if todo:
        with dask_client(options.cluster) as client:
            link = dashboard_link(client)
            where = options.cluster.scheduler or f"a local cluster of {worker_count(client)} workers"
            if options.cluster.gpus:
                where += f", one per GPU ({', '.join(options.cluster.gpus)})"
            reporter.message(f"running on {where}; dashboard: {link or 'none (pip install bokeh for one)'}")
            batch.run(client, todo)
    ids = [names[path] for path in mosaics]
    report = write_survey_report(manifest, ids, out_dir, merge_polygons=options.merge_polygons)
    done = [m.id for m in todo if manifest.records[m.id].status == DONE]
    failed = {i: manifest.records[i].reason or "failed" for i in ids if manifest.records[i].status == FAILED}
    return BatchSummary(done, skipped, failed, report)


class _Batch:
    def __init__(self, bundle: Bundle, out_dir: Path, options: BatchOptions, manifest: Manifest, device: str,
                 reporter: Progress, on_workers: bool = False) -> None:  # fmt: skip
        self.on_workers = on_workers  # device, precision and batch size resolved by each worker
        self.bundle = bundle  # loaded once: every mosaic is checked against it
        self.out_dir = out_dir
        self.options = options
        self.manifest = manifest
        self.device = device
        self.reporter = reporter
        self.blocks_total = 0
        self.blocks_done = 0
        self.settings = options.result_settings(*window_size(options.infer.tile, options.infer.overlap, bundle.meta))

    def select(self, mosaics: list[Path], names: dict[Path, str]) -> tuple[list[_Mosaic], list[str]]:
        """Mosaics to run now; those finished earlier are skipped under --resume. Refuses, before any
        work, to replace results of an earlier run unless --resume or --overwrite says so."""
        opts = self.options
        todo: list[_Mosaic] = []
        skipped: list[str] = []
        block = opts.infer.block_size
        for path in mosaics:
            mosaic_id = names[path]
            fingerprint = Fingerprint.of(path)
            paths = OutputPaths.for_stem(self.out_dir, mosaic_id, opts.polygons, opts.infer.confidence)
            if opts.resume and self.manifest.is_finished(mosaic_id, fingerprint, self.settings):
                skipped.append(mosaic_id)
                continue
            if not (opts.resume or opts.overwrite) and self.manifest.records:
                raise OutputExistsError(
                    "holds an earlier batch (geoseg_batch.json); pass --resume to continue it or --overwrite "
                    "to run everything again",
                    self.out_dir,
                )
            # outputs no record of this batch explains (--resume included) are someone else's to keep
            if not opts.overwrite and mosaic_id not in self.manifest.records and (existing := paths.existing()):
                raise OutputExistsError("exists; pass --overwrite to replace it or choose another --out-dir",
                                        existing[0])  # fmt: skip
            todo.append(_Mosaic(mosaic_id, path, paths, fingerprint, blocks=self._block_count(path, block)))
        self.blocks_total = sum(m.blocks for m in todo)
        return todo, skipped

    def _block_count(self, path: Path, block_size: int) -> int:
        try:
            info = read_info(path)
            tile, overlap = window_size(self.options.infer.tile, self.options.infer.overlap, self.bundle.meta)
        except GeoSegError:  # it fails when planned, with its reason
            return 1
        rows, cols = block_layout((info.grid.height, info.grid.width), block_size, tile, overlap)
        return (len(rows) - 1) * (len(cols) - 1)

    def run(self, client, todo: list[_Mosaic]) -> None:
        from distributed import as_completed

        queue = deque(todo)
        active: dict[str, _Mosaic] = {}
        owner: dict[Future, _Mosaic] = {}
        in_flight = as_completed()
        finisher = Finisher()
        finishing: list[Future] = []
        interrupted = True
        try:
            self._progress()
            self._fill(client, queue, active, owner, in_flight)
            for future in in_flight:
                mosaic = owner.pop(future)
                mosaic.in_flight.discard(future)
                if mosaic.writer is not None and not future.cancelled():  # else its mosaic failed meanwhile
                    self._receive(client, future, mosaic, active, finisher, finishing)
                future.release()
                self._fill(client, queue, active, owner, in_flight)
            for job in finishing:
                job.result()
            interrupted = False
        except BaseException as exc:
            for mosaic in list(active.values()):
                if mosaic.writer is not None:
                    mosaic.writer.__exit__(type(exc), exc, exc.__traceback__)  # discards partial files
                    mosaic.writer = None
            raise
        finally:
            finisher.close(interrupted)
            self.reporter.close()

    def _receive(self, client, future, mosaic: _Mosaic, active: dict, finisher, finishing: list) -> None:
        try:
            contribution = future.result()
        except Exception as exc:  # a failing block fails its mosaic, not the batch
            self._fail(client, mosaic, _reason(exc), exc, active)
            return
        self._count(mosaic, mosaic.writer.add(contribution))
        if mosaic.writer.complete:
            # Recorded before the class map appears: Ctrl-C from then on (while the folder is flushed to disk, or
            # before its polygons are handed over) leaves a class map the manifest explains, for --resume.
            self.manifest.record(self._failed(mosaic, INTERRUPTED_REASON))
            mosaic.writer.__exit__(None, None, None)  # the class map appears, finished
            mosaic.writer = None
            del active[mosaic.id]
            outputs = [p for p in (mosaic.paths.polygons, mosaic.paths.areas) if p is not None]
            finishing.append(finisher.submit(lambda: self._finish(mosaic, finisher.cancel), outputs,
                                             lambda: self._record_failure(mosaic, INTERRUPTED_REASON)))  # fmt: skip

    def _fill(self, client, queue, active, owner, in_flight) -> None:
        """Submit block jobs, planning mosaics as they come up, until about two per worker are in flight."""
        target = 2 * worker_count(client)
        while len(owner) < target:
            mosaic = next((m for m in active.values() if m.remaining), None)
            if mosaic is None:
                if not queue:
                    return
                mosaic = self._start(queue.popleft())
                if mosaic is None:
                    continue
                active[mosaic.id] = mosaic
            job = mosaic.remaining.popleft()
            future = client.submit(run_block, job, pure=False)
            owner[future] = mosaic
            mosaic.in_flight.add(future)
            in_flight.add(future)

    def _start(self, mosaic: _Mosaic) -> _Mosaic | None:
        """Plan the mosaic and open its writer; a mosaic that cannot run is recorded as failed."""
        mosaic.started = time.perf_counter()
        try:
            if not mosaic.path.exists():
                raise InputError("does not exist", mosaic.path)
            plan = plan_mosaic(mosaic.path, self.bundle, self.options.infer, self.device, mosaic.paths.confidence
                               is not None, on_workers=self.on_workers)  # fmt: skip
            mosaic.writer = MosaicWriter(plan, mosaic.paths.classes, mosaic.paths.confidence).__enter__()
        except (GeoSegError, RasterioIOError) as exc:
            self._record_failure(mosaic, _reason(exc))
            self._count(mosaic, mosaic.blocks)
            return None
        if plan.drift is not None and plan.drift.drifted:
            self.reporter.message(f"warning: {mosaic.id}: {plan.drift.verdict()}")
        self.blocks_total += plan.blocks - mosaic.blocks
        mosaic.blocks = plan.blocks
        mosaic.remaining = deque(plan.jobs)
        return mosaic

    def _fail(self, client, mosaic: _Mosaic, reason: str, exc: BaseException, active: dict) -> None:
        client.cancel(list(mosaic.in_flight))
        mosaic.remaining.clear()
        if mosaic.writer is not None:
            mosaic.writer.__exit__(type(exc), exc, exc.__traceback__)
            mosaic.writer = None
        active.pop(mosaic.id, None)
        self._record_failure(mosaic, reason)
        self._count(mosaic, mosaic.blocks - mosaic.blocks_reported)

    def _finish(self, mosaic: _Mosaic, cancel: threading.Event) -> None:
        """Polygons and areas from the written class map, then the manifest entry (finishing thread).

        Interrupted part-way, the mosaic is recorded as failed, so --resume segments it again."""
        try:
            finished = finish_outputs(mosaic.paths, self.options.min_area, self.options.simplify, overwrite=True,
                                      cancel=cancel, sieve=self.options.sieve)  # fmt: skip
        except Cancelled:
            self._record_failure(mosaic, INTERRUPTED_REASON)
            return
        except Exception as exc:  # one mosaic's polygons failing, however, fails that mosaic, not the survey
            self._record_failure(mosaic, _reason(exc))
            return
        runtime = time.perf_counter() - mosaic.started
        record = MosaicRecord(mosaic.id, str(mosaic.path), DONE, mosaic.fingerprint, self.manifest.bundle_hash,
                              outputs=mosaic.paths.as_dict(), runtime_s=round(runtime, 2),
                              areas=finished.areas, settings=self.settings)  # fmt: skip
        self.manifest.record(record)
        self.reporter.message(f"done: {mosaic.id} ({runtime:.1f} s)")

    def _failed(self, mosaic: _Mosaic, reason: str) -> MosaicRecord:
        return MosaicRecord(mosaic.id, str(mosaic.path), FAILED, mosaic.fingerprint, self.manifest.bundle_hash,
                            reason=reason)  # fmt: skip

    def _record_failure(self, mosaic: _Mosaic, reason: str) -> None:
        self.manifest.record(self._failed(mosaic, reason))
        self.reporter.message(f"failed: {mosaic.id}: {reason}")

    def _count(self, mosaic: _Mosaic, blocks: int) -> None:
        mosaic.blocks_reported += blocks
        self.blocks_done += blocks
        self._progress()

    def _progress(self) -> None:
        self.reporter.update("batch", self.blocks_done, max(self.blocks_total, 1))


def _reason(exc: BaseException) -> str:
    """One line a user can act on."""
    if isinstance(exc, GeoSegError):
        return str(exc)
    if isinstance(exc, RasterioIOError):
        return f"could not be read ({first_line(exc)}); re-copy it"
    name = type(exc).__name__
    if name == "KilledWorker":
        return "workers died repeatedly on one of its blocks (out of memory?); try a smaller --block-size"
    return f"{name}: {first_line(exc)}"


def print_summary(summary: BatchSummary, out=sys.stdout) -> None:
    lines = [f"{len(summary.done)} mosaic(s) done, {len(summary.skipped)} already done (skipped), "
             f"{len(summary.failed)} failed"]  # fmt: skip
    lines += [f"  failed: {mosaic_id}: {reason}" for mosaic_id, reason in summary.failed.items()]
    lines += [f"survey report: {summary.report.csv} and {summary.report.json}"]
    if summary.report.polygons is not None:
        lines.append(f"merged polygons: {summary.report.polygons}")
    print("\n".join(lines), file=out, flush=True)
