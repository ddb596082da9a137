"""The benchmarks ``make bench`` runs in their own processes: plugin, distributed and ANN.

Each is a script with ``--json`` (bench/plugin_latency.py needs QGIS, bench/distributed.py starts
Dask worker processes, bench/ann.py builds a FAISS index), so run_all.py runs it as a subprocess
and renders its JSON here. A benchmark that fails is reported as failed in docs/PERFORMANCE.md
with its error, instead of silently missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import ROOT, md_table

FULL = {
    "plugin": ["--tiles", "10000", "100000", "1000000", "--repeats", "5"],
    "distributed": ["--repeats", "3"],
    "ann": ["--tiles", "1000000"],
}
QUICK = {
    "plugin": ["--tiles", "10000", "--repeats", "2"],
    "distributed": ["--repeats", "1", "--no-mosaic"],
    "ann": ["--tiles", "20000", "--queries", "10"],
}
SCRIPTS = {"plugin": "plugin_latency.py", "distributed": "distributed.py", "ann": "ann.py"}


def run_one(name: str, quick: bool, timeout_s: int = 900) -> dict[str, Any]:
    """Run ``bench/<script> --json`` in a subprocess; ``{"error": ...}`` if it fails."""
    args = (QUICK if quick else FULL)[name]
    with tempfile.TemporaryDirectory(prefix=f"unigeo-bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(ROOT / "bench" / SCRIPTS[name]), *args, "--json", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s} s", "command": _cmd(name, args)}
        if proc.returncode != 0 or not out.is_file():
            return {"error": proc.stderr[-1500:], "command": _cmd(name, args)}
        res = json.loads(out.read_text())
    res["command"] = _cmd(name, args)
    return res


def _cmd(name: str, args: list[str]) -> str:
    return f".venv/bin/python bench/{SCRIPTS[name]} {' '.join(args)}"


def targets(res: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, measured, goal) rows for the targets table; names with (≤) are upper bounds."""
    rows = res.get("plugin", {}).get("click_to_layer") or []
    return [
        (f"click to heatmap layer ms, cached store of {r['tiles']:,} tiles (≤)",
         r["click_to_layer_ms"], 1000.0)
        for r in rows
    ]  # fmt: skip


def _failed(res: dict[str, Any]) -> str | None:
    if "error" in res:
        return f"**Failed** (`{res['command']}`):\n\n```\n{res['error']}\n```\n"
    return None


def render_plugin(res: dict[str, Any]) -> list[str]:
    parts = ["## 6. Plugin responsiveness (headless QGIS, real controller and task manager)\n"]
    if (fail := _failed(res)) is not None:
        return [*parts, fail]
    parts += [
        f"`{res['command']}`. A click is `Controller.run_query` with a point example (what the "
        "point tool emits) on a raster whose store is already in the plugin's cache; the clock "
        "stops when the styled heatmap layer is in the project (`layersAdded`).\n",
        md_table(res["click_to_layer"]),
    ]
    if res.get("ui_stall"):
        parts += [
            "UI event loop while a real `EmbedTask` embeds a NAIP scene in the task manager (a "
            "10 ms main-thread timer; the largest gap is the longest the UI froze):\n",
            md_table([res["ui_stall"]]),
        ]
    return parts


def render_distributed(res: dict[str, Any]) -> list[str]:
    parts = ["## 7. Distributed embedding (Dask local cluster, Zarr store)\n"]
    if (fail := _failed(res)) is not None:
        return [*parts, fail]
    cols = ["raster", "tiles", "mode", "ort_threads", "startup_s", "wall_s", "tiles_per_s",
            "km2_per_s", "ratio"]  # fmt: skip
    return [
        *parts,
        f"`{res['command']}`: the same raster embedded by `embed_raster` (single process) and by "
        "`embed_distributed` on `local:1` and `local:2`; cluster start-up is excluded from the "
        "rates and shown separately. On 2 shared cores extra worker processes only add "
        "overhead: the path exists to spread work over machines with more cores or GPUs.\n",
        md_table(res["rows"], cols),
        "Projection for a whole country at 1 m (every column is an input or follows from "
        "them; the per-GPU rate is an **assumption**, no GPU was measured in this run):\n",
        md_table(res["projection"]),
    ]


def render_ann(res: dict[str, Any]) -> list[str]:
    parts = ["## 8. Top-k over a large store: ANN (FAISS) vs brute force\n"]
    if (fail := _failed(res)) is not None:
        return [*parts, fail]
    return [
        *parts,
        f"`{res['command']}`: synthetic clustered unit vectors (a mixture of clusters on the "
        "sphere, like tile embeddings of repeated land covers) as a float16 store; recall@10 "
        "against exact top-10, NMS off, same queries for every method.\n",
        md_table([{"key": k, "value": v} for k, v in res["meta"].items()]),
        md_table(res["rows"]),
    ]
