"""Run the geoseg command line as a subprocess: its JSON progress lines, cancelling, its one-line errors.

Nothing here imports QGIS, so the same code serves the Processing algorithms and plain scripts.
QGIS's Python (3.11 on Debian 12, numpy 1) never imports geoseg, torch or numpy 2: geoseg runs in its
own environment, found from the plugin setting, $GEOSEG_EXECUTABLE or PATH, in that order.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ENV_VARIABLE = "GEOSEG_EXECUTABLE"
WHERE_TO_SET = "set 'geoseg executable' in Processing → Options → Providers → geoseg"
# QGIS's own Python and GDAL/PROJ data must not leak into geoseg's interpreter and its wheels' GDAL.
SCRUBBED_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "GDAL_DATA", "GDAL_DRIVER_PATH",
                      "PROJ_LIB", "PROJ_DATA", "QGIS_PREFIX_PATH")  # fmt: skip
GRACE_SECONDS = 10.0  # after SIGINT, geoseg removes its partial outputs and exits 130

ProgressCallback = Callable[[str, int, int], None]
MessageCallback = Callable[[str], None]


class GeoSegNotFound(RuntimeError):
    """No runnable geoseg: the message says where to set it."""


class GeoSegFailed(RuntimeError):
    """geoseg exited with an error; the message is its own one-line error."""


class GeoSegCancelled(RuntimeError):
    """The user cancelled; geoseg was stopped."""


def resolve_command(setting: str | None = None) -> list[str]:
    """The command line that starts geoseg: the plugin setting, else $GEOSEG_EXECUTABLE, else PATH.

    Each may name the ``geoseg`` program, a Python interpreter that has geoseg installed (run as
    ``python -m geoseg``), or a virtual environment's folder.
    """
    for candidate in (setting, os.environ.get(ENV_VARIABLE)):
        if candidate and candidate.strip():
            return _command_for(Path(candidate.strip()).expanduser())
    found = shutil.which("geoseg")
    if found:
        return [found]
    raise GeoSegNotFound(
        "geoseg was not found on PATH: install it in a Python 3.12 environment (see geoseg's README) "
        f"and {WHERE_TO_SET} to its geoseg program or that environment's python"
    )


def _command_for(path: Path) -> list[str]:
    if path.is_dir():
        for program in ("bin/geoseg", "Scripts/geoseg.exe", "bin/python", "Scripts/python.exe"):
            if (path / program).is_file():
                return _command_for(path / program)
        raise GeoSegNotFound(f"{path}: this folder holds no geoseg program or python; {WHERE_TO_SET}")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise GeoSegNotFound(f"{path}: no such program, or it cannot run; {WHERE_TO_SET}")
    if path.name.lower().startswith("python"):
        return [str(path), "-m", "geoseg"]
    return [str(path)]


def child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    return env


def run_geoseg(
    command: Sequence[str],
    args: Sequence[str],
    *,
    on_progress: ProgressCallback,
    on_message: MessageCallback,
    is_cancelled: Callable[[], bool],
    on_start: Callable[[int], None] | None = None,
    poll_seconds: float = 0.1,
) -> None:
    """Run ``command + args`` to the end, relaying progress and output lines from this thread.

    Raises GeoSegCancelled once ``is_cancelled()`` turns true (geoseg is stopped first, so its partial
    outputs are gone), or GeoSegFailed with geoseg's own error line when it exits non-zero.
    """
    full = [*command, *args]
    try:
        process = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=child_environment(), text=True, encoding="utf-8", errors="replace",
                                   **_own_process_group())  # fmt: skip
    except OSError as exc:
        raise GeoSegNotFound(f"{full[0]}: cannot start it ({exc.strerror}); {WHERE_TO_SET}") from None
    if on_start is not None:
        on_start(process.pid)
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    readers = [_reader(process.stdout, "out", lines), _reader(process.stderr, "err", lines)]
    errors: list[str] = []
    while True:
        _relay(lines, errors, on_progress, on_message)
        if process.poll() is not None:
            break
        if is_cancelled():
            stop(process)
            for reader in readers:
                reader.join(timeout=2)
            raise GeoSegCancelled("cancelled: geoseg was stopped and wrote no output")
        time.sleep(poll_seconds)
    for reader in readers:
        reader.join()
    _relay(lines, errors, on_progress, on_message)
    if process.returncode != 0:
        raise GeoSegFailed(_error_line(errors, process.returncode))


def stop(process: subprocess.Popen) -> None:
    """Interrupt geoseg as Ctrl-C would (it deletes partial outputs), then terminate, then kill."""
    if process.poll() is not None:
        return
    if sys.platform == "win32":
        process.send_signal(signal.CTRL_BREAK_EVENT)
    else:
        os.killpg(process.pid, signal.SIGINT)
    for escalate in (process.terminate, process.kill):
        try:
            process.wait(timeout=GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            escalate()
    process.wait()


def _own_process_group() -> dict:
    """geoseg and anything it starts get their own process group, so a cancel reaches all of them."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _reader(stream, name: str, lines: queue.Queue) -> threading.Thread:
    def pump() -> None:
        for line in stream:
            lines.put((name, line.rstrip("\r\n")))
        stream.close()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _relay(lines: queue.Queue, errors: list[str], on_progress: ProgressCallback, on_message: MessageCallback) -> None:
    while True:
        try:
            stream, line = lines.get_nowait()
        except queue.Empty:
            return
        if not line.strip():
            continue
        progress = _progress(line) if stream == "err" else None
        if progress is not None:
            on_progress(*progress)
            continue
        if stream == "err":
            errors.append(line)
        on_message(line)


def _progress(line: str) -> tuple[str, int, int] | None:
    if not line.startswith("{"):
        return None
    try:
        item = json.loads(line)
        return str(item["stage"]), int(item["done"]), int(item["total"])
    except (ValueError, KeyError, TypeError):
        return None


def _error_line(errors: list[str], returncode: int) -> str:
    """geoseg's own ``geoseg: error: …`` line; else the last line it printed (a traceback's last)."""
    for line in reversed(errors):
        if line.startswith("geoseg: error:"):
            return line
    last = errors[-1].strip() if errors else "no message"
    return f"geoseg stopped with exit code {returncode}: {last}"
