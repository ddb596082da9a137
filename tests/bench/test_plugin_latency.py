"""Smoke test of bench/plugin_latency.py: a click on a cached store becomes a heatmap layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]


def test_click_to_layer_on_cached_store(tmp_path):
    out = tmp_path / "plugin.json"
    cmd = [sys.executable, str(ROOT / "bench" / "plugin_latency.py"), "--tiles", "400"]
    cmd += ["--repeats", "2", "--shared", str(tmp_path / "none"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    (row,) = res["click_to_layer"]
    assert 380 <= row["tiles"] <= 420 and row["repeats"] == 2
    assert 0 < row["min_ms"] <= row["click_to_layer_ms"] <= row["max_ms"] < 60_000
    assert res["ui_stall"] is None  # no real raster given
