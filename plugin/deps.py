"""Runtime dependencies of the plugin inside QGIS: check, explain, and install them privately.

QGIS runs the system Python, not the project's .venv, so onnxruntime, tokenizers and
threadpoolctl are installed into a folder of the QGIS profile (``python/dependencies/unigeo``)
with pip's ``--target``, and that folder is put on ``sys.path`` before the engine is imported.
Only self-contained wheels go there: rasters, vectors, CRSs and geometry go through GDAL's own
bindings (``osgeo``), which come with QGIS linked against the very GDAL, PROJ and GEOS the
application loaded. Wheels that bundle their own copies (rasterio, pyogrio, pyproj, shapely)
crash or fail inside QGIS, whose already-loaded libraries take over their symbols
(docs/QGIS_LIBRARIES.md). numpy is never installed there: the system numpy (1.x) must stay,
Debian's GDAL bindings need it.

Also a command-line tool (``python3 plugin/deps.py --install``) used by ``make qgis``.
This module imports nothing from qgis at top level so it also runs outside QGIS.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Import name -> pip requirement. Kept in step with the "engine" extra in pyproject.toml. Never
# add a wheel that bundles GDAL, PROJ or GEOS here (see the module docstring).
REQUIREMENTS = {
    "onnxruntime": "onnxruntime>=1.17,<2",
    "tokenizers": "tokenizers>=0.15,<1",
    # heatmaps score on several threads with one BLAS thread each (else single-threaded)
    "threadpoolctl": "threadpoolctl>=3.1,<4",
}
DEPS_SUBDIR = ("python", "dependencies", "unigeo")

# Installed here by earlier versions; they bundle GDAL/PROJ/GEOS and crash inside QGIS, so they
# are removed from the private folder (never from anywhere else).
OBSOLETE = ("rasterio", "pyogrio", "pyproj", "shapely", "affine")

# Versions that import fine but crash inside QGIS: name -> (first bad, first good, why).
KNOWN_BAD: dict[str, tuple[tuple[int, ...], tuple[int, ...], str]] = {}


def deps_dir(profile_dir: str | Path | None = None) -> Path:
    """The private dependency folder of the given (default: the running) QGIS profile."""
    if profile_dir is None:
        from qgis.core import QgsApplication

        profile_dir = QgsApplication.qgisSettingsDirPath()
    return Path(profile_dir).joinpath(*DEPS_SUBDIR)


def activate(profile_dir: str | Path | None = None) -> None:
    """Put the private dependency folder on ``sys.path`` (after the system's numpy)."""
    try:
        d = deps_dir(profile_dir)
    except ImportError:
        return
    if d.is_dir() and str(d) not in sys.path:
        sys.path.append(str(d))


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def known_bad() -> list[str]:
    """``"name version: why"`` for each installed dependency in a version known to crash QGIS."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name, (first_bad, first_good, why) in KNOWN_BAD.items():
        try:
            v = version(name)
        except PackageNotFoundError:
            continue
        if first_bad <= _version_tuple(v) < first_good:
            out.append(f"{name} {v}: {why}; install {REQUIREMENTS[name]}")
    return out


def missing() -> list[str]:
    """Import names of the runtime dependencies that cannot be found or must be replaced."""
    bad = {b.split(" ", 1)[0] for b in known_bad()}
    return [n for n in REQUIREMENTS if n in bad or importlib.util.find_spec(n) is None]


def python_executable() -> str:
    """The Python interpreter QGIS embeds (``sys.executable`` is the qgis binary there)."""
    exe = Path(sys.executable)
    if exe.name.startswith("python"):
        return str(exe)
    for cand in (Path(sys.base_prefix) / "bin" / "python3", Path(shutil.which("python3") or "")):
        if cand.name and cand.exists():
            return str(cand)
    return "python3"


def install_command(target: Path, names: list[str] | None = None) -> list[str]:
    """The exact pip command that installs the dependencies into ``target``."""
    import numpy

    reqs = [REQUIREMENTS[n] for n in (names or list(REQUIREMENTS))]
    return [
        python_executable(),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--upgrade",
        "--target",
        str(target),
        f"numpy=={numpy.__version__}",
        *reqs,
    ]


def install(target: Path, names: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run :func:`install_command`, then drop numpy from ``target`` so the system one is used."""
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(install_command(target, names), capture_output=True, text=True)
    if proc.returncode == 0:
        for p in target.iterdir():
            if p.name == "numpy" or p.name.startswith(("numpy-", "numpy.libs")):
                shutil.rmtree(p, ignore_errors=True)
            if p.name == "bin":
                shutil.rmtree(p, ignore_errors=True)
    return proc


def prune(target: Path) -> list[str]:
    """Remove :data:`OBSOLETE` packages (code, ``.libs`` and ``dist-info``) from ``target``."""
    removed = []
    if not target.is_dir():
        return removed
    for p in sorted(target.iterdir()):
        base = p.name.split("-", 1)[0].split(".", 1)[0].lower()
        if base in OBSOLETE and (p.is_dir() or p.suffix in (".py", ".pth")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
            removed.append(p.name)
    return removed


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--install", action="store_true", help="install the missing dependencies")
    ap.add_argument("--profile-dir", required=True, help="the QGIS profile folder")
    a = ap.parse_args(argv)
    target = deps_dir(a.profile_dir)
    if a.install and (gone := prune(target)):
        print(f"deps: removed wheels that bundle GDAL/PROJ/GEOS from {target}: {gone}")
    activate(a.profile_dir)
    miss = missing()
    if not miss:
        print(f"deps: all runtime dependencies importable (private folder: {target})")
        return 0
    print(f"deps: missing {miss}; install command:\n  {' '.join(install_command(target, miss))}")
    if not a.install:
        return 1
    proc = install(target, miss)
    sys.stdout.write(proc.stdout[-2000:])
    sys.stderr.write(proc.stderr[-4000:])
    return proc.returncode


if __name__ == "__main__":
    os.environ.setdefault("PIP_NO_INPUT", "1")
    sys.exit(_main(sys.argv[1:]))
