"""metadata.txt carries every field QGIS requires, and the packaging rules hold."""

from __future__ import annotations

import configparser
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = (
    "name",
    "qgisMinimumVersion",
    "description",
    "about",
    "version",
    "author",
    "email",
    "repository",
    "hasProcessingProvider",
    "tracker",
    "icon",
    "category",
)


def read_metadata() -> dict[str, str]:
    c = configparser.ConfigParser(interpolation=None)
    c.read(ROOT / "metadata.txt", encoding="utf-8")
    return dict(c["general"])


def test_metadata_has_required_fields():
    md = {k.lower(): v for k, v in read_metadata().items()}
    for key in REQUIRED:
        assert md.get(key.lower(), "").strip(), f"metadata.txt lacks {key}"
    assert md["qgisminimumversion"] == "3.22"
    assert md["hasprocessingprovider"] == "yes"
    assert (ROOT / md["icon"]).is_file()
    assert len(md["about"]) > 100


def test_versions_agree():
    md = read_metadata()
    py = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{md["version"]}"' in py
    assert md["version"] in (ROOT / "CHANGELOG.md").read_text()


def test_root_init_only_defines_classfactory():
    src = (ROOT / "__init__.py").read_text()
    assert "def classFactory(iface)" in src
    top_imports = [ln for ln in src.splitlines() if ln.startswith(("import ", "from "))]
    assert top_imports == [], "the root __init__ must import lazily"


def test_package_zip_has_runtime_files_only(tmp_path):
    r = subprocess.run(
        ["bash", "scripts/package.sh", "unigeo"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    zips = sorted((ROOT / "dist").glob("unigeo-*.zip"))
    assert zips
    names = zipfile.ZipFile(zips[-1]).namelist()
    assert "unigeo/metadata.txt" in names and "unigeo/__init__.py" in names
    assert "unigeo/engine/model/contract.py" in names and "unigeo/plugin/unigeo_plugin.py" in names
    for banned in ("training/", "tests/", "bench/", "docs/", "scripts/", ".ci/"):
        assert not any(n.startswith("unigeo/" + banned) for n in names), banned
    assert all(n.startswith("unigeo/") for n in names)
