#!/usr/bin/env bash
# Make (or reuse) the Python environment for this checkout and link it as .venv.
# The environment lives in ~/.cache/geoseg keyed by requirements.lock and the interpreter, so a
# fresh clone (CI's included) reuses it instead of downloading torch's several GB again; it is
# rebuilt only when the lock file changes. Set GEOSEG_VENV_CACHE to keep it elsewhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=$("$root/tools/find-python.sh")
lock="$root/requirements.lock"
key=$( (cat "$lock"; "$python" -VV) | sha256sum | cut -c1-16)
cache=${GEOSEG_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/geoseg}
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "Creating the Python environment in $venv (first time only: torch is a large download)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools
  "$venv/bin/python" -m pip install --progress-bar off -r "$lock"
  touch "$venv/.complete"
fi
# This checkout's code, editable: cheap, and it points the shared environment at this clone.
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
ln -sfn "$venv" "$root/.venv"
