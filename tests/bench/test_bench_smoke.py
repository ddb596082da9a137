"""Smoke test of the benchmarks: every bench function at a tiny size, and the report writer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench import (
    embed_e2e,
    encoders,
    extra_sections,
    query_latency,
    run_all,
    training_throughput,
)
from bench.common import fit_power, machine_info, md_table, time_fn, time_interleaved
from engine.model import UniGeoModel
from engine.model.contract import Modality


def test_timing_helpers() -> None:
    calls = []
    t = time_fn(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and 0 <= t.best <= t.median and t.repeats == 3
    both = time_interleaved({"a": lambda: None, "b": lambda: sum(range(10_000))}, 1, 3)
    assert set(both) == {"a", "b"} and both["b"].median > 0
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeats=0)
    b, a = fit_power([10, 100, 1000], [3.0, 30.0, 300.0])
    assert b == pytest.approx(1.0) and a == pytest.approx(0.3)
    assert fit_power([1, 2, 4], [1, 4, 16])[0] == pytest.approx(2.0)
    table = md_table([{"x": 1, "y": 0.12345}, {"x": 2, "y": 12345.6}])
    assert table.splitlines()[2] == "| 1 | 0.123 |" and "12346" in table
    info = machine_info()
    assert info["logical_cores"] >= 1 and "onnxruntime" in info and info["git"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Every benchmark at a tiny size, assembled as run_all assembles them."""
    tmp = tmp_path_factory.mktemp("bench")
    enc = encoders.run("tiny", None, [1, 4], ["aerial"], threads=1, repeats=1, workdir=tmp)
    model = UniGeoModel.load(embed_e2e.DEFAULT_BUNDLE, providers="cpu", threads=1)
    rows = []
    for scale in (1, 2):
        tif = embed_e2e.mosaic_raster(None, tmp / f"g{scale}.tif", scale, size=192)
        rows.append({"scale": scale, **embed_e2e.bench_raster(model, tif, tmp, repeats=1)})
    variant = {"ort_threads": 2, "reader_workers": 2, "ort_spinning": False, **rows[0]}
    query = query_latency.run([400, 1600], repeats=1, workdir=tmp)
    train = training_throughput.run(["tiny"], steps=1, warmup=0, threads=1, workdir=tmp)
    return {
        "machine": machine_info(),
        "total_s": 1.0,
        "encoders": enc | {"weights_small": "random init", "op_profile": {}},
        "e2e": {"rows": rows, "variants": [variant], "profile": [], "source": "generated",
                "bundle": "default", "provider": "cpu", "fit_e2e": 1.0, "fit_infer": 1.0},
        "query": query | {"fit_heatmap": 1.0, "profile": []},
        "training": train,
        "memory": {"peak_rss_mb": 1},
        "plugin": {"click_to_layer": [{"tiles": 400, "click_to_layer_ms": 1500.0}],
                   "ui_stall": None, "command": "bench/plugin_latency.py"},
        "distributed": {"error": "worker died", "command": "bench/distributed.py"},
        "ann": extra_sections.run_one("ann", quick=True),
    }  # fmt: skip


def test_encoder_rows(results: dict) -> None:
    rows = results["encoders"]["rows"]
    assert [(r["tower"], r["batch"]) for r in rows] == [("aerial", 1), ("aerial", 4)]
    for r in rows:
        for k in ("torch_eager", "ort_fp32", "ort_int8", "ort_opt"):
            assert r[k] > 0 and math.isfinite(r[k])
        assert r["ort/torch"] == pytest.approx(r["ort_fp32"] / r["torch_eager"])
    fused = results["encoders"]["fused"]
    assert fused["tiny/aerial (clip)"]["Attention"] >= 1  # the fusion the export should ship
    assert fused["tiny/aerial (vit)"]["Attention"] == 0


def test_e2e_rows(results: dict) -> None:
    small, big = results["e2e"]["rows"]
    assert big["tiles"] > 2 * small["tiles"] and small["encoded"] > 0
    # the default bundle's aerial tiles are 64 px at 5 m: 0.1024 km² each
    assert small["km2"] == pytest.approx(small["tiles"] * 0.1024)
    assert small["e2e_s"] > 0 and 0 < small["e2e/infer"] < 50
    assert small["raster_px"] == "192x192x4"


def test_query_rows(results: dict) -> None:
    rows = results["query"]["rows"]
    assert [r["tiles"] for r in rows] == [400, 1600] and all(r["dim"] == 128 for r in rows)
    assert all(r["heatmap_ms"] > 0 and r["top20_ms"] > 0 for r in rows)


def test_query_store_contents(tmp_path: Path) -> None:
    store = query_latency.make_store(tmp_path / "s", 900, dim=16)
    emb = np.asarray(store.embeddings, dtype=np.float32)
    valid = np.asarray(store.valid)
    assert store.complete and emb.shape == (30, 30, 16) and 0.9 < valid.mean() < 1.0
    assert np.allclose(np.linalg.norm(emb[valid], axis=1), 1.0, atol=1e-3)
    store.close()


def test_training_rows(results: dict) -> None:
    (row,) = results["training"]["rows"]
    assert row["config"] == "tiny" and row["batch"] == 32 and row["samples_per_s"] > 0
    assert math.isfinite(row["final_loss"])


def test_report_written(results: dict, tmp_path: Path) -> None:
    imgs = run_all.plot_curves(results, tmp_path / "img")
    for name in imgs.values():
        assert (tmp_path / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = run_all.render(results, imgs, quick=True)
    assert "## Targets" in text and "| aerial | 4 |" in text and "Quick run" in text
    met = {r["target"]: r["met"] for r in run_all.targets(results)}
    assert met and all(v in ("yes", "**no**") for v in met.values())
    # the subprocess sections: ANN ran, a failed benchmark is reported, the click target counts
    assert "## 8. Top-k over a large store" in text and "top_k_ann" in text
    assert "**Failed** (`bench/distributed.py`)" in text and "worker died" in text
    assert met["click to heatmap layer ms, cached store of 400 tiles (≤)"] == "**no**"
    assert "**Click to layer.**" in text


def test_ann_bench_recall(results: dict) -> None:
    ann = results["ann"]
    assert "error" not in ann, ann.get("error")
    rows = {(r["method"], str(r["nprobe"])): r for r in ann["rows"]}
    exact = [r for (m, _), r in rows.items() if m.startswith("brute force")]
    assert len(exact) == 2 and all(r["recall@10"] == 1.0 for r in exact)
    ann_rows = [r for (m, _), r in rows.items() if m.startswith("ANN")]
    assert ann_rows and max(r["recall@10"] for r in ann_rows) >= 0.9


def test_make_inputs_match_contract() -> None:
    model, cfg = encoders.build_model("tiny")
    feeds = encoders.make_inputs(Modality.TEXT, cfg, 3)
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape[0] == 3
    assert feeds["input_ids"][:, 0].tolist() == [101] * 3
    gps = encoders.make_inputs(Modality.GPS, cfg, 5)["latlon"]
    assert gps.shape == (5, 2) and gps.dtype == np.float32 and np.abs(gps[:, 0]).max() <= 60
