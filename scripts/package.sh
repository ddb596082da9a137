#!/usr/bin/env bash
# Build the installable plugin zip: dist/<slug>-<version>.zip with one folder named after the slug.
# Uses git archive, so .gitattributes export-ignore keeps training/, tests/, bench/, docs/ out.
# Uncommitted changes to tracked files are included (git stash create); untracked files are not.
set -euo pipefail
cd "$(dirname "$0")/.."
slug=${1:-unigeo}
version=$(sed -n 's/^version=//p' metadata.txt)
mkdir -p dist
out="dist/${slug}-${version}.zip"
rev=$(git stash create 2>/dev/null || true)
rev=${rev:-HEAD}
[ -n "$(git status --porcelain --untracked-files=normal | grep '^??' || true)" ] &&
  echo "package: note: untracked files are not packaged (git add them first)" >&2
rm -f "$out"
git archive --format=zip --prefix="${slug}/" -o "$out" "$rev"
n=$(unzip -Z1 "$out" | grep -cv '/$' || true)
bad=$(unzip -Z1 "$out" | grep -E "^${slug}/(training|tests|bench|docs|scripts|\.ci)/" || true)
if [ -n "$bad" ]; then echo "package: non-runtime files leaked into the zip:" >&2; echo "$bad" >&2; exit 1; fi
printf 'package: %s  (%s files, %s)\n' "$out" "$n" "$(du -h "$out" | cut -f1)"
