#!/usr/bin/env bash
# `make bench`: run every benchmark and regenerate docs/PERFORMANCE.md and docs/img/perf_*.png.
# Takes about 10-15 minutes on a 2-core CPU. Extra arguments go to bench/run_all.py
# (e.g. --quick for a smoke run, --json results.json for the raw figures).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export PYTHONDONTWRITEBYTECODE=1
exec "$PY" bench/run_all.py "$@"
