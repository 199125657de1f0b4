#!/usr/bin/env bash
# The command-line path on real aerial imagery: train on one tile, segment the next, score it.
#
#   examples/train_and_segment.sh [DATA_DIR] [WORK_DIR]
#
# DATA_DIR holds new_brunswick/ from the project's shared data (0.5 m RGB tiles and land-cover polygons;
# default ../shared/data beside the repository). WORK_DIR (default ./new_brunswick_run) gets the config,
# the model bundle, the class map, polygons, areas and scores.
# Settings from the environment: GEOSEG (the command, default `geoseg`), STEPS (training steps, default:
# the recipe's own), ENCODER and WEIGHTS (default resnet34 with ImageNet weights, downloaded once).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/data}/new_brunswick
work=${2:-new_brunswick_run}
geoseg=${GEOSEG:-geoseg}
[ -d "$data" ] || { echo "$data not found: pass the folder that holds new_brunswick/" >&2; exit 2; }
mkdir -p "$work"

# The config a user writes: the image, the polygons and the attribute holding their class, the classes.
cat >"$work/train.yaml" <<YAML
data:
  images: [$data/23322E759967N_clipped_1m_1of2.tif]
  labels: $data/BakerLake_2017_clipped.gpkg
  label_field: Quatreclasses
  classes: {1: forest, 2: water, 3: road, 4: building}
model:
  encoder: ${ENCODER:-resnet34}
  weights: ${WEIGHTS:-imagenet}
YAML

steps=()
[ -n "${STEPS:-}" ] && steps=(--max-steps "$STEPS")
"$geoseg" train "$work/train.yaml" --out "$work/model" "${steps[@]}" --overwrite --progress none
"$geoseg" infer "$data/23322E759967N_clipped_1m_2of2.tif" --model "$work/model" --out-dir "$work" --overwrite \
  --progress none
"$geoseg" evaluate "$work/23322E759967N_clipped_1m_2of2_classes.tif" "$data/BakerLake_2017_clipped.gpkg" \
  --label-field Quatreclasses --json "$work/scores.json" --overwrite
