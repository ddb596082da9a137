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
    assert "engine" in mods and "engine.model.contract" in mods


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


# -- the engine's public entry and its inside -------------------------------------------------
# What front ends may import: the use cases (pipeline), the errors, the model's face (the
# contract's data types, UniGeoModel), raster input (readers, band choice) and the model manager.
# Everything else is the engine's inside and may move without touching the plugin.
PUBLIC_ENTRY = (
    "engine.pipeline",
    "engine.errors",
    "engine.model",
    "engine.raster",
    "engine.library",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """``(module, name, line)`` of every ``from`` import in ``path``, relative ones resolved from
    the repository root (the plugin's ``..engine`` is ``engine``), at any depth."""
    import ast

    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = (node.module or "").removeprefix("unigeo.")
            out += [(target, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("unigeo."), "", node.lineno) for a in node.names]
    return out


def _engine_module(target: str, name: str) -> str | None:
    """The engine module an import reads: ``from engine.x import y`` is engine.x, unless y is a
    module of its own (``from engine import pipeline`` reads engine.pipeline)."""
    if not (target == "engine" or target.startswith("engine.")):
        return None
    sub = f"{target}.{name}".replace(".", "/")
    if name and ((ROOT / f"{sub}.py").is_file() or (ROOT / sub / "__init__.py").is_file()):
        return f"{target}.{name}"
    return target


def test_plugin_reaches_the_engine_through_its_public_entry_only():
    hits = []
    for p in sorted((ROOT / "plugin").rglob("*.py")):
        for target, name, line in _imports(p):
            mod = _engine_module(target, name)
            if mod is not None and mod != "engine" and mod not in PUBLIC_ENTRY:
                hits.append(f"{p.relative_to(ROOT)}:{line} imports {mod}")
    assert hits == []
    used = {
        _engine_module(t, n) for p in (ROOT / "plugin").rglob("*.py") for t, n, _ in _imports(p)
    }
    assert "engine.pipeline" in used  # the use cases are reached through it


def test_no_private_name_is_imported_across_modules():
    hits = [
        f"{p.relative_to(ROOT)}:{line} {target}.{name}"
        for d in ("engine", "plugin")
        for p in sorted((ROOT / d).rglob("*.py"))
        for target, name, line in _imports(p)
        if name.startswith("_") and not name.startswith("__")
    ]
    assert hits == []


def test_engine_has_no_import_circles():
    """Imports at any depth (in functions and under TYPE_CHECKING too) form no loop."""
    graph: dict[str, set[str]] = {}
    for p in (ROOT / "engine").rglob("*.py"):
        deps = {_engine_module(t, n) for t, n, _ in _imports(p)}
        graph[_module_name(p)] = {d for d in deps if d and d != _module_name(p)}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


# Modules whose purpose is to gather names for their callers; every other engine module is
# imported from where a name is defined, so nothing needs a shim to move.
FACES = (*PUBLIC_ENTRY, "engine", "engine.store")


def _defined(module: str) -> set[str] | None:
    """Names ``module`` defines at its top level (None: not a file of this tree)."""
    import ast

    path = ROOT.joinpath(*module.split("."))
    path = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    if not path.is_file():
        return None
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_names_are_imported_from_where_they_are_defined():
    """No engine module hands on names it imports (a shim), but the declared faces."""
    hits = []
    for d in ("engine", "plugin", "tests", "bench"):
        for p in sorted((ROOT / d).rglob("*.py")):
            for target, name, line in _imports(p):
                mod = _engine_module(target, name)
                if not name or mod is None or mod in FACES or mod != target:
                    continue
                names = _defined(mod)
                if names is not None and name not in names:
                    hits.append(f"{p.relative_to(ROOT)}:{line} {mod}.{name}")
    assert hits == []
