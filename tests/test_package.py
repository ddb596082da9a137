"""make package: a plugin zip the official QGIS repository accepts, and the model as its own zip.

The repository's upload validator refuses zips over 25,000,000 bytes, paths with '..', .pyc
files, __pycache__/.git/__MACOSX folders, more than one top folder, a missing __init__.py,
metadata.txt field or LICENSE. These tests read the built zips directly (not through
scripts/plugin_zip_check.py, whose own refusals are tested at the end).
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from engine.library.catalog import DEFAULT_BUNDLE

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY_FIELDS = ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                     "email", "repository", "tracker")  # fmt: skip
FORBIDDEN_PARTS = {"__pycache__", ".git", "__MACOSX", "tests", "training", "bench", "docs",
                   "scripts", ".ci"}  # fmt: skip


def _package(*args: str) -> str:
    env = dict(os.environ, PY=sys.executable)
    r = subprocess.run(["bash", "scripts/package.sh", "unigeo", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def _version() -> str:
    return re.search(r"^version=(.+)$", (ROOT / "metadata.txt").read_text(), re.M).group(1)


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    out = _package()
    v = _version()
    paths = {
        "plugin": ROOT / "dist" / f"unigeo-{v}.zip",
        "model": ROOT / "dist" / "model" / DEFAULT_BUNDLE.file_name,
    }
    for p in paths.values():
        assert str(p.relative_to(ROOT)) in out
    return paths


def test_plugin_zip_is_small_and_clean_for_the_repository(built):
    path = built["plugin"]
    assert path.stat().st_size < 25_000_000
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        md_text = zf.read("unigeo/metadata.txt").decode("utf-8")
    assert names[0] == "unigeo/" and {n.split("/")[0] for n in names} == {"unigeo"}
    for need in ("__init__.py", "metadata.txt", "LICENSE", "plugin/unigeo_plugin.py",
                 "engine/library/install.py", "plugin/dialogs/model_manager_dialog.py"):  # fmt: skip
        assert f"unigeo/{need}" in names, need
    for n in names:
        parts = n.split("/")
        assert ".." not in n and not n.startswith("/") and ".pyc" not in n, n
        assert not FORBIDDEN_PARTS & set(parts[1:2] + parts), n
        assert not n.startswith("unigeo/resources/models") and not n.endswith(".onnx"), n
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read_string(md_text)
    md = dict(cp["general"])
    for key in REPOSITORY_FIELDS:
        assert md.get(key, "").strip(), key
    assert md["version"] == _version() and re.fullmatch(r"\d+\.\d+", md["qgisMinimumVersion"])
    for key in ("repository", "tracker", "homepage"):
        u = urlsplit(md[key])
        assert u.scheme == "https" and u.netloc, key
    assert "/" not in md["author"] and f"unigeo/{md['icon']}" in names
    assert "Model manager" in md["about"]  # says where the model comes from


def test_model_zip_matches_the_pinned_default(built):
    path = built["model"]
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert (sha, len(data)) == (DEFAULT_BUNDLE.sha256, DEFAULT_BUNDLE.size), (
        "resources/models/default changed: update DEFAULT_BUNDLE in engine/library/catalog.py "
        f"to sha256={sha} size={len(data)} (and publish {path.name})"
    )
    assert Path(f"{path}.sha256").read_text() == f"{sha}  {path.name}\n"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    top = f"{DEFAULT_BUNDLE.name}-{DEFAULT_BUNDLE.version}/"
    assert all(n.startswith(top) for n in names) and f"{top}bundle.json" in names
    shipped = sorted(p.name for p in (ROOT / "resources/models/default").iterdir())
    assert sorted(n.removeprefix(top) for n in names) == shipped


def test_offline_zip_embeds_the_default_model(built):
    out = _package("--offline")
    path = ROOT / "dist" / "offline" / f"unigeo-{_version()}-offline.zip"
    assert str(path.relative_to(ROOT)) in out
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
    with zipfile.ZipFile(built["plugin"]) as zf:
        assert set(zf.namelist()) <= names
    for f in (ROOT / "resources/models/default").iterdir():
        assert f"unigeo/resources/models/default/{f.name}" in names


def test_the_packaging_check_refuses_what_the_repository_refuses(tmp_path, built):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from plugin_zip_check import check_zip
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert check_zip(built["plugin"]) == []
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(built["plugin"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            if info.filename != "unigeo/LICENSE":
                dst.writestr(info, src.read(info))
        dst.writestr("unigeo/engine/__pycache__/x.cpython-311.pyc", b"")
        dst.writestr("unigeo/resources/models/default/text.onnx", b"")
        dst.writestr("other/__init__.py", b"")
    problems = "\n".join(check_zip(bad))
    for expected in ("unigeo/LICENSE is missing", "compiled Python file", "'__pycache__' folder",
                     "model file 'unigeo/resources/models/default/text.onnx'",
                     "2 top-level entries (other, unigeo)"):  # fmt: skip
        assert expected in problems, expected
