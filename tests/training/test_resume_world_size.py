"""A checkpoint written by W processes resumes with another world size and the same losses.

Two gloo CPU processes train N steps and checkpoint; one process resumes for M more steps. The
losses must equal an uninterrupted one-process run of N + M steps (and 1 -> 2 likewise): the
global batch, the sampler position and the optimiser/scheduler state do not depend on the
world size. The tolerance covers float summation order only (all-reduce vs one process).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.errors import InputError, ModelContractError
from tests.training.conftest import tiny_config
from training.config import TrainConfig
from training.distributed import DistInfo, spawn_gloo
from training.train import Trainer, train_segment

N, M = 4, 4  # steps before and after the world-size change
RTOL = 1e-4  # relative tolerance on every step's loss


def _config() -> TrainConfig:
    # DSM + GPS keep the spawned processes free of transformers (fast start-up); warm-up of 2
    # steps puts both the warm-up and the cosine part of the schedule inside the N + M steps.
    return tiny_config(
        steps=N + M,
        eval_every=0,
        ckpt_every=N,
        log_every=1,
        model={"modalities": ["dsm", "gps"]},
        data={"missing_prob": 0.3, "batch_size": 16, "num_samples": 96, "num_val": 16},
        optim={"warmup_steps": 2},
    )


def _run_world(cfg: TrainConfig, out: Path, world: int, stop: int, resume: Path | None) -> list:
    args = (cfg.to_dict(), str(out), stop, str(resume or ""))
    if world == 1:
        return train_segment(DistInfo(), *args)
    per_rank = spawn_gloo(train_segment, world, *args)
    assert all(p == per_rank[0] for p in per_rank)  # every rank computes the same global loss
    return per_rank[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[float]:
    """Losses of an uninterrupted one-process run of N + M steps."""
    return _run_world(_config(), tmp_path_factory.mktemp("ref"), 1, N + M, None)


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_resume_with_another_world_size_matches_an_uninterrupted_run(
    tmp_path, reference, first, second
):
    cfg = _config()
    before = _run_world(cfg, tmp_path, first, N, None)
    ckpt = tmp_path / "checkpoint.pt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == N and saved["extra"]["world_size"] == first
    assert saved["extra"]["global_batch"] == 16
    after = _run_world(cfg, tmp_path, second, N + M, ckpt)
    assert len(before) == N and len(after) == M
    got, want = torch.tensor(before + after), torch.tensor(reference)
    assert reference[0] > 0.5 and reference[-1] != reference[0]  # a real, moving loss
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0.0)


def test_world_size_that_does_not_divide_the_global_batch_is_refused(tmp_path):
    with pytest.raises(InputError, match="does not split evenly over 3 processes"):
        Trainer(_config(), tmp_path, DistInfo(rank=0, world_size=3))


def test_resume_refuses_a_changed_global_batch(tmp_path):
    cfg = _config()
    Trainer(cfg, tmp_path).save(tmp_path / "c.pt")
    other = tiny_config(**{**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "batch_size": 32}})
    with pytest.raises(ModelContractError, match="data.batch_size=16"):
        Trainer(other, tmp_path).resume(tmp_path / "c.pt")
