#!/usr/bin/env bash
# `make qgis-smoke`: install the plugin zip (make package) into a throw-away QGIS profile with its
# runtime dependencies (scripts/qgis_profile.sh), start the real QGIS under Xvfb, and run
# scripts/qgis_smoke.py in it: plugin loaded, its Processing algorithms, a text heatmap on a raster,
# the dock, a screenshot. Fails on any error of a step, a QGIS exit status other than 0, or a
# Python traceback in the QGIS log. The full check of every algorithm and tool is
# tests/qgis_app (part of `make test`).
#   env: RASTER (default: the demo scene), BANDS (default 3,2,1,4: its red, green, blue, NIR),
#        MODEL (default: resources/models/default), OUT
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qgis >/dev/null || { echo "qgis-smoke: needs the QGIS application: apt-get install -y qgis" >&2; exit 1; }
command -v xvfb-run >/dev/null || { echo "qgis-smoke: needs xvfb-run: apt-get install -y xvfb" >&2; exit 1; }
OUT=$(realpath -m "${OUT:-out/qgis-smoke}")
RASTER=$(realpath "${RASTER:-data-cache/localtileserver/1.0.0/localtileserver/tiler/data/landsat.tif}")
MODEL=$(realpath "${MODEL:-resources/models/default}")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$OUT"
rm -f "$OUT/report.txt"
bash scripts/qgis_profile.sh "$root" default > "$OUT/deps.log" 2>&1 || {
  tail -30 "$OUT/deps.log" >&2; echo "qgis-smoke: installing the plugin failed (log: $OUT/deps.log)" >&2; exit 1; }
rc=0
UNIGEO_SMOKE_OUT="$OUT" UNIGEO_SMOKE_RASTER="$RASTER" UNIGEO_SMOKE_MODEL="$MODEL" UNIGEO_SMOKE_BANDS="${BANDS-3,2,1,4}" HOME="$root" \
  timeout 300 xvfb-run -a -s "-screen 0 1600x1000x24" env -u QT_QPA_PLATFORM \
  qgis --profiles-path "$root" --profile default --nologo --code scripts/qgis_smoke.py \
  > "$OUT/qgis.log" 2>&1 || rc=$?
[ -f "$OUT/report.txt" ] && cat "$OUT/report.txt"
if [ "$rc" != 0 ]; then
  tail -40 "$OUT/qgis.log" >&2
  echo "qgis-smoke: QGIS exited with status $rc (log: $OUT/qgis.log)" >&2
  exit 1
fi
if grep -q "Traceback (most recent call last)" "$OUT/qgis.log"; then
  grep -A20 "Traceback (most recent call last)" "$OUT/qgis.log" >&2
  echo "qgis-smoke: a Python error in the QGIS log (log: $OUT/qgis.log)" >&2
  exit 1
fi
echo "qgis-smoke: ok (screenshot $OUT/window.png)"
