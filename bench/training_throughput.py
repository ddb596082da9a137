"""Training throughput (samples/s) per config on this machine, a few ``Trainer`` steps each.

The first steps are warm-up (allocator, data pipeline); the median step time of the rest, the
data loading included, gives samples/s. GPU figures need a GPU: ``scripts/train_gpu.sh`` is the
prepared script.

    .venv/bin/python bench/training_throughput.py --configs tiny default_cpu --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from .common import ROOT
except ImportError:  # run as a script
    from common import ROOT  # type: ignore[no-redef]


def bench_config(
    config: str, steps: int = 6, warmup: int = 2, threads: int = 2,
    overrides: dict[str, Any] | None = None, workdir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Median seconds per optimiser step (next batch + train_step) after ``warmup`` steps."""
    import os

    import torch

    from training.config import load_config
    from training.train import Trainer

    if steps < 1 or warmup < 0:
        raise ValueError("need steps >= 1 and warmup >= 0")
    torch.set_num_threads(threads)
    cfg = load_config(config, overrides)
    cwd = os.getcwd()
    os.chdir(ROOT)  # data.source paths such as data-cache/dataset are relative to the repo
    try:
        with tempfile.TemporaryDirectory(prefix="unigeo-bench-train-", dir=workdir) as tmp:
            t0 = time.perf_counter()
            trainer = Trainer(cfg, tmp)
            setup_s = time.perf_counter() - t0
            stream = trainer.batches()
            times = []
            for i in range(warmup + steps):
                t = time.perf_counter()
                row = trainer.train_step(next(stream))
                if i >= warmup:
                    times.append(time.perf_counter() - t)
    finally:
        os.chdir(cwd)
    step_s = statistics.median(times)
    bs = cfg.data.batch_size
    return {
        "config": config,
        "device": str(trainer.device),
        "batch": bs,
        "params_M": sum(p.numel() for p in trainer.core.parameters()) / 1e6,
        "step_s": step_s,
        "samples_per_s": bs / step_s,
        "setup_s": setup_s,
        "steps_timed": steps,
        "final_loss": row["loss"],
    }


def run(
    configs: list[str] | None = None, steps: int = 6, warmup: int = 2, threads: int = 2,
    workdir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Benchmark each config in turn (default: tiny and default_cpu)."""
    import torch

    configs = configs or ["tiny", "default_cpu"]
    rows = [bench_config(c, steps, warmup, threads, workdir=workdir) for c in configs]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"rows": rows, "gpu": gpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "default_cpu"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(run(a.configs, a.steps, a.warmup, a.threads), indent=1))


if __name__ == "__main__":
    main()
