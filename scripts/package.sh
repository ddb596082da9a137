#!/usr/bin/env bash
# Build the distribution artefacts (make package / make package-offline):
#   dist/<slug>-<version>.zip      the plugin zip for the official QGIS repository: no model, under
#                                  25,000,000 bytes, checked against the repository's upload rules
#                                  (scripts/plugin_zip_check.py)
#   dist/model/<name>-<version>.zip and .zip.sha256
#                                  the default model bundle, packed reproducibly (python -m engine
#                                  models pack); publish it at engine/library/catalog.DEFAULT_BUNDLE.url
#   with --offline, also dist/offline/<slug>-<version>-offline.zip: the plugin zip with the default
#                                  model inside, for Plugins > Install from ZIP without internet
# Uses git archive, so .gitattributes export-ignore keeps training/, tests/, bench/, docs/ and
# resources/models/ out. Uncommitted changes to tracked files are included (git stash create);
# untracked files are not. PY picks the Python (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
slug=${1:-unigeo}
offline=no
[ "${2:-}" = "--offline" ] && offline=yes
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
version=$(sed -n 's/^version=//p' metadata.txt)
model_dir=resources/models/default
mkdir -p dist dist/model

# 1. the plugin zip (no model)
out="dist/${slug}-${version}.zip"
rev=$(git stash create 2>/dev/null || true)
rev=${rev:-HEAD}
[ -n "$(git status --porcelain --untracked-files=normal | grep '^??' || true)" ] &&
  echo "package: note: untracked files are not packaged (git add them first)" >&2
rm -f "$out"
git archive --format=zip --prefix="${slug}/" -o "$out" "$rev"
"$PY" scripts/plugin_zip_check.py "$out" || { echo "package: $out breaks the rules above" >&2; exit 1; }
n=$(unzip -Z1 "$out" | grep -cv '/$' || true)
printf 'package: %s  (%s files, %s bytes: the plugin, for the QGIS repository)\n' "$out" "$n" "$(stat -c %s "$out")"

# 2. the default model bundle, its own zip with its sha256 (repacked only when the model changed)
model_zip="dist/model/$("$PY" -c "
import json; b = json.load(open('$model_dir/bundle.json')); print(f\"{b['name']}-{b['version']}.zip\")")"
if [ ! -f "$model_zip.sha256" ] || [ -n "$(find "$model_dir" -newer "$model_zip" 2>/dev/null | head -1)" ]; then
  "$PY" -m engine models pack "$model_dir" --out dist/model > /dev/null
fi
got=$(cut -d' ' -f1 "$model_zip.sha256")
pin=$("$PY" -c "from engine.library.catalog import DEFAULT_BUNDLE as b; print(b.sha256, b.size)")
printf 'package: %s  (%s bytes, sha256 %s: the default model)\n' "$model_zip" "$(stat -c %s "$model_zip")" "$got"
if [ "$pin" != "$got $(stat -c %s "$model_zip")" ]; then
  echo "package: note: engine/library/catalog.py pins another sha256/size for the default model" \
    "($pin): update DEFAULT_BUNDLE before publishing this zip" >&2
fi

# 3. optional: the offline plugin zip with the default model inside
if [ "$offline" = yes ]; then
  mkdir -p dist/offline
  off="dist/offline/${slug}-${version}-offline.zip"
  cp "$out" "$off.part"
  "$PY" - "$off.part" "$slug" "$model_dir" <<'EOF'
import sys, zipfile
from pathlib import Path
zip_path, slug, model_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with zipfile.ZipFile(zip_path, "a", zipfile.ZIP_DEFLATED) as zf:
    for p in sorted(q for q in model_dir.rglob("*") if q.is_file() and not q.name.startswith(".")):
        zf.write(p, f"{slug}/{p.as_posix()}")
EOF
  mv "$off.part" "$off"
  "$PY" scripts/plugin_zip_check.py "$off" --with-model || { echo "package: $off is broken" >&2; exit 1; }
  printf 'package: %s  (%s bytes: plugin + default model, for Install from ZIP)\n' "$off" "$(stat -c %s "$off")"
fi
