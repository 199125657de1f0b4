"""An ONNX model as a bundle: geoseg's own exports (``geoseg export``) and Deepness segmentation models.

The network runs in ONNX Runtime as an ``ArrayNetwork`` (numpy in, probabilities out), so the inference
engine (windows, test-time augmentation, blending) is the same one the torch bundles use, and nothing on
this path imports torch: ``pip install 'geoseg[onnx]'`` alone can segment. The engine hands the network
normalized windows; ``OnnxNetwork`` maps those onto what the graph expects:
- geoseg's exports take raw band values, so the engine's input is mapped back through the bundle's
  normalization (exact: the engine's values lie inside the normalization's clipped range);
- Deepness models take ``(pixel / 255 - mean) / std``, which is the bundle this module builds for them.
Both graphs end in probabilities, which the engine blends as it blends a torch network's softmax.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.data.preprocess import Normalization
from geoseg.errors import BundleError
from geoseg.model.bundle import Bundle, BundleMeta
from geoseg.model.forward import intra_op_threads
from geoseg.tta import averaged_array_probabilities

GEOSEG_KEY = "geoseg"  # metadata_props key holding the bundle's geoseg.json

DEEPNESS_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class OnnxNetwork:
    """Normalized windows (N, C, H, W) in, probabilities out, computed by ONNX Runtime (an ``ArrayNetwork``)."""

    def __init__(self, path: Path, providers: list[str], raw_input: Normalization | None) -> None:
        self.path, self.providers = path, providers
        self.raw_input = raw_input
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.input_name = self.session(1).get_inputs()[0].name

    def session(self, threads: int) -> Any:
        """One session per thread count: Dask workers run one thread each, a lone caller all the cores."""
        import onnxruntime as ort

        with self._lock:
            if threads not in self._sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3  # warnings about unused initializers are not the user's business
                self._sessions[threads] = ort.InferenceSession(str(self.path), options, providers=self.providers)
            return self._sessions[threads]

    def probabilities(self, batch: np.ndarray, tta: bool) -> np.ndarray:
        return averaged_array_probabilities(self._run, batch, tta)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.raw_input is not None:
            x = _denormalize(x, self.raw_input)
        feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        probs = self.session(intra_op_threads()).run(None, feed)[0]
        if probs.shape[1] == 1:  # Deepness's binary models: one sigmoid channel for the second class
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        return probs


def _denormalize(x: np.ndarray, normalization: Normalization) -> np.ndarray:
    lo, span, mean, std = (column[None].astype(np.float32) for column in normalization.columns())
    return lo + span * (x * std + mean)


def load_onnx_bundle(path: Path, device: str = "cpu") -> Bundle:
    """Read ``path`` (a .onnx file) as a bundle: geoseg's metadata if present, else Deepness's."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BundleError("is an ONNX model; running it needs ONNX Runtime: pip install 'geoseg[onnx]'", path) from None
    if not path.is_file():
        raise BundleError("ONNX model not found", path)
    cuda = str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    try:
        probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable graphs
        raise BundleError(f"is not a readable ONNX model ({str(exc).splitlines()[0][:200]})", path) from None
    props = dict(probe.get_modelmeta().custom_metadata_map)
    inputs, outputs = probe.get_inputs(), probe.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise BundleError(f"has {len(inputs)} inputs and {len(outputs)} outputs; a segmentation model has one of each",
                          path)  # fmt: skip
    in_shape, out_shape = list(inputs[0].shape), list(outputs[0].shape)
    del probe
    if GEOSEG_KEY in props:
        try:
            meta = BundleMeta.from_json(json.loads(props[GEOSEG_KEY]), path)
        except json.JSONDecodeError as exc:
            raise BundleError(f"its '{GEOSEG_KEY}' metadata is not valid JSON ({exc})", path) from None
        raw_input: Normalization | None = meta.normalization
    elif "model_type" in props:
        meta = _deepness_meta(props, in_shape, out_shape, path)
        raw_input = None
    else:
        raise BundleError("has neither geoseg's nor Deepness's metadata; export it with `geoseg export`, or add "
                          "Deepness's keys (model_type, class_names)", path)  # fmt: skip
    _check_shapes(meta, in_shape, out_shape, path)
    meta.fixed_tile, meta.runtime = isinstance(in_shape[-1], int), "onnx"
    return Bundle(model=OnnxNetwork(path, providers, raw_input), meta=meta, path=path)


