"""geoseg: geospatial raster segmentation toolkit.

The Python API (``load_model``, ``segment``, ``vectorize``, ``change``, ``landscape``,
``suggest``; see ``geoseg.api``)
is imported on first use, so ``import geoseg`` and the command line stay quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg._version import __version__

__all__ = ["Model", "__version__", "change", "landscape", "load_model", "segment", "suggest", "vectorize"]

_API = frozenset({"Model", "change", "landscape", "load_model", "segment", "suggest", "vectorize"})

if TYPE_CHECKING:
    from geoseg.api import Model, change, landscape, load_model, segment, suggest, vectorize


def __getattr__(name: str) -> object:
    if name in _API:
        from geoseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
