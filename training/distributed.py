"""DDP helpers: process-group set-up from torchrun's environment and all-gather with gradients.

Every rank gathers the embeddings and masks of the whole global batch and computes the same
global loss. The all-gather's backward sums the gradient that every rank's copy of the loss sends
to this rank's slice (all-reduce, then slice), which is ``world_size`` times the true gradient;
DDP's gradient averaging divides it back, so parameters get exactly the single-process gradient
of the global batch. A custom autograd function is used because gloo has no reduce-scatter.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); else single."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def current_info() -> DistInfo:
    """The info of an already initialised process group (single process if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward all-reduces the gradient and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, differentiably; identity when single."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (e.g. masks) from every rank along dim 0; identity when single."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def gather_batch_embeddings(
    emb: dict[str, Tensor], mask: dict[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Global-batch embeddings (with gradients) and masks, in rank order."""
    g_emb = {k: gather_with_grad(v) for k, v in emb.items()}
    g_mask = {k: gather_no_grad(mask[k].to(torch.uint8)).bool() for k in emb}
    return g_emb, g_mask


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_entry(rank: int, world: int, port: int, fn: Callable, args: tuple, out: str) -> None:
    # The same environment torchrun sets, so init_distributed takes its production path.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)  # W processes share the CPU cores
    info = init_distributed("cpu")
    try:
        result = fn(info, *args)
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")
    finally:
        cleanup()


def spawn_gloo(fn: Callable[..., Any], world: int, *args: Any) -> list[Any]:
    """Run ``fn(info, *args)`` in ``world`` local CPU processes joined by gloo.

    A laptop stand-in for ``torchrun --nproc-per-node world`` (tests, CPU checks). ``fn`` must
    be importable by name (a module-level function) and return JSON-serialisable data.

    Returns:
        Each rank's return value, in rank order.
    """
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_gloo_entry, args=(world, _free_port(), fn, args, tmp), nprocs=world)
        return [
            json.loads((Path(tmp) / f"rank{r}.json").read_text(encoding="utf-8"))
            for r in range(world)
        ]