def _json_value(props: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(props[key])
    except json.JSONDecodeError:
        raise BundleError(f"its Deepness metadata '{key}' is not JSON ({props[key][:60]!r})", path) from None


def _deepness_meta(props: dict[str, str], in_shape: list, out_shape: list, path: Path) -> BundleMeta:
    """A bundle for a Deepness model: 0-255 input divided by 255, standardized as its metadata says."""
    from geoseg.config import ClassSpec

    kind = str(_json_value(props, "model_type", path)).capitalize()
    if kind != "Segmentor":
        raise BundleError(f"is a Deepness {kind} model; geoseg runs segmentation (Segmentor) models only", path)
    n_bands = in_shape[1]
    if not isinstance(n_bands, int):
        raise BundleError(f"its input has no fixed number of bands (shape {in_shape})", path)
    names = _json_value(props, "class_names", path) if "class_names" in props else None
    n_out = out_shape[1] if isinstance(out_shape[1], int) else None
    if isinstance(names, dict):
        ordered = [str(names[k]) for k in sorted(names, key=int)]
    elif n_out is not None:
        ordered = [f"class_{i}" for i in range(max(n_out, 2))]
    else:
        raise BundleError("names no classes (class_names) and its output has no fixed number of channels", path)
    if n_out == 1 and len(ordered) == 1:  # one sigmoid channel: the named class and the rest
        ordered = ["background", *ordered]
    classes = [
        ClassSpec(str(i), i, name, DEEPNESS_PALETTE[i % len(DEEPNESS_PALETTE)]) for i, name in enumerate(ordered)
    ]
    mean = _json_value(props, "standardization_mean", path) if "standardization_mean" in props else [0.0] * n_bands
    std = _json_value(props, "standardization_std", path) if "standardization_std" in props else [1.0] * n_bands
    if len(mean) != n_bands or len(std) != n_bands or any(float(s) <= 0 for s in std):
        raise BundleError(f"its standardization_mean/std need {n_bands} values each, std > 0", path)
    size = in_shape[-1] if isinstance(in_shape[-1], int) else None
    for key in ("tile_size", "tiles_size"):
        if key in props:
            size = int(_json_value(props, key, path))
    if size is None:
        raise BundleError("has neither a fixed input size nor tile_size metadata", path)
    percent = int(_json_value(props, "tiles_overlap", path)) if "tiles_overlap" in props else 15
    resolution = float(_json_value(props, "resolution", path)) / 100 if "resolution" in props else None
    normalization = Normalization([(0.0, 255.0)] * n_bands, [float(m) for m in mean], [float(s) for s in std])
    return BundleMeta(classes=classes, bands=list(range(1, n_bands + 1)), normalization=normalization,
                      tile_size=size, overlap=min(size - 1, size * percent // 100), resolution=resolution,
                      extra={"source": "deepness"})  # fmt: skip


def _check_shapes(meta: BundleMeta, in_shape: list, out_shape: list, path: Path) -> None:
    channels, classes = in_shape[1], out_shape[1]
    if isinstance(channels, int) and channels != len(meta.bands):
        raise BundleError(f"its graph takes {channels} band(s) but its metadata names {len(meta.bands)}", path)
    if isinstance(classes, int) and classes not in (len(meta.classes), 1):
        raise BundleError(f"its graph gives {classes} channels but its metadata names {len(meta.classes)} classes",
                          path)  # fmt: skip
    sides = [s for s in in_shape[-2:] if isinstance(s, int)]
    if sides and sides != [meta.tile_size] * len(sides):
        raise BundleError(f"its graph takes {in_shape[-2:]} windows but its metadata says {meta.tile_size} px", path)
