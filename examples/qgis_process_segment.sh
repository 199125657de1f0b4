#!/usr/bin/env bash
# The QGIS plugin's "Segment raster" algorithm from the command line, with qgis_process (no QGIS window).
#
#   examples/qgis_process_segment.sh MOSAIC MODEL_BUNDLE [OUT_DIR]
#
# Needs QGIS ≥ 3.22 and the geoseg plugin (`make plugin`, then install the zip; or point QGIS_PLUGINPATH
# at this repository's qgis_plugin/ folder, which this script does when the plugin is not installed).
# The plugin runs the geoseg command it finds on PATH or in GEOSEG_EXECUTABLE.
# Writes OUT_DIR (default ./qgis_example)/classes.tif (with a .qml style beside it) and polygons.gpkg.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 MOSAIC MODEL_BUNDLE [OUT_DIR]" >&2; exit 2; }
mosaic=$1 model=$2 out=${3:-qgis_example}
here=$(cd "$(dirname "$0")" && pwd)
# qgis_process.bin: the `qgis_process` wrapper of some distributions insists on a display
qgis_process=${QGIS_PROCESS:-$(command -v qgis_process.bin || command -v qgis_process)}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
export QGIS_PLUGINPATH=${QGIS_PLUGINPATH:-$here/../qgis_plugin}
# exits 1 with "already enabled" on a profile that has it; a missing plugin shows in the run below
"$qgis_process" plugins enable geoseg_qgis >/dev/null 2>&1 || true
mkdir -p "$out"
"$qgis_process" run geoseg:segment -- INPUT="$mosaic" MODEL="$model" \
  OUTPUT="$out/classes.tif" POLYGONS="$out/polygons.gpkg"
