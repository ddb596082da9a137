"""Self-check that DDP training equals one process on the same global batch.

``python -m training.ddp_check`` spawns two CPU processes (gloo), runs one forward/backward of
the tiny model on halves of a global batch and compares loss and gradients with a single process
on the whole batch. The same function backs the unit test; on a GPU node it is a quick sanity
check of the all-gather-with-gradients path before a long run.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from .config import TrainConfig, load_config
from .losses import AllToAllLoss
from .models.model import UniGeoCLIP


def _global_batch(cfg: TrainConfig, n: int) -> dict:
    from .steps import build_datasets, make_collate

    train, _ = build_datasets(cfg)
    return make_collate(cfg)([train[i] for i in range(n)])


def _slice(batch, lo: int, hi: int):
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    if isinstance(batch, dict):
        return {k: _slice(v, lo, hi) for k, v in batch.items()}
    return batch[lo:hi]


def loss_and_grads(model: nn.Module, core: UniGeoCLIP, cfg: TrainConfig, batch: dict):
    """One forward/backward; returns the loss and {param name: grad} (zeros for no grad)."""
    from .steps import compute_loss

    loss_fn = AllToAllLoss(cfg.loss, list(cfg.model.modalities))
    out = compute_loss(model, loss_fn, batch)
    out.total.backward()
    grads = {
        n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in core.named_parameters()
        if p.requires_grad
    }
    return float(out.total.detach()), grads


def _build(cfg: TrainConfig) -> UniGeoCLIP:
    torch.manual_seed(cfg.seed)
    core = UniGeoCLIP(cfg.model)
    core.logit_bias.requires_grad_(cfg.loss.kind == "sigmoid")
    return core


def _worker(rank: int, world: int, port: int, cfg_dict: dict, n: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        torch.set_num_threads(1)
        cfg = TrainConfig.from_dict(cfg_dict)
        core = _build(cfg)
        ddp = nn.parallel.DistributedDataParallel(core)
        per = n // world
        batch = _slice(_global_batch(cfg, n), rank * per, (rank + 1) * per)
        loss, grads = loss_and_grads(ddp, core, cfg, batch)
        torch.save({"loss": loss, "grads": grads}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port that was free a moment ago (for the rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare(cfg: TrainConfig, n: int = 16, world: int = 2) -> dict[str, float]:
    """Run DDP (``world`` gloo ranks) and one process; return max differences."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, free_port(), cfg.to_dict(), n, tmp), nprocs=world)
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(world)]
    core = _build(cfg)
    loss, grads = loss_and_grads(core, core, cfg, _global_batch(cfg, n))
    grad_diff = max(float((r["grads"][k] - g).abs().max()) for r in ranks for k, g in grads.items())
    grad_scale = max(float(g.abs().max()) for g in grads.values())
    return {
        "loss_single": loss,
        "loss_diff": max(abs(r["loss"] - loss) for r in ranks),
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check DDP == single process on one global batch.")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)
    res = compare(load_config(a.config), a.batch)
    for k, v in res.items():
        print(f"{k:18s} {v:.3e}")
    ok = res["loss_diff"] < 1e-5 and res["grad_max_abs_diff"] < 1e-5
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
