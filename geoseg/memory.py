"""Handing freed memory back to the operating system during long runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_free_memory() -> None:
    """Return glibc's free pages to the system (a no-op elsewhere).

    Block after block of arrays of a few sizes, allocated on worker threads, leaves freed chunks spread
    over glibc's heaps; without this, peak memory crept up with the length of the run (bench/RESULTS.md).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
