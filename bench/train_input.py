"""Can the input pipeline feed a GPU? Samples/s one CPU core renders + collates, against the
samples/s a GPU would consume at a given MFU (from the step's counted FLOPs).

The pipeline rate is measured here (one process, ``num_workers=0``, so it is the per-worker
rate); the GPU side is arithmetic, not a measurement: FLOPs per sample are counted with
``torch.utils.flop_counter`` on the config's real towers, and the demand is
``MFU * peak / FLOPs per sample``. Workers needed = demand / per-worker rate.

    .venv/bin/python bench/train_input.py --config small --sources toy data-cache/dataset
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from typing import Any

try:
    from .common import ROOT, md_table
except ImportError:  # run as a script
    from common import ROOT, md_table  # type: ignore[no-redef]


def pipeline_rate(config: str, source: str, batches: int = 3, batch: int = 128) -> float:
    """Samples/s of dataset[i] + collate in this process (one DataLoader worker's work)."""
    import os

    from training.config import load_config
    from training.steps import build_datasets, make_collate

    cwd = os.getcwd()
    os.chdir(ROOT)  # dataset paths are relative to the repository
    try:
        cfg = load_config(config, {"data": {"source": source, "batch_size": batch}})
        train, _ = build_datasets(cfg)
        collate = make_collate(cfg)
        collate([train[i % len(train)] for i in range(8)])  # warm caches and the tokenizer
        t0 = time.perf_counter()
        for b in range(batches):
            collate([train[(b * batch + i) % len(train)] for i in range(batch)])
        return batches * batch / (time.perf_counter() - t0)
    finally:
        os.chdir(cwd)


def flops_per_sample(config: str, batch: int = 8) -> float:
    """Counted forward + backward FLOPs per sample of the config's model (all modalities)."""
    import torch

    from training.config import load_config
    from training.perf import step_flops
    from training.train import Trainer

    torch.set_num_threads(2)
    over = {"data": {"batch_size": batch, "num_samples": 4 * batch, "num_val": batch,
                     "missing_prob": 0.0, "num_workers": 0}, "device": "cpu"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-flops-") as tmp:
        return step_flops(Trainer(load_config(config, over), tmp)) / batch


def run(config: str, sources: list[str], peak_tflops: float, mfus: list[float]) -> dict[str, Any]:
    fps = flops_per_sample(config)
    demand = {m: m * peak_tflops * 1e12 / fps for m in mfus}
    rows = []
    for src in sources:
        rate = pipeline_rate(config, src)
        rows.append({"source": src, "samples/s per worker": round(rate, 1),
                     **{f"workers for MFU {m:.0%}": math.ceil(d / rate)
                        for m, d in demand.items()}})  # fmt: skip
    return {"config": config, "gflops_per_sample": fps / 1e9, "peak_tflops": peak_tflops,
            "demand_samples_per_s": demand, "rows": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--sources", nargs="+", default=["toy"])
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="H100/H200 dense bf16")
    ap.add_argument("--mfu", type=float, nargs="+", default=[0.1, 0.3])
    a = ap.parse_args()
    res = run(a.config, a.sources, a.peak_tflops, a.mfu)
    print(f"config {res['config']}: {res['gflops_per_sample']:.1f} GFLOP per sample (fwd+bwd, "
          f"counted); at {a.peak_tflops:g} TFLOP/s peak a GPU consumes "
          + ", ".join(f"{d:,.0f} samples/s at MFU {m:.0%}"
                      for m, d in res["demand_samples_per_s"].items()))  # fmt: skip
    print(md_table(res["rows"]))


if __name__ == "__main__":
    main()
