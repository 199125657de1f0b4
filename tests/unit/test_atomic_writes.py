"""Atomic writes: the permissions outputs get, without ever changing the process's umask."""

from __future__ import annotations

from pathlib import Path


def test_outputs_follow_the_umask_without_the_process_umask_ever_changing(tmp_path: Path) -> None:
    """Reading the umask by setting it raced with threads creating files (they came out world-writable)."""
    import os
    import threading

    from geoseg.io.raster import atomic_path, umask

    previous = os.umask(0o027)
    try:
        seen: set[int] = set()
        stop = threading.Event()

        def watch() -> None:  # what a thread creating files at the same moment would get
            while not stop.is_set():
                mask = os.umask(0o027)
                seen.add(mask)

        watcher = threading.Thread(target=watch)
        watcher.start()
        for i in range(200):
            assert umask() == 0o027
            with atomic_path(tmp_path / f"out{i}.txt") as tmp:
                tmp.write_text("x")
        stop.set()
        watcher.join()
        assert seen == {0o027}
        assert (tmp_path / "out0.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
