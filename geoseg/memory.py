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
    try:  # glibc's name first: find_library runs ldconfig in a child, a fork of this (large) process
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "")
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


class PeriodicRelease:
    """``release_free_memory`` on every ``every``-th call: trimming gives pages back that the next blocks then
    fault in and zero again, which cost 8 % of a class map's time when done after every block (bench/RESULTS.md);
    every few blocks still keeps the freed chunks from piling up."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls % self.every == 0:
            release_free_memory()
