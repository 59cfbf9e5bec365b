#!/usr/bin/env bash
# Creates .venv from the project's own files (idempotent: reinstalls only when pyproject.toml changed).
# torch==2.13.0 is pinned in pyproject.toml, in the same install as everything else, so pip never
# pulls a multi-GB CUDA build through sentence-transformers.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: no python3 found (Python 3.11 is required)" >&2; exit 1; }
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$version" = "3.11" ] || { echo "setup: Python 3.11 is required, $PY is $version (set PYTHON=...)" >&2; exit 1; }

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import curation_assets.definitions, torch, faiss, duckdb" \
  || { echo "setup: the install did not complete" >&2; exit 1; }
rm -f .venv/.installed-*
touch "$stamp"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
