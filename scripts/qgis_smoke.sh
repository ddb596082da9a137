#!/usr/bin/env bash
# `make qgis-smoke`: install the plugin zip (make package) into a throw-away QGIS profile with its
# runtime dependencies, start the real QGIS under Xvfb, and run scripts/qgis_smoke.py in it:
# plugin loaded, 7 Processing algorithms, a text heatmap on a raster, the dock, a screenshot.
#   env: RASTER (default: the demo scene), BANDS (default 3,2,1,4: its red, green, blue, NIR),
#        MODEL (default: resources/models/default), OUT
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qgis >/dev/null || { echo "qgis-smoke: needs the QGIS application: apt-get install -y qgis" >&2; exit 1; }
OUT=$(realpath -m "${OUT:-out/qgis-smoke}")
RASTER=$(realpath "${RASTER:-data-cache/localtileserver/1.0.0/localtileserver/tiler/data/landsat.tif}")
MODEL=$(realpath "${MODEL:-resources/models/default}")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
prof="$root/profiles/default"
mkdir -p "$prof/python/plugins" "$OUT"
bash scripts/package.sh unigeo
unzip -q dist/unigeo-*.zip -d "$prof/python/plugins/"
/usr/bin/python3 plugin/deps.py --install --profile-dir "$prof" > "$OUT/deps.log" 2>&1
printf '[PythonPlugins]\nunigeo=true\n' > "$prof/QGIS/QGIS3.ini" 2>/dev/null || {
  mkdir -p "$prof/QGIS"; printf '[PythonPlugins]\nunigeo=true\n' > "$prof/QGIS/QGIS3.ini"; }
UNIGEO_SMOKE_OUT="$OUT" UNIGEO_SMOKE_RASTER="$RASTER" UNIGEO_SMOKE_MODEL="$MODEL" UNIGEO_SMOKE_BANDS="${BANDS-3,2,1,4}" HOME="$root" \
  timeout 300 xvfb-run -a -s "-screen 0 1600x1000x24" env -u QT_QPA_PLATFORM \
  qgis --profiles-path "$root" --profile default --nologo --code scripts/qgis_smoke.py \
  > "$OUT/qgis.log" 2>&1 || { cat "$OUT/report.txt" >&2; exit 1; }
cat "$OUT/report.txt"
echo "qgis-smoke: ok (screenshot $OUT/window.png)"
