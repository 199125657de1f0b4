"""Blocks of a mosaic as Dask tasks. Knows nothing of tensors: each task calls the one-block function
that ``geoseg.segment`` calls too (``block.segment_block``), reading from the file.

Each worker process loads the model once (``block.cached_bundle``); the caller is the only writer.
Blocks are submitted in waves of a few per worker, so memory is bounded by block size, not by mosaic
size. On the CPU every forward pass runs with one intra-op thread (see ``block.py``); parallelism
comes from running blocks side by side instead.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import batched, islice

import dask
import numpy as np
import rasterio
from rasterio import features
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry.base import BaseGeometry

from geoseg.device import resolve_device
from geoseg.infer.assemble import Contribution
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

        return segment_block(
            model, read, job.window, job.raster_shape, spec, inside_aoi if job.aoi is not None else None
        )


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
    """Run ``jobs`` on ``scheduler`` (sync, threads, processes or a distributed address) in waves."""
    if scheduler in SCHEDULERS:
        _run_local(jobs, scheduler, workers, on_done)
    else:
        _run_distributed(jobs, scheduler, workers, on_done)


def _run_local(jobs: list[BlockJob], scheduler: str, workers: int, on_done) -> None:
    """Dask's local schedulers, with one pool for the whole run so each process loads the model once."""
    if scheduler == "sync":
        for job in jobs:
            on_done(dask.compute(dask.delayed(run_block)(job), scheduler="synchronous")[0])
        return
    if scheduler == "threads":
        pool = ThreadPoolExecutor(workers)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    with pool:
        for wave in batched(jobs, 2 * workers):
            tasks = [dask.delayed(run_block)(job) for job in wave]
            for contribution in dask.compute(*tasks, scheduler=scheduler, pool=pool):
                on_done(contribution)


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
