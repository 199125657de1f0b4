#!/usr/bin/env bash
# QGIS for the plugin's tests: Debian's QGIS (apt, when missing and we may install) and a venv on
# Debian's Python 3.11 that sees QGIS's bindings, with pytest-qgis. Linked as .qgis-venv.
# QGIS's Python never imports torch: the plugin runs geoseg (.venv) as a subprocess.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
packages=(qgis python3-qgis qgis-providers xvfb)
if [ ! -x /usr/bin/qgis_process.bin ] || ! /usr/bin/python3 -c "import qgis.core" 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "QGIS is not installed and this user cannot install it: run" >&2
    echo "  sudo apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
  echo "Installing Debian's QGIS (${packages[*]}); first time only"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -q "${packages[@]}" >/dev/null; then
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q "${packages[@]}" >/dev/null
  fi
fi
requirements="pytest-qgis==5.0.2 numpy<2 pytest>=8"
key=$( (echo "$requirements"; /usr/bin/python3 -VV) | sha256sum | cut -c1-16)
cache=${GEOSEG_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/geoseg}
venv="$cache/qgis-venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "Creating the QGIS test environment in $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  # System site-packages: QGIS's bindings live there. numpy<2: pip's numpy 2 breaks GDAL's bindings.
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --progress-bar off $requirements
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$root/.qgis-venv"
