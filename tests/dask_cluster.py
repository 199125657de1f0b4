"""A real Dask cluster on loopback for tests: `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DASK = Path(sys.executable).parent / "dask"


@dataclass
class LoopbackCluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]

    def kill_worker(self, index: int) -> None:
        """SIGKILL: the worker dies at once, as on an out-of-memory kill or a lost node."""
        self.workers[index].send_signal(signal.SIGKILL)
        self.workers[index].wait(timeout=30)


@contextlib.contextmanager
def loopback_cluster(folder: Path, n_workers: int = 2) -> Iterator[LoopbackCluster]:
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    logs = [open(folder / "scheduler.log", "w")]  # noqa: SIM115 - closed in the finally below
    processes: list[subprocess.Popen] = []
    try:
        scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", scheduler_file],
            stdout=logs[0], stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(scheduler)
        address = _wait_for_address(scheduler_file, scheduler)
        workers = []
        for i in range(n_workers):
            logs.append(open(folder / f"worker{i}.log", "w"))  # noqa: SIM115
            worker = subprocess.Popen(
                [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                 "--host", "127.0.0.1", "--death-timeout", "60"],
                stdout=logs[-1], stderr=subprocess.STDOUT,
            )  # fmt: skip
            processes.append(worker)
            workers.append(worker)
        _wait_for_workers(address, n_workers)
        yield LoopbackCluster(address, scheduler, workers)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


def _wait_for_address(scheduler_file: Path, scheduler: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {scheduler.returncode}")
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.2)
    raise TimeoutError("dask scheduler did not start")


def _wait_for_workers(address: str, n: int, timeout: float = 90) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=timeout)
