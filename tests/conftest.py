"""Shared test fixtures: paths to the repo and the shared real data, and the plugin package alias."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from scripts.plugin_loader import load_plugin_package

ROOT = Path(__file__).resolve().parents[1]
# a git worktree elsewhere points here with UNIGEO_SHARED_DATA=/path/to/shared/data
SHARED_DATA = Path(os.environ.get("UNIGEO_SHARED_DATA") or ROOT.parent / "shared" / "data")

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# CI replays the same hypothesis examples every run (reproducible verdicts); locally they vary,
# which keeps finding new cases.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Before the session's fixtures go (pytest-qgis's ``exitQgis`` shuts GDAL down), close the
    datasets raster readers still hold: one freed after that crashes the test run at exit."""
    if nextitem is None:
        for name in ("engine.raster.gdal_reader", "unigeo.engine.raster.gdal_reader"):
            if (mod := sys.modules.get(name)) is not None:
                mod.close_all_readers()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real rasters of ../shared/data; tests that need them skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def plugin_package():
    return load_plugin_package()


@pytest.fixture(scope="session")
def analytic_bundle(tmp_path_factory) -> Path:
    """A five-tower bundle with analytic encoders (see tests/fixtures/analytic_bundle.py)."""
    from tests.fixtures.analytic_bundle import make_analytic_bundle

    return make_analytic_bundle(tmp_path_factory.mktemp("analytic_bundle"))
