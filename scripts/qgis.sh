#!/usr/bin/env bash
# Install the plugin into a QGIS profile (as a symlink to this checkout), make its runtime
# dependencies importable by QGIS's own Python (the system python3, not .venv), enable it, and
# start QGIS. QGIS_PROFILE=name picks another profile; NO_START=1 only installs.
# QGIS_PROFILES_DIR is the folder that HOLDS the profiles (default
# ${XDG_DATA_HOME:-~/.local/share}/QGIS/QGIS3/profiles); it must end in /profiles, because QGIS's
# --profiles-path takes the folder ABOVE it. Prints where it installed and the qgis command line
# that finds the plugin there.
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
profiles=${QGIS_PROFILES_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/QGIS/QGIS3/profiles}
profiles=$(realpath -m "$profiles")
qgis_args=(--profile "$profile")
if [ -n "${QGIS_PROFILES_DIR:-}" ]; then
  if [ "$(basename "$profiles")" != profiles ]; then
    echo "qgis: QGIS_PROFILES_DIR=$QGIS_PROFILES_DIR must be a folder named 'profiles': QGIS" >&2
    echo "      looks for profiles in <--profiles-path>/profiles/<name>, so a plugin installed" >&2
    echo "      elsewhere would never load. Use e.g. QGIS_PROFILES_DIR=$profiles/profiles" >&2
    exit 2
  fi
  qgis_args=(--profiles-path "$(dirname "$profiles")" --profile "$profile")
fi
pdir="$profiles/$profile"
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
echo "qgis: installed and enabled in the profile '$profile': $pdir"
echo "qgis: start QGIS with this profile:  qgis ${qgis_args[*]}"
[ "${NO_START:-0}" = 1 ] && exit 0
if [ -z "${DISPLAY:-}" ] && [ "${QT_QPA_PLATFORM:-}" != offscreen ]; then
  echo "qgis: no DISPLAY; starting under xvfb-run" >&2
  exec xvfb-run -a qgis "${qgis_args[@]}"
fi
unset QT_QPA_PLATFORM
exec qgis "${qgis_args[@]}"
