"""Blocks of a mosaic as Dask tasks. Knows nothing of tensors: each task calls the one-block function
that ``geoseg.segment`` calls too (``block.segment_block``), reading from the file.

Each worker process loads the model once (``block.cached_bundle``); the caller is the only writer.
About two blocks per worker are in flight at any time, and a finished block is handed to the caller as
soon as it arrives while the next one starts, so memory is bounded by block size, not by mosaic size,
and no worker waits for a slower one. On the CPU every forward pass runs with one intra-op thread (see
``block.py``); parallelism comes from running blocks side by side instead.

The local schedulers (threads, processes) run on a ``concurrent.futures`` pool; a Dask cluster (``local``
or an address) runs the same tasks through ``distributed``'s futures. Dask's local ``compute`` would
return a batch of blocks only when all of them finish, leaving workers idle at every batch's end.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from itertools import islice

import numpy as np
import rasterio
from rasterio import features
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry.base import BaseGeometry

from geoseg.device import resolve_device
from geoseg.infer.assemble import Contribution, CoreLayout
from geoseg.infer.block import ModelSource, segment_block
from geoseg.infer.cluster import ClusterOptions, dask_client
from geoseg.infer.engine import InferenceSpec
from geoseg.infer.settings import default_batch_size, resolve_precision
from geoseg.io.raster import cap_gdal_cache, read_window

SCHEDULERS = ("sync", "threads", "processes")
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs for one block; small and picklable."""

    mosaic: str
    bundle: str
    device: str
    spec: InferenceSpec
    bands: tuple[int, ...]
    window: Window
    raster_shape: tuple[int, int]
    aoi: BaseGeometry | None  # in the mosaic's CRS; outside it the class map is nodata
    bundle_version: str = ""  # geoseg.model.bundle.bundle_version: a rewritten bundle is loaded afresh
    layout: CoreLayout | None = None  # where the block's interior lies: finished here (``block_contribution``)
    confidence: bool = False  # whether the settled interior carries confidence


def run_block(job: BlockJob) -> Contribution:
    """One block, start to end. The mosaic is opened per block: cheap next to the model, and a worker
    of a long-lived cluster then holds no file handles between tasks (nor a stale view of a replaced file).
    """
    cap_gdal_cache()
    device, spec = on_this_worker(job.device, job.spec)
    model = ModelSource(job.bundle, device, job.bundle_version)
    with rasterio.open(job.mosaic) as ds:

        def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
            return read_window(ds, job.bands, window)

        def inside_aoi(window: Window) -> np.ndarray:
            shape = (int(window.height), int(window.width))
            transform = window_transform(window, ds.transform)
            return features.geometry_mask([job.aoi], out_shape=shape, transform=transform, invert=True)

        # the interior is finished here, where the network runs, instead of in the one writer after the blocks
        region = inside_aoi if job.aoi is not None else None
        return segment_block(model, read, job.window, job.raster_shape, spec, region, job.layout, job.confidence)


def on_this_worker(device: str, spec: InferenceSpec) -> tuple[str, InferenceSpec]:
    """The device, precision and batch size a job left to its worker ("auto", 0), resolved where it runs:
    `geoseg batch --device cuda` from a login node without a GPU runs on the cluster's GPUs."""
    resolved = resolve_device(device)
    if spec.precision == "auto" or spec.batch_size == 0:
        spec = replace(spec, precision=resolve_precision(spec.precision, resolved),
                       batch_size=spec.batch_size or default_batch_size(resolved))  # fmt: skip
    return resolved, spec


def run_blocks(
    jobs: list[BlockJob],
    scheduler: str,
    workers: int,
    on_done: Callable[[Contribution], None],
) -> None:
    """Run ``jobs`` on ``scheduler`` (sync, threads, processes, local or a distributed address)."""
    if scheduler in SCHEDULERS:
        _run_local(jobs, scheduler, workers, on_done)
    else:
        _run_distributed(jobs, scheduler, workers, on_done)


def _run_local(jobs: list[BlockJob], scheduler: str, workers: int, on_done) -> None:
    """One pool for the whole run, so each process loads the model once."""
    if scheduler == "sync":
        for job in jobs:
            on_done(run_block(job))
        return
    if scheduler == "threads":
        pool: Executor = ThreadPoolExecutor(workers)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        _pool_bounded(pool, jobs, workers, on_done)
    finally:  # on an error or Ctrl-C, blocks not yet started are dropped instead of run to no end
        pool.shutdown(wait=True, cancel_futures=True)


def _pool_bounded(pool: Executor, jobs: list[BlockJob], workers: int, on_done) -> None:
    """Keep about two blocks per worker in flight; each result goes to ``on_done`` as it arrives."""
    pending = iter(jobs)
    in_flight = {pool.submit(run_block, job) for job in islice(pending, 2 * workers)}
    while in_flight:
        finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in finished:
            in_flight.update(pool.submit(run_block, job) for job in islice(pending, 1))
            on_done(future.result())


def _run_distributed(jobs: list[BlockJob], address: str, workers: int, on_done) -> None:
    from distributed import as_completed

    local = address == "local"
    options = ClusterOptions(scheduler=None if local else address, workers=workers, connect_timeout_s=CONNECT_TIMEOUT_S)
    with dask_client(options, dashboard=False, otherwise="use --scheduler threads") as client:
        n = workers if local else len(client.scheduler_info().get("workers", {})) or workers
        _submit_bounded(client, jobs, n, on_done, as_completed)


def _submit_bounded(client, jobs, workers, on_done, as_completed) -> None:
    """Keep about two blocks per worker in flight; results are written as they arrive."""
    pending = iter(jobs)
    in_flight = as_completed()
    for job in islice(pending, 2 * workers):
        in_flight.add(client.submit(run_block, job, pure=False))
    for future in in_flight:
        contribution = future.result()
        future.release()
        on_done(contribution)
        for job in islice(pending, 1):
            in_flight.add(client.submit(run_block, job, pure=False))
