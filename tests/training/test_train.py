"""Trainer: configs, sampler, schedule, a real short run, and exact checkpoint resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError, ModelContractError
from tests.training.conftest import tiny_config
from training.checkpoint import load_checkpoint
from training.config import OptimConfig, TrainConfig, load_config, parse_override
from training.sampler import GeoClusteredBatchSampler, rank_slice
from training.train import Trainer, lr_factor


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_named_configs_load_and_round_trip(name):
    cfg = load_config(name)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.model.embed_dim >= 32 and cfg.steps > 0


def test_config_errors_are_specific():
    with pytest.raises(InputError, match="unknown keys.*'lr_typo'"):
        load_config("tiny", {"optim": {"lr_typo": 1}})
    with pytest.raises(InputError, match="multiple of patch_size"):
        load_config("tiny", {"model": {"dsm": {"image_size": 30}}})
    with pytest.raises(InputError, match="not found"):
        load_config("no_such_config")
    assert parse_override("optim.lr=3e-4") == {"optim": {"lr": 3e-4}}


def test_sampler_batches_are_disjoint_deterministic_and_geographically_clustered():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(40, 50, 400), rng.uniform(0, 10, 400)
    clustered = GeoClusteredBatchSampler(lat, lon, 20, cluster_fraction=1.0, cell_deg=1.0)
    uniform = GeoClusteredBatchSampler(lat, lon, 20, cluster_fraction=0.0, cell_deg=1.0)
    b = clustered.batches(3)
    flat = [i for batch in b for i in batch]
    assert len(b) == 20 and all(len(x) == 20 for x in b) and len(set(flat)) == 400
    assert b == clustered.batches(3) and b != clustered.batches(4)

    def spread(batches):
        return np.mean([np.hypot(lat[x].std(), lon[x].std()) for x in batches])

    assert spread(b) < 0.5 * spread(uniform.batches(3))
    assert rank_slice(list(range(8)), 1, 2) == [4, 5, 6, 7]
    with pytest.raises(InputError):
        rank_slice(list(range(7)), 0, 2)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    o = OptimConfig(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, o, 100) == pytest.approx(0.1)
    assert lr_factor(9, o, 100) == pytest.approx(1.0)
    assert lr_factor(100, o, 100) == pytest.approx(0.1)
    f = [lr_factor(s, o, 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(f, f[1:], strict=False))


def test_training_lowers_the_loss_and_writes_outputs(trained):
    trainer, rows, out = trained
    losses = [r["loss"] for r in rows]
    assert len(rows) == 40 and np.isfinite(losses).all()
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.4
    assert (out / "metrics.csv").read_text().count("\n") == 1 + 40 // 5
    assert (out / "curves.png").stat().st_size > 1000
    ck = load_checkpoint(out / "checkpoint.pt")  # weights_only=True inside
    assert ck["step"] == 40 and ck["config"] == trainer.cfg


def test_resume_continues_exactly(tmp_path):
    cfg = tiny_config(model={"modalities": ["aerial", "dsm", "gps"]},
                      data={"num_samples": 64, "batch_size": 16}, steps=6, ckpt_every=3)  # fmt: skip
    straight = Trainer(cfg, tmp_path / "a")
    straight.fit(3)
    straight.save(tmp_path / "mid.pt")
    straight.fit(6)
    resumed = Trainer(cfg, tmp_path / "b")
    resumed.resume(tmp_path / "mid.pt")
    assert resumed.step == 3
    resumed.fit(6)
    for (n, p), q in zip(straight.core.named_parameters(), resumed.core.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n
    assert straight.opt.param_groups[0]["lr"] == pytest.approx(resumed.opt.param_groups[0]["lr"])


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelContractError, match="unreadable or corrupt"):
        load_checkpoint(bad)
    with pytest.raises(ModelContractError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_periodic_held_out_eval_is_logged(tmp_path):
    cfg = tiny_config(model={"modalities": ["dsm", "gps"]}, steps=2, eval_every=2, log_every=1,
                      data={"num_samples": 64, "num_val": 32, "batch_size": 16})  # fmt: skip
    rows = Trainer(cfg, tmp_path).fit()
    assert "val/R@1" not in rows[0] and 0.0 <= rows[1]["val/R@1"] <= rows[1]["val/R@10"] <= 1.0
    assert "val/R@10" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_full_tiny_run_trains_every_pair_well_above_chance(tmp_path):
    from training.evaluate import evaluate_model

    trainer = Trainer(load_config("tiny"), tmp_path)
    rows = trainer.fit()
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]
    res = evaluate_model(trainer.core, trainer.val_set, trainer.cfg)
    for pair, r in res["retrieval"].items():
        if "text" in pair:  # same-caption samples all count as hits: chance@1 is far above 1/N
            assert r["R@1"] > 3 * r["chance@1"], pair
        else:
            assert r["R@10"] > 5 * 10 * r["chance@1"], pair
    assert res["probe"]["aerial"]["linear"] > res["baseline"]["aerial_raw_stats"]["linear"]


def test_misspelled_pair_weights_are_refused():
    with pytest.raises(InputError, match="areal-text"):
        load_config("tiny", {"loss": {"weights": {"areal-text": 5.0}}})
    with pytest.raises(InputError, match=">= 0"):
        load_config("tiny", {"loss": {"weights": {"aerial-text": -1.0}}})
    assert load_config("tiny", {"loss": {"weights": {"text-aerial": 2.0}}}).loss.weights
