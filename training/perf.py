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
    from .steps import compute_loss

    batch = next(trainer.batches(workers=0))  # one batch: no worker pool to start
    trainer.model.train()
    counter = FlopCounterMode(display=False)
    with counter, trainer.autocast():
        out = compute_loss(trainer.model, trainer.loss_fn, batch)
        out.total.backward()
    trainer.opt.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def write_perf(
    trainer: Any, rows: list[dict[str, float]], flops: float, peak_tflops: float, path: Path
) -> dict[str, Any]:
    """samples/s over the second half of the run (past warm-up and compilation), MFU, input wait.

    ``data_wait_fraction`` is the share of that time the training loop spent waiting for its
    next batch: above ~0.1 the figure measures the input pipeline, not the accelerator.
    """
    tail = rows[len(rows) // 2 :]
    sps, wait = second_half_rates(tail, trainer.cfg.data.batch_size)
    world = trainer.dist.world_size
    per_rank_bs = trainer.cfg.data.batch_size / world
    achieved = flops * (sps / world) / per_rank_bs  # FLOP/s per device
    res = {
        "samples_per_s": sps,
        "flops_per_step_per_device": flops,
        "flops_per_sample": flops / per_rank_bs,
        "achieved_tflops_per_device": achieved / 1e12,
        "peak_tflops_per_device": peak_tflops,
        "mfu": achieved / (peak_tflops * 1e12),
        "data_wait_fraction": wait,
        "world_size": world,
        "global_batch": trainer.cfg.data.batch_size,
        "precision": trainer.cfg.precision if trainer.device.type == "cuda" else "fp32",
        "steps_measured": len(tail),
        "device": torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu",
    }
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    log.info("%.1f samples/s, %.1f TFLOP/s per device, MFU %.1f%%, waiting for data %.0f%%",
             sps, res["achieved_tflops_per_device"], 100 * res["mfu"], 100 * wait)  # fmt: skip
    if wait > 0.1:
        log.warning("the input pipeline held training back %.0f%% of the time: raise "
                    "data.num_workers (-1 = all CPUs) or use a faster data source", 100 * wait)  # fmt: skip
    return res


def second_half_rates(tail: list[dict[str, float]], global_batch: int) -> tuple[float, float]:
    """(samples/s, fraction of time waiting for data) between the first and last row of ``tail``.

    Rows carry cumulative ``elapsed_s`` and ``data_wait_s``; differencing two rows drops the
    warm-up before the first. With a single row the cumulative figures are all there is.
    """
    a, b = tail[0], tail[-1]
    if len(tail) < 2:
        return b["samples_per_s"], b["data_wait_s"] / max(b["elapsed_s"], 1e-9)
    dt = max(b["elapsed_s"] - a["elapsed_s"], 1e-9)
    return (b["step"] - a["step"]) * global_batch / dt, (b["data_wait_s"] - a["data_wait_s"]) / dt
