"""A class map file's strips, sieved and polygonized in worker processes and handed back in order.

GDAL's sieve and polygonize hold the GIL (two threads take as long as one), so only processes can share
them out. Each worker opens the file, reads its strip of full rows with the sieve's context rows, sieves and
polygonizes it, and sends back the pixel-coordinate pieces (shapely pickles them as WKB) with the strip's
edge rows. Joining the pieces across strip edges needs the strips in order and stays in the calling process
(``polygon_strips.joined_regions``), so the result is the serial one, polygon for polygon.

At most ``workers + 1`` strips are in flight, so memory stays bounded by strips, not by the map.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice

import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
from rasterio.windows import Window

from geoseg.errors import Cancelled, InputError
from geoseg.io.raster import first_line
from geoseg.polygon_strips import PolygonizedStrip, polygonized


def sieved_rows(read: Callable[[int, int], np.ndarray], top: int, bottom: int, height: int, size: int,
                connectivity: int, skip: set[int]) -> tuple[np.ndarray, int]:  # fmt: skip
    """Rows ``top:bottom`` of a class map ``read(top, bottom)``, sieved with ``size`` rows of context above and
    below, and how many of their pixels the sieve changed.

    A region smaller than ``size`` pixels spans fewer rows than the context, and a larger one cut off by the
    context still shows ``size`` pixels or more, so which regions are small is decided exactly. Nodata
    (``skip``) is masked out: never merged, never grown.
    """
    lo, hi = max(0, top - size), min(height, bottom + size)
    block = np.ascontiguousarray(read(lo, hi))
    sieved = rasterio.features.sieve(block, size, connectivity=connectivity, mask=~np.isin(block, list(skip)))
    core = slice(top - lo, bottom - lo)
    return sieved[core], int(np.count_nonzero(sieved[core] != block[core]))


def strip_rows(read: Callable[[int, int], np.ndarray], top: int, bottom: int, height: int, sieve: int,
               connectivity: int, skip: set[int]) -> tuple[np.ndarray, int]:  # fmt: skip
    """Rows ``top:bottom`` of ``read``'s class map, sieved (``sieved_rows``) when ``sieve`` > 0, and how many
    pixels the sieve changed: what each strip is, whether this process or a worker polygonizes it."""
    if sieve:
        return sieved_rows(read, top, bottom, height, sieve, connectivity, skip)
    return read(top, bottom), 0


def strip_edges(height: int, width: int, strip_pixels: int) -> list[tuple[int, int]]:
    """(top, bottom) of each strip of full rows, at most ``strip_pixels`` pixels each."""
    rows = max(1, strip_pixels // max(width, 1))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def pooled_strips(path: str, edges: list[tuple[int, int]], height: int, sieve: int, connectivity: int,
                  skip: set[int], workers: int,
                  cancel: threading.Event | None = None) -> Iterator[PolygonizedStrip]:  # fmt: skip
    """The file's strips at ``edges``, sieved (``sieve`` > 0) and polygonized by ``workers`` processes, in order.

    Raises:
        InputError: a strip of the file cannot be read (corrupted or truncated).
        Cancelled: ``cancel`` was set; strips not yet started are dropped.
    """
    context = multiprocessing.get_context("spawn")  # the caller may hold threads: no fork
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_leave_interrupts_to_the_caller)
    try:
        pending = iter(edges)

        def submit(count: int) -> list[Future]:
            return [pool.submit(_one_strip, path, top, bottom, height, sieve, connectivity, skip)
                    for top, bottom in islice(pending, count)]  # fmt: skip

        in_flight = submit(workers + 1)
        while in_flight:
            strip = in_flight.pop(0).result()
            if cancel is not None and cancel.is_set():
                raise Cancelled("polygons stopped: the run is being interrupted")
            in_flight += submit(1)
            if isinstance(strip, str):
                raise InputError(f"is corrupted or truncated ({strip}); re-export or re-copy it", path)
            yield strip
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _leave_interrupts_to_the_caller() -> None:
    """Ctrl-C reaches the whole process group: the caller stops the pool, and workers print no tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _one_strip(path: str, top: int, bottom: int, height: int, sieve: int, connectivity: int,
               skip: set[int]) -> PolygonizedStrip | str:  # fmt: skip
    """One strip, start to end, in a worker; a read error comes back as its first line."""
    try:
        with rasterio.open(path) as ds:

            def read(lo: int, hi: int) -> np.ndarray:
                return ds.read(1, window=Window(0, lo, ds.width, hi - lo))

            rows, merged = strip_rows(read, top, bottom, height, sieve, connectivity, skip)
    except rasterio.errors.RasterioIOError as exc:
        return first_line(exc)
    return polygonized(top, rows, connectivity, skip, merged)
