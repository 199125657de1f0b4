#!/usr/bin/env bash
# Print the path of a Python 3.12 interpreter, the way a user's machine offers one:
# `python3.12` on PATH first, then pyenv's newest 3.12.x. Exits 1 with advice when none exists.
set -euo pipefail

works() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; }

if [ -n "${GEOSEG_PYTHON:-}" ] && works "$GEOSEG_PYTHON"; then
  command -v "$GEOSEG_PYTHON"; exit 0
fi
if command -v python3.12 >/dev/null 2>&1 && works python3.12; then
  python3.12 -c 'import sys; print(sys.executable)'; exit 0
fi
if command -v pyenv >/dev/null 2>&1; then
  version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -n 1 || true)
  if [ -n "$version" ]; then
    candidate=$(PYENV_VERSION="$version" pyenv which python)
    if works "$candidate"; then echo "$candidate"; exit 0; fi
  fi
fi
echo "geoseg needs Python 3.12 (torchgeo >= 0.9 requires it): install it, or set GEOSEG_PYTHON=/path/to/python3.12" >&2
exit 1
