#!/usr/bin/env bash
# On a CUDA machine (never needed by CI): the CUDA tests and CPU-vs-GPU times of statistics / edit / scoring.
# Usage: bash experiments/gpu_check.sh [OUT.json]   (see experiments/gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
exec "$PY" experiments/gpu_check.py --out "${1:-gpu_check.json}"
