"""Connecting to Dask (geoseg infer and batch): a running scheduler (optionally over TLS), or a LocalCluster here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import InputError


def check_scheduler(value: str, known: tuple[str, ...] = (), files: bool = False) -> None:
    """Refuse a ``--scheduler`` that is neither a name in ``known`` nor a Dask address (nor, if ``files``,
    an existing scheduler file) before any work starts: Dask's own error is a traceback."""
    if value in known or (files and Path(value).is_file()):
        return
    # only here: importing distributed costs a local run 0.4 s and some 200 modules it never uses
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(value)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as exc:
        kinds = ", ".join([*known, "a scheduler address"]) + (" or a scheduler file" if files else "")
        raise InputError(f"--scheduler {value!r} is not {kinds} such as tcp://host:8786 ({exc})") from None


@dataclass(frozen=True)
class ClusterOptions:
    scheduler: str | None = None  # address (tcp://host:8786, tls://…) or a scheduler file; None: LocalCluster
    workers: int = 2  # LocalCluster only: worker processes, one thread each
    gpus: tuple[str, ...] = ()  # a local cluster of one worker per GPU instead, each pinned to its GPU
    tls_ca_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout_s: float = 30.0


def _security(options: ClusterOptions):
    if options.tls_ca_file is None and options.tls_cert is None:
        return None
    from distributed.security import Security

    for path in (options.tls_ca_file, options.tls_cert, options.tls_key):
        if path is not None and not path.is_file():
            raise InputError("TLS file not found", path)
    return Security(
        tls_ca_file=str(options.tls_ca_file) if options.tls_ca_file else None,
        tls_client_cert=str(options.tls_cert) if options.tls_cert else None,
        tls_client_key=str(options.tls_key) if options.tls_key else None,
        require_encryption=True,
    )


class _DaskCancelNoise(logging.Filter):
    """distributed's ``sync`` logs a NameError from its own cancel callback when Ctrl-C lands before the call
    it waits on has started (its ``future`` is not bound yet). The interruption itself is handled; only
    that traceback on stderr is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "sync.<locals>.cancel" not in record.getMessage()


def quiet_dask_interrupt_noise() -> None:
    logger = logging.getLogger("tornado.application")
    if not any(isinstance(f, _DaskCancelNoise) for f in logger.filters):
        logger.addFilter(_DaskCancelNoise())


@contextlib.contextmanager
def dask_client(
    options: ClusterOptions, dashboard: bool = True, otherwise: str = "leave out --scheduler to use this machine"
) -> Iterator:
    """A ``distributed.Client``; a LocalCluster it started is closed on the way out.

    Args:
        options: where the scheduler is (None: start a LocalCluster of ``options.workers`` processes).
        dashboard: whether a LocalCluster serves its dashboard (on a free port).
        otherwise: the alternative the "no scheduler answered" error suggests.
    """
    from distributed import Client, LocalCluster

    quiet_dask_interrupt_noise()
    if options.scheduler is None and options.gpus:
        with gpu_cluster(options.gpus, dashboard) as cluster, Client(cluster) as client:
            yield client
        return
    if options.scheduler is None:
        cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0" if dashboard else None)  # fmt: skip
        with cluster, Client(cluster) as client:
            yield client
        return
    target = options.scheduler
    check_scheduler(target, known=(), files=True)
    kwargs = {"security": _security(options), "timeout": options.connect_timeout_s}
    if Path(target).is_file():  # a scheduler file written by `dask scheduler --scheduler-file`
        kwargs["scheduler_file"] = target
        target = None
    try:
        client = Client(target, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"no Dask scheduler answered at {options.scheduler} ({exc.__class__.__name__}); start one with "
            f"`dask scheduler`, check the address, or {otherwise}"
        ) from None
    with client:
        yield client


def gpu_cluster(gpus: tuple[str, ...], dashboard: bool = True):
    """A cluster on this machine with one worker process per GPU, each seeing only its own
    (``CUDA_VISIBLE_DEVICES``), as dask-cuda's LocalCUDACluster does; one thread and an equal share of the
    machine's memory each."""
    from distributed import Nanny, Scheduler, SpecCluster

    worker = {"nthreads": 1, "host": "127.0.0.1", "memory_limit": 1 / len(gpus), "silence_logs": logging.ERROR}
    workers = {f"gpu-{gpu}": {"cls": Nanny, "options": {**worker, "env": {"CUDA_VISIBLE_DEVICES": gpu}}}
               for gpu in gpus}  # fmt: skip
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": dashboard,
                                               "dashboard_address": ":0"}}  # fmt: skip
    return SpecCluster(workers=workers, scheduler=scheduler, name="geoseg-gpus", silence_logs=logging.ERROR)


def dashboard_link(client) -> str | None:
    """The scheduler's dashboard address, or None when it runs none (bokeh missing, or turned off)."""
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return None
    try:
        return client.dashboard_link
    except (KeyError, AttributeError):
        return None


def worker_count(client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))
