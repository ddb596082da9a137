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


def test_locked_seeds_change_init_and_order_and_are_summarised():
    """--seeds of the locked ablations: seed k sets init and batch order; the summary gives each
    variant's mean and range over its seeds, read from targets.json."""
    from training.ablate_locked import run_name, seed_summary, variant_config

    c0 = variant_config("lit_cpu", "robust", 10, 0, {})
    c1 = variant_config("lit_cpu", "robust", 10, 0, {}, seed=1)
    assert (c0.seed, c0.data.seed, c1.seed, c1.data.seed) == (0, 0, 1, 1)
    assert c1.locked.radiometric == 0.3 and run_name("robust", 0) == "robust"
    assert run_name("robust", 2) == "robust-seed2"

    def bundle(havel: float, few: float) -> dict:
        return {"scenes": {"havel_s2": {"zero_shot": {"accuracy": havel, "coarse": {}},
                                        "few_shot": {"embedding": {"mean": few},
                                                     "pixel_stats": {"mean": 0.523},
                                                     "frozen_lite0": {"mean": 0.351}}}},
                "cross_date": {"R@1": 0.15}}  # fmt: skip

    scores = {
        "bundles": {"a0": bundle(0.2, 0.5), "a1": bundle(0.3, 0.4), "b0": bundle(0.25, 0.45)},
        "gps_probes": {
            "land_sea": {"a0": {"linear": 0.7, "knn5": 0.8}, "a1": {"linear": 0.8, "knn5": 0.9}}
        },  # fmt: skip
        "cross_date_baselines": {
            "pixel statistics": {"R@1": 0.174},
            "frozen Lite0": {"R@1": 0.265},
        },  # fmt: skip
    }
    md = seed_summary(scores, {"frozen": ["a0", "a1"], "robust": ["b0"]})
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if "|" in line}
    assert rows["zero-shot Havel"] == "| zero-shot Havel | 0.250 (0.200–0.300) | 0.250 |  |"
    assert rows["few-shot Havel"] == (
        "| few-shot Havel | 0.450 (0.400–0.500) | 0.450 | "
        "pixel statistics 0.523; frozen Lite0 0.351 |"
    )
    assert rows["cross-date R@1"] == ("| cross-date R@1 | 0.150 (0.150–0.150) | 0.150 | "
                                      "pixel statistics 0.174; frozen Lite0 0.265 |")  # fmt: skip
    assert rows["GPS land/sea linear"] == "| GPS land/sea linear | 0.750 (0.700–0.800) | – |  |"
    assert rows["zero-shot SF Bay"] == "| zero-shot SF Bay | – | – |  |"
    assert md.startswith("Mean over 2 seed(s)")


def test_locked_run_keys_are_relative_so_committed_tables_carry_no_machine_paths(tmp_path):
    from pathlib import Path

    from training.ablate_locked import _relative

    assert _relative(Path.cwd() / "out" / "ablations_locked" / "frozen") == Path(
        "out/ablations_locked/frozen"
    )
    outside = tmp_path / "elsewhere"
    assert _relative(outside) == outside  # outside the working directory: kept as given


def test_locked_variants_start_from_the_0_2_0_recipe_whatever_lit_cpu_now_ships():
    """The committed ablation tables compare against the 0.2.0 recipe (recon weight 3, no
    radiometric jitter): every variant pins it, and the 0.3.0 default (lit_cpu) is recon_radio."""
    from training.ablate_locked import VARIANTS, variant_config
    from training.config import load_config

    ship = load_config("lit_cpu").locked
    assert (ship.recon_weight, ship.radiometric, ship.cnn_dropout) == (10.0, 0.3, 0.0)
    got = {v: variant_config("lit_cpu", v, 10, 0, {}).locked for v in VARIANTS}
    lk = {v: (c.recon_weight, c.radiometric, c.cnn_dropout) for v, c in got.items()}
    assert lk["frozen"] == lk["finetuned"] == lk["pivot"] == (3.0, 0.0, 0.0)
    assert lk["radiometric"] == (3.0, 0.3, 0.0) and lk["cnndrop"] == (3.0, 0.0, 0.3)
    assert lk["recon"] == (10.0, 0.0, 0.0)
    assert lk["recon_radio"] == (ship.recon_weight, ship.radiometric, ship.cnn_dropout)
