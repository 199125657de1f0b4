"""A bundle as one ONNX file: raw band values in, per-class probabilities out, metadata for Deepness.

The graph starts with the bundle's normalization (``clip((x - lo) / (hi - lo), 0, 1)``, then mean and
std), so it takes the mosaic's own values (uint8 0-255, uint16 counts, floats) as float32, bands in the
bundle's order. It ends with a softmax over the classes. The spatial size is fixed to the bundle's
window (Deepness reads it from the input shape and wants square outputs); the batch is dynamic.

``metadata_props`` hold what Deepness (PUTvision's QGIS plugin) reads, every value JSON-encoded as it
expects, and the whole ``geoseg.json`` under ``geoseg``, so geoseg reads the file back as a bundle.
Deepness divides each 0-255 pixel by 255 before the model; ``standardization_mean`` 0 and
``standardization_std`` 1/255 undo that, so the graph sees the raw values there too.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from geoseg.data.preprocess import Normalization
from geoseg.errors import InputError, OutputExistsError
from geoseg.io.raster import atomic_path
from geoseg.model.bundle import Bundle, BundleMeta
from geoseg.model.onnx_bundle import GEOSEG_KEY

OPSET = 18  # ONNX Runtime has run opset 18 since 1.14 (2023); QGIS installs of Deepness ship newer ones
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class RawInputNetwork(torch.nn.Module):
    """The bundle's normalization, the U-Net and a softmax: what the exported graph computes."""

    def __init__(self, network: torch.nn.Module, normalization: Normalization) -> None:
        super().__init__()
        self.network = network

        for name, column in zip(("lo", "span", "mean", "std"), normalization.columns(), strict=True):
            self.register_buffer(name, torch.from_numpy(column[None]))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        scaled = ((raw - self.lo) / self.span).clamp(0.0, 1.0)
        return torch.softmax(self.network((scaled - self.mean) / self.std), dim=1)


def deepness_metadata(meta: BundleMeta) -> dict[str, str]:
    """The keys Deepness reads (its docs name the tile size ``tiles_size``, its code ``tile_size``: both)."""
    n_bands = len(meta.bands)
    props: dict[str, object] = {
        "model_type": "Segmentor",
        "class_names": {str(i): c.name for i, c in enumerate(meta.classes)},
        "tiles_size": meta.tile_size,
        "tile_size": meta.tile_size,
        "tiles_overlap": round(100 * meta.overlap / meta.tile_size),
        "standardization_mean": [0.0] * n_bands,
        "standardization_std": [1 / 255] * n_bands,
    }
    if meta.resolution is not None and meta.resolution > 0:
        props["resolution"] = meta.resolution * 100  # centimetres per pixel, for a CRS in metres
    return {key: json.dumps(value) for key, value in props.items()}


def export_onnx(bundle: Bundle, out: Path, overwrite: bool = False) -> Path:
    """Write ``bundle`` as one ONNX file (weights inside) with Deepness's and geoseg's metadata."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise InputError("exporting to ONNX needs onnx and onnxscript: pip install 'geoseg[onnx]'") from None
    if bundle.meta.fixed_tile:
        raise InputError("is an ONNX model already", bundle.path)

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError("an ONNX model's name must end in .onnx", out)
    if out.exists() and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", out)
    meta = bundle.meta
    wrapped = RawInputNetwork(bundle.model.float().to("cpu", memory_format=torch.contiguous_format), meta.normalization)
    example = torch.zeros(2, len(meta.bands), meta.tile_size, meta.tile_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter about its own internals
        program = torch.onnx.export(
            wrapped.eval(), (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, verbose=False,
        )  # fmt: skip
    model = program.model_proto
    props = {**deepness_metadata(meta), GEOSEG_KEY: json.dumps(meta.to_json())}
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "geoseg"
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
    return out
