"""DDP over two gloo CPU processes equals one process on the same global batch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from tests.training.conftest import tiny_config
from training.ddp_check import compare
from training.distributed import gather_batch_embeddings, gather_with_grad


def test_gather_is_identity_without_a_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    emb, mask = gather_batch_embeddings({"gps": x}, {"gps": torch.tensor([1, 0, 1])})
    assert emb["gps"] is x and mask["gps"].dtype == torch.bool


def test_ddp_two_processes_match_single_process_loss_and_gradients():
    # DSM + GPS towers keep the spawned processes free of transformers (fast start-up); the
    # gather/loss path under test is the same for every tower.
    cfg = tiny_config(model={"modalities": ["dsm", "gps"]}, data={"missing_prob": 0.4})
    res = compare(cfg, n=12, world=2)
    assert res["loss_single"] > 0.1
    assert res["loss_diff"] < 1e-6
    assert res["grad_max_abs"] > 1e-3
    assert res["grad_max_abs_diff"] < 1e-5


def test_slurm_script_is_valid_bash_and_launches_torchrun_per_node():
    script = Path(__file__).resolve().parents[2] / "scripts/slurm_train.sbatch"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    for needle in ("--ntasks-per-node=1", "--nnodes \"$NNODES\"", "--rdzv-backend c10d",
                   '--rdzv-endpoint "$HEAD:$PORT"', "-m training.train"):  # fmt: skip
        assert needle in text, needle
