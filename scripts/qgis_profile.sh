#!/usr/bin/env bash
# A throw-away QGIS profile with UniGeo installed the README's way, for tests in the real QGIS:
#   ROOT/profiles/PROFILE/python/plugins/unigeo   the zip of `make package`, unzipped: the slim
#       zip of the QGIS repository, without a model (the model zip is dist/model/<name>-<v>.zip;
#       tests/qgis_app installs it through the model manager, as a user does)
#   ROOT/profiles/PROFILE/python/dependencies/unigeo   runtime dependencies, installed by
#       /usr/bin/python3 plugin/deps.py --install --profile-dir ROOT/profiles/PROFILE
#   ROOT/profiles/PROFILE/QGIS/QGIS3.ini          the plugin enabled
# Then `qgis --profiles-path ROOT --profile PROFILE` starts QGIS with it (the last line printed).
# Usage: scripts/qgis_profile.sh ROOT [PROFILE]
#   env UNIGEO_DEPS_CACHE: where the dependency folder is kept between runs, one copy per set of
#       requirements (default data-cache/qgis-deps; "off" disables). The copy is put in place
#       before deps.py runs, so a repeated run installs nothing; a stale copy is completed by it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 ROOT [PROFILE]" >&2; exit 2; }
root=$(realpath -m "$1")
profile=${2:-default}
prof="$root/profiles/$profile"
mkdir -p "$prof/python/plugins" "$prof/QGIS"

bash scripts/package.sh unigeo >&2
version=$(sed -n 's/^version=//p' metadata.txt)
zip="dist/unigeo-${version}.zip"
if unzip -Z1 "$zip" | grep '^unigeo/resources/models/' > /dev/null; then  # no -q: no SIGPIPE
  echo "qgis_profile: $zip holds a model; expected the slim plugin zip of make package" >&2
  exit 1
fi
rm -rf "$prof/python/plugins/unigeo"
unzip -q "$zip" -d "$prof/python/plugins/"

# The cache key: the requirements deps.py installs, and the interpreter and numpy they go with.
key=$(/usr/bin/python3 - <<'PY'
import hashlib, json, platform, sys
sys.path.insert(0, "plugin")
import deps, numpy
what = [deps.REQUIREMENTS, list(sys.version_info[:2]), numpy.__version__, platform.machine()]
print(hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16])
PY
)
target="$prof/python/dependencies/unigeo"
cache=${UNIGEO_DEPS_CACHE:-data-cache/qgis-deps}
hit=0
if [ "$cache" != off ] && [ -d "$cache/$key" ]; then
  rm -rf "$target"
  mkdir -p "$(dirname "$target")"
  # hard links where possible: a copy of ~300 MB in well under a second
  cp -al "$cache/$key" "$target" 2>/dev/null || { rm -rf "$target"; cp -a "$cache/$key" "$target"; }
  hit=1
  echo "qgis_profile: dependencies from the cache $cache/$key" >&2
fi
/usr/bin/python3 plugin/deps.py --install --profile-dir "$prof" >&2
if [ "$cache" != off ] && [ "$hit" = 0 ] && [ -d "$target" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.$key.XXXXXX")
  cp -a "$target/." "$tmp/"
  mv -T "$tmp" "$cache/$key" 2>/dev/null || rm -rf "$tmp"  # another run stored it first
  echo "qgis_profile: dependencies cached in $cache/$key" >&2
fi

printf '[PythonPlugins]\nunigeo=true\n' > "$prof/QGIS/QGIS3.ini"
echo "qgis_profile: plugin installed in $prof/python/plugins/unigeo" >&2
echo "qgis --profiles-path $root --profile $profile"
