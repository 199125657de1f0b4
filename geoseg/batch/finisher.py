"""The thread that finishes mosaics (polygons, areas, manifest entry) while the cluster segments the next ones.

A daemon thread rather than a ThreadPoolExecutor: the interpreter joins an executor's threads at exit, so
Ctrl-C would wait for a long polygon job to end. Here an interruption sets ``cancel`` (polygon work stops
at its next batch), waits a moment, removes what an unfinished job left half-written, and lets go.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path

from geoseg.io.raster import remove_stale_partials

GRACE_S = 2.0  # how long an interrupted run waits for the job in hand to notice ``cancel``


class Finisher:
    def __init__(self) -> None:
        self.cancel = threading.Event()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._submitted: dict[Future, tuple[list[Path], Callable[[], None]]] = {}  # outputs, on_abandon
        self._thread = threading.Thread(target=self._serve, name="geoseg-finish", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None], outputs: Iterable[Path], on_abandon: Callable[[], None]) -> Future:
        """Run ``job`` after the ones before it. If an interruption abandons it, its ``outputs``' temporary
        files are removed and ``on_abandon`` runs (on the closing thread)."""
        future: Future = Future()
        self._submitted[future] = (list(outputs), on_abandon)
        self._jobs.put((future, job))
        return future

    def close(self, interrupted: bool) -> None:
        """Wait for every job; when ``interrupted``, only briefly, then clean up after the unfinished ones."""
        if interrupted:
            self.cancel.set()
            for future in self._submitted:
                future.cancel()  # the queued ones: they never start
        self._jobs.put(None)
        self._thread.join(timeout=GRACE_S if interrupted else None)
        for future, (outputs, on_abandon) in self._submitted.items():
            if not future.done() or future.cancelled():
                for path in outputs:
                    remove_stale_partials(path)
                on_abandon()

    def _serve(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)
