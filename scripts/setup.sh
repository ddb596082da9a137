#!/usr/bin/env bash
# One-command set-up: Debian packages (QGIS), the .venv with system site packages, and the
# project's Python dependencies. Idempotent: a stamp file makes a second run take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.unigeo-setup-stamp"
# qgis: the application itself, and unzip: tests/qgis_app installs the plugin zip and starts
# QGIS under Xvfb (with gdb installed too, a crash there also comes with a native backtrace);
# python3-gdal: GDAL's own bindings, the engine's geo stack (docs/QGIS_LIBRARIES.md)
APT_PACKAGES="qgis python3-qgis python3-gdal qgis-providers xvfb python3-venv python3-pip unzip"
# Debian ships older copies of these in /usr/lib/python3/dist-packages; the venv sees them through
# --system-site-packages and pip would otherwise keep the stale ones (affine broke rasterio).
SHADOWED="affine numpy attrs click cligj certifi pyparsing packaging"
EXTRAS=${UNIGEO_EXTRAS:-engine,train,scale,test,dev}

inputs_hash() {
  cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1
}

want="$(inputs_hash) extras=$EXTRAS gpu=$(command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import qgis.core" 2>/dev/null; then
  echo "setup: up to date ($VENV)"
  exit 0
fi

missing_apt() {
  local m=""
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || m="$m $p"
  done
  echo "$m"
}

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  echo "setup: this is not a Debian/Ubuntu (apt) system. Install QGIS >= 3.22 with its Python"
  echo "       bindings and Xvfb with your package manager, then rerun: make setup" >&2
  exit 1
fi
miss=$(missing_apt)
if [ -n "$miss" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages:$miss" >&2
    echo "       run:  sudo apt-get update && sudo apt-get install -y$miss" >&2
    echo "       then: make setup" >&2
    exit 1
  fi
  echo "setup: installing Debian packages:$miss"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $miss
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (system Python, --system-site-packages, so 'import qgis' works)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

# onnxruntime-gpu where an NVIDIA GPU answers, else the CPU build; never both.
ORT="onnxruntime>=1.17,<2"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  ORT="onnxruntime-gpu>=1.17,<2"
  $PIP uninstall -y -q onnxruntime 2>/dev/null || true
fi

echo "setup: installing Python packages (extras: $EXTRAS)"
# torch first, exactly 2.13.0: the CPU wheel this machine already has (a newer one pulls CUDA).
if [[ ",$EXTRAS," == *",train,"* ]]; then
  $PIP install -q "torch==2.13.0"
fi
$PIP install -q --ignore-installed $(for p in $SHADOWED; do
  case $p in numpy) echo "numpy>=1.24,<2" ;; *) echo "$p" ;; esac; done)
$PIP install -q "numpy>=1.24,<2" "$ORT" -e ".[$EXTRAS]"
if [[ "$ORT" == onnxruntime-gpu* ]]; then
  $PIP uninstall -y -q onnxruntime 2>/dev/null || true
  $PIP install -q --force-reinstall --no-deps "$ORT"
fi

$PY - <<'PYCHECK'
import numpy, onnxruntime, tokenizers
from osgeo import gdal, gdal_array  # the engine's geo stack: the GDAL QGIS links
import qgis.core
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__}: need <2 for Debian GDAL"
print(f"setup: ok  numpy {numpy.__version__}  GDAL {gdal.__version__}  "
      f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}  "
      f"QGIS {qgis.core.Qgis.QGIS_VERSION}")
PYCHECK
echo "$want" > "$STAMP"
