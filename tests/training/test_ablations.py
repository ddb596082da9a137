"""scripts/ablations.py on a 2-variant, 1-seed, few-step grid of the toy world."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("ablations", ROOT / "scripts/ablations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ablations():
    return _load_script()


@pytest.fixture(scope="module")
def result(tmp_path_factory, ablations):
    out = tmp_path_factory.mktemp("abl")
    # No text tower (no tokenizer load) and a small toy world keep this in seconds; the
    # same-seed rerun runs in a fresh process, as it does for the real grid.
    argv = ["--worlds", "toy", "--variants", "all", "pivot", "--seeds", "0", "--steps", "3",
            "--set", "data.num_samples=48", "--set", "data.num_val=24",
            "--set", "data.batch_size=16", "--set", "model.modalities=[aerial,dsm,gps]",
            "--out", str(out)]  # fmt: skip
    assert ablations.main(argv) == 0
    return out, json.loads((out / "ablations.json").read_text())


def test_writes_json_markdown_and_png(result):
    out, doc = result
    assert (out / "ablations.png").stat().st_size > 5000
    md = (out / "ablations.md").read_text()
    assert "python scripts/ablations.py --worlds toy" in md and "## World: toy" in md
    assert "| pivot: aerial pivot" in md and "Determinism" in md
    assert not list(out.glob("*.part"))


def test_every_run_has_finite_metrics_in_the_unit_interval(result):
    _, doc = result
    assert [(r["variant"], r["seed"]) for r in doc["runs"]] == [("all", 0), ("pivot", 0)]
    for r in doc["runs"]:
        assert r["config"]["steps"] == 3 and len(r["loss_curve"]) == 3
        assert r["wall_s"] > 0 and math.isfinite(r["metrics"]["final_loss"])
        for key in ("R@1", "R@10", "R@1_nonpivot", "R@10_nonpivot", "acc100_gps2aerial",
                    "acc100_aerial2gps", "gps_probe_linear"):  # fmt: skip
            v = r["metrics"][key]
            assert v is not None and 0.0 <= v <= 1.0, (key, v)
        assert r["metrics"]["R@10"] >= r["metrics"]["R@1"]
        # Non-pivot pairs are those without the aerial image: here only dsm <-> gps.
        assert r["metrics"]["R@1_nonpivot"] == pytest.approx(
            (r["metrics"]["pairs"]["dsm->gps"]["R@1"] + r["metrics"]["pairs"]["gps->dsm"]["R@1"])
            / 2
        )
    pivot = doc["runs"][1]["config"]["loss"]
    assert pivot["mode"] == "pivot" and pivot["pivot"] == "aerial"


def test_summary_and_same_seed_rerun_is_bit_identical(result):
    _, doc = result
    s = doc["summary"]["toy"]["all"]["R@1"]
    assert s["n"] == 1 and s["std"] == 0.0 and s["mean"] == doc["runs"][0]["metrics"]["R@1"]
    d = doc["determinism"]
    assert d["steps"] == 3 and d["max_abs_loss_diff"] == 0.0 and d["identical"]


def test_variant_configs_change_only_the_ablated_setting(ablations):
    base = ablations.run_config("tiny", {}, "toy", "all", 1, 10).to_dict()
    for variant in ("pivot", "pairs", "gps1"):
        cfg = ablations.run_config("tiny", {}, "toy", variant, 1, 10).to_dict()
        changed = {k for k in base if base[k] != cfg[k]}
        assert changed == ({"model"} if variant == "gps1" else {"loss"}), variant
    assert ablations.run_config("tiny", {}, "toy", "gps1", 1, 10).model.gps.sigmas == (256.0,)
    pairs = ablations.run_config("tiny", {}, "toy", "pairs", 1, 10).loss.pairs
    assert "streetview-gps" in pairs and len(pairs) == 4
