"""Throughput and model-FLOPs utilisation (MFU) of a training run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.atomic import atomic_write_text

log = logging.getLogger(__name__)


def step_flops(trainer: Any) -> float:
    """FLOPs of one forward + backward on this rank's batch (counted, not estimated).

    Runs one uncounted-by-the-optimiser step on a fresh batch: gradients are cleared afterwards
    and the data stream restarts at the trainer's step, so the run itself is unchanged.
    """
    from .train import compute_loss

    batch = next(trainer.batches())
    trainer.model.train()
    counter = FlopCounterMode(display=False)
    with counter, trainer.autocast():
        out = compute_loss(trainer.model, trainer.loss_fn, batch)
        out.total.backward()
    trainer.opt.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def write_perf(
    trainer: Any, rows: list[dict[str, float]], flops: float, peak_tflops: float, path: Path
) -> dict[str, float]:
    """samples/s over the second half of the run (past warm-up and compilation) and MFU."""
    tail = rows[len(rows) // 2 :]
    sps = tail[-1]["samples_per_s"] if len(tail) < 2 else _rate(tail, trainer)
    world = trainer.dist.world_size
    per_rank_bs = trainer.cfg.data.batch_size / world
    achieved = flops * (sps / world) / per_rank_bs  # FLOP/s per device
    res = {
        "samples_per_s": sps,
        "flops_per_step_per_device": flops,
        "achieved_tflops_per_device": achieved / 1e12,
        "peak_tflops_per_device": peak_tflops,
        "mfu": achieved / (peak_tflops * 1e12),
        "world_size": world,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    log.info("%.1f samples/s, %.1f TFLOP/s per device, MFU %.1f%%", sps,
             res["achieved_tflops_per_device"], 100 * res["mfu"])  # fmt: skip
    return res


def _rate(tail: list[dict[str, float]], trainer: Any) -> float:
    # samples_per_s is cumulative from the start; difference two points to drop warm-up.
    a, b = tail[0], tail[-1]
    t_a = a["step"] * trainer.cfg.data.batch_size / a["samples_per_s"]
    t_b = b["step"] * trainer.cfg.data.batch_size / b["samples_per_s"]
    return (b["step"] - a["step"]) * trainer.cfg.data.batch_size / max(t_b - t_a, 1e-9)
