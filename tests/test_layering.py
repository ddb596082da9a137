"""The architecture's import rules: engine/ never imports torch or qgis; training is not shipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "qgis", "PyQt5", "transformers", "training", "plugin")


def engine_modules() -> list[str]:
    mods = []
    for p in sorted((ROOT / "engine").rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


def test_engine_has_modules():
    mods = engine_modules()
    assert "engine" in mods and "engine.contract" in mods


def test_every_engine_module_imports_without_torch_or_qgis():
    code = (
        "import sys, importlib\n"
        f"for b in {BLOCKED!r}: sys.modules[b] = None\n"
        f"for m in {engine_modules()!r}:\n"
        "    if m.endswith('__main__'): continue\n"
        "    importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r} and sys.modules[m] is not None]\n"
        "assert not bad, bad\n"
        "print('ok', len(sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")


def test_engine_source_names_no_forbidden_import():
    import re

    pat = re.compile(r"^\s*(import|from)\s+(torch|qgis|PyQt5|transformers|training)\b", re.M)
    hits = [str(p) for p in (ROOT / "engine").rglob("*.py") if pat.search(p.read_text())]
    assert hits == []


def test_plugin_never_creates_onnx_sessions_itself():
    hits = [
        str(p)
        for p in (ROOT / "plugin").rglob("*.py")
        if "InferenceSession(" in p.read_text() or "import onnxruntime as" in p.read_text()
    ]
    assert hits == []


# Wheels that bundle their own GDAL, PROJ or GEOS: inside QGIS they clash with the libraries the
# application already loaded (docs/QGIS_LIBRARIES.md). Neither the engine nor the plugin may use them.
BUNDLING_WHEELS = ("rasterio", "shapely", "pyproj", "pyogrio", "fiona", "affine")


def test_engine_imports_without_wheels_that_bundle_geo_libraries():
    blocked = BUNDLING_WHEELS
    code = (
        "import sys, importlib\n"
        f"for b in {blocked!r}: sys.modules[b] = None\n"
        f"for m in {engine_modules()!r}:\n"
        "    if m.endswith('__main__'): continue\n"
        "    importlib.import_module(m)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def test_engine_and_plugin_source_never_import_those_wheels():
    import re

    names = "|".join(BUNDLING_WHEELS)
    pat = re.compile(rf"^\s*(import|from)\s+({names})\b", re.M)
    hits = [
        str(p.relative_to(ROOT))
        for d in ("engine", "plugin")
        for p in (ROOT / d).rglob("*.py")
        if pat.search(p.read_text(encoding="utf-8"))
    ]
    assert hits == []
