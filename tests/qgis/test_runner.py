"""The subprocess runner with real child processes standing in for geoseg's output conventions."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from geoseg_qgis.runner import GeoSegCancelled, GeoSegFailed, GeoSegNotFound, resolve_command, run_geoseg

PYTHON = [sys.executable, "-c"]


def run(script: str, cancel_after: float | None = None) -> tuple[list, list, int | None]:
    progress: list[tuple[str, int, int]] = []
    messages: list[str] = []
    started: list[int] = []
    began = time.monotonic()
    run_geoseg(PYTHON, [script], on_progress=lambda *p: progress.append(p), on_message=messages.append,
               is_cancelled=lambda: cancel_after is not None and time.monotonic() - began > cancel_after,
               on_start=started.append)  # fmt: skip
    return progress, messages, started[0]


def test_json_lines_become_progress_and_other_lines_messages() -> None:
    script = (
        "import sys\n"
        "print('class map: out.tif')\n"
        'for i in range(3): print(\'{"stage": "segment", "done": %d, "total": 2}\' % i, file=sys.stderr)\n'
        "print('{not json', file=sys.stderr)\n"
    )
    progress, messages, _ = run(script)
    assert progress == [("segment", 0, 2), ("segment", 1, 2), ("segment", 2, 2)]
    # stdout and stderr are two pipes (stdout block-buffered): only the order within each stream is defined
    assert sorted(messages) == ["class map: out.tif", "{not json"]


def test_a_failure_raises_geosegs_own_error_line() -> None:
    script = (
        "import sys\nprint('some warning', file=sys.stderr)\n"
        "print('geoseg: error: /x.tif: no such file; check the path', file=sys.stderr)\nsys.exit(2)"
    )
    with pytest.raises(GeoSegFailed) as failure:
        run(script)
    assert str(failure.value) == "geoseg: error: /x.tif: no such file; check the path"


def test_a_crash_without_an_error_line_reports_the_exit_code_and_last_line() -> None:
    with pytest.raises(GeoSegFailed, match=r"exit code 1: ValueError: boom"):
        run("raise ValueError('boom')")


def test_cancel_interrupts_the_child_which_can_clean_up(tmp_path: Path) -> None:
    marker = tmp_path / "partial.tif"
    script = (
        f"import pathlib, time\np = pathlib.Path({str(marker)!r}); p.write_text('x')\n"
        "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    p.unlink(); raise SystemExit(130)\n"
    )
    began = time.monotonic()
    with pytest.raises(GeoSegCancelled):
        run(script, cancel_after=1.0)
    assert time.monotonic() - began < 30
    assert not marker.exists(), "the child was killed before it could remove its partial output"


def test_cancel_kills_a_child_that_ignores_the_interrupt(monkeypatch) -> None:
    import geoseg_qgis.runner as runner

    monkeypatch.setattr(runner, "GRACE_SECONDS", 0.5)
    script = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    progress: list = []
    pids: list[int] = []
    began = time.monotonic()
    with pytest.raises(GeoSegCancelled):
        run_geoseg(PYTHON, [script], on_progress=progress.append, on_message=progress.append,
                   is_cancelled=lambda: time.monotonic() - began > 1.0, on_start=pids.append)  # fmt: skip
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_resolve_command_accepts_a_program_a_python_or_an_environment_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GEOSEG_EXECUTABLE", raising=False)
    env = tmp_path / "venv"
    (env / "bin").mkdir(parents=True)
    python = env / "bin" / "python"
    python.symlink_to(sys.executable)
    assert resolve_command(str(python)) == [str(python), "-m", "geoseg"]
    assert resolve_command(str(env)) == [str(python), "-m", "geoseg"]
    program = env / "bin" / "geoseg"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert resolve_command(str(env)) == [str(program)]
    monkeypatch.setenv("GEOSEG_EXECUTABLE", str(program))
    assert resolve_command(None) == [str(program)]


def test_resolve_command_without_geoseg_says_how_to_set_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GEOSEG_EXECUTABLE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GeoSegNotFound, match="Processing → Options → Providers → geoseg"):
        resolve_command(None)
    with pytest.raises(GeoSegNotFound, match="holds no geoseg program"):
        resolve_command(str(tmp_path))
