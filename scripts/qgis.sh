#!/usr/bin/env bash
# Install the plugin into a QGIS profile (as a symlink to this checkout), make its runtime
# dependencies importable by QGIS's own Python (the system python3, not .venv), enable it, and
# start QGIS. QGIS_PROFILE=name picks another profile; NO_START=1 only installs.
set -euo pipefail
cd "$(dirname "$0")/.."
slug=${1:-unigeo}
if ! command -v qgis >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qgis
  else
    echo "qgis: the QGIS application is not installed; run: sudo apt-get install -y qgis" >&2
    [ "${NO_START:-0}" = 1 ] || exit 1
  fi
fi
profile=${QGIS_PROFILE:-default}
pdir="${QGIS_PROFILES_DIR:-$HOME/.local/share/QGIS/QGIS3/profiles}/$profile"
plugins="$pdir/python/plugins"
mkdir -p "$plugins"
if [ -e "$plugins/$slug" ] && [ ! -L "$plugins/$slug" ]; then
  echo "qgis: $plugins/$slug exists and is not a symlink; move it away first" >&2
  exit 1
fi
ln -sfn "$(pwd)" "$plugins/$slug"
echo "qgis: plugin linked at $plugins/$slug"

# The plugin's dependency folder; plugin/deps.py computes the same path inside QGIS.
/usr/bin/python3 plugin/deps.py --install --profile-dir "$pdir"

# Enable the plugin in the profile's settings.
ini="$pdir/QGIS/QGIS3.ini"
mkdir -p "$(dirname "$ini")"
/usr/bin/python3 - "$ini" "$slug" <<'PY'
import configparser, sys
ini, slug = sys.argv[1], sys.argv[2]
c = configparser.RawConfigParser(); c.optionxform = str
c.read(ini)
if not c.has_section("PythonPlugins"):
    c.add_section("PythonPlugins")
c.set("PythonPlugins", slug, "true")
with open(ini, "w") as f:
    c.write(f, space_around_delimiters=False)
PY
[ "${NO_START:-0}" = 1 ] && exit 0
if [ -z "${DISPLAY:-}" ] && [ "${QT_QPA_PLATFORM:-}" != offscreen ]; then
  echo "qgis: no DISPLAY; starting under xvfb-run" >&2
  exec xvfb-run -a qgis --profile "$profile"
fi
unset QT_QPA_PLATFORM
exec qgis --profile "$profile"
