#!/usr/bin/env bash
# A model that travels: export a bundle to ONNX, segment with the ONNX file, and run it as Deepness does.
#
#   examples/export_to_deepness.sh MODEL_BUNDLE MOSAIC [OUT_DIR]
#
# Needs `pip install 'geoseg[all]'`: exporting needs torch; the exported file then runs where only
# `pip install 'geoseg[onnx]'` (no torch) is installed. Writes OUT_DIR (default ./onnx_example)/model.onnx,
# the mosaic's class map, polygons and areas from the ONNX model, and prints what Deepness reads from the
# file. In QGIS: Deepness → Model file → model.onnx; its parameters fill in from the metadata.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 MODEL_BUNDLE MOSAIC [OUT_DIR]" >&2; exit 2; }
model=$1 mosaic=$2 out=${3:-onnx_example}
geoseg=${GEOSEG:-geoseg}
python=${PYTHON:-python3}
mkdir -p "$out"
"$geoseg" export "$model" --format onnx -o "$out/model.onnx" --overwrite
"$geoseg" infer "$mosaic" --model "$out/model.onnx" --out-dir "$out" --overwrite --progress none

# ONNX Runtime alone, as Deepness runs a Segmentor: the first tile of the mosaic, / 255, standardized
# with the file's metadata, probabilities out. No geoseg here.
"$python" - "$out/model.onnx" "$mosaic" <<'PY'
import json, sys
import numpy as np, onnxruntime as ort, rasterio
from rasterio.windows import Window
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items() if k != "geoseg"}
print("Deepness reads:", {k: v for k, v in meta.items() if not k.startswith("standardization")})
size, bands = meta["tile_size"], session.get_inputs()[0].shape[1]
with rasterio.open(sys.argv[2]) as ds:
    tile = ds.read(list(range(1, bands + 1)), window=Window(0, 0, size, size), boundless=True, fill_value=0)
x = (tile[None].astype(np.float32) / 255 - np.float32(meta["standardization_mean"])[:, None, None]) \
    / np.float32(meta["standardization_std"])[:, None, None]
probs = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
shares = np.bincount(probs[0].argmax(0).ravel(), minlength=probs.shape[1]) / (size * size)
print("first tile:", ", ".join(f"{meta['class_names'][str(i)]} {100 * s:.1f}%" for i, s in enumerate(shares)))
PY
