"""Import the repository root as the plugin package ``unigeo``, the way QGIS imports the plugin.

Shared by the test suite (tests/conftest.py) and the headless demo (scripts/demo.py), which both
need ``unigeo.plugin`` / ``unigeo.engine`` importable without installing the plugin into QGIS.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SLUG = "unigeo"


def load_plugin_package() -> ModuleType:
    """The repository root as the package ``unigeo`` (imported once, then reused)."""
    if SLUG in sys.modules:
        return sys.modules[SLUG]
    spec = importlib.util.spec_from_file_location(
        SLUG, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[SLUG] = mod
    spec.loader.exec_module(mod)
    return mod
