"""One block, as both faces run it: `geoseg infer` (blocks of a file) and `geoseg.segment` (chunks of an array).

The caller supplies ``read(window) -> (raw, valid)``; this module supplies the rest that must be the same
for the numbers to be the same: the process's cached model (BatchNorms folded into convolutions,
channels-last, loaded once per bundle version and device) and one intra-op thread on the CPU.
Convolutions sum in a different order with another thread count, so without it a class map would depend
on the scheduler.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.infer.assemble import Contribution, CoreLayout, block_contribution
from geoseg.infer.engine import InferenceSpec, Reader
from geoseg.model.bundle import Bundle, load_bundle
from geoseg.model.forward import ArrayNetwork, Network, folded_batch_norms, one_intra_op_thread


@dataclass(frozen=True)
class ModelSource:
    """Where a worker gets the network: small and picklable, loaded once per process."""

    path: str  # the bundle, resolved
    device: str
    version: str = ""  # geoseg.model.bundle.bundle_version: a rewritten bundle is loaded afresh

    def network(self) -> Network:
        return cached_bundle(self.path, self.device, self.version).model


_MODELS: dict[tuple[str, str], tuple[str, Bundle]] = {}
_MODELS_LOCK = threading.Lock()


def cached_bundle(path: str, device: str, version: str = "") -> Bundle:
    """The process's model for ``path``: loaded once, again only when the bundle's version changes."""
    with _MODELS_LOCK:
        held = _MODELS.get((path, device))
        if held is None or held[0] != version:
            bundle = load_bundle(path, device=device)
            if not isinstance(bundle.model, ArrayNetwork):
                import torch

                bundle.model = folded_batch_norms(bundle.model).to(memory_format=torch.channels_last)
            _MODELS[(path, device)] = (version, bundle)
        return _MODELS[(path, device)][1]


@contextlib.contextmanager
def one_cpu_thread(device: str) -> Iterator[None]:
    """One intra-op thread in this thread on the CPU (``forward.one_intra_op_thread``), restored afterwards."""
    if device != "cpu":
        yield
        return
    with one_intra_op_thread():
        yield


def segment_block(
    model: ModelSource,
    read: Reader,
    core: Window,
    raster_shape: tuple[int, int],
    spec: InferenceSpec,
    region: Callable[[Window], np.ndarray] | None = None,
    layout: CoreLayout | None = None,
    confidence: bool = False,
) -> Contribution:
    """The windows ``core`` owns, blended into a fixed-point contribution (see ``assemble.py``); with
    ``layout``, its interior finished."""
    network = model.network()  # loaded first: one_cpu_thread sets torch's threads only once torch is imported
    with one_cpu_thread(model.device):
        return block_contribution(network, read, core, raster_shape, spec, region, layout, confidence)
