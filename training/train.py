"""The trainer: ``python -m training.train --config tiny`` (or ``torchrun ... -m training.train``).

AdamW with warm-up and cosine decay, bf16 autocast on CUDA, gradient clipping, geographically
clustered batches, DDP with embeddings all-gathered (with gradients) over the global batch,
checkpoints that resume exactly, a metrics CSV and PNG curves.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import check_resumable, load_checkpoint, save_checkpoint, set_rng_state
from .config import OptimConfig, TrainConfig, load_config, parse_overrides
from .distributed import DistInfo, cleanup, init_distributed
from .loader import EpochBatches, make_loader, resolve_workers
from .losses import AllToAllLoss
from .metrics_log import MetricsLog
from .models.model import UniGeoCLIP
from .perf import step_flops, write_perf
from .sampler import GeoClusteredBatchSampler, per_rank_batch
from .steps import build_datasets, compute_loss, make_collate, move

log = logging.getLogger(__name__)


def dataset_coords(ds: torch.utils.data.Dataset) -> tuple[list[float], list[float]]:
    """Sample coordinates, from ``ds.coords()`` when the dataset has it (no rendering)."""
    if hasattr(ds, "coords"):
        lats, lons = ds.coords()
        return list(lats), list(lons)
    samples = [ds[i] for i in range(len(ds))]
    return [s["lat"] for s in samples], [s["lon"] for s in samples]


def build_optimizer(model: UniGeoCLIP, cfg: OptimConfig, text_pretrained: bool):
    """AdamW: no decay on biases, norms, tokens and the temperature; slower pretrained text."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Decay 2-D+ ``*.weight`` tensors except embeddings (token, position and the patch-embedding
        # conv): not biases, norms, CLS/register tokens either. nn.MultiheadAttention's
        # ``in_proj_weight`` (SigLIP's pooling head) does not match the rule and is not decayed.
        # Left so on purpose for now: the shipped model and the ablations were trained with it.
        decay = p.ndim >= 2 and name.endswith(".weight") and "embedding" not in name
        slow = text_pretrained and name.startswith("towers.text.encoder.")
        groups.setdefault((decay, slow), []).append(p)
    params = [
        {"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
         "lr": cfg.lr * (cfg.text_lr_scale if slow else 1.0)}
        for (decay, slow), ps in groups.items()
    ]  # fmt: skip
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas))
    return opt


def lr_factor(step: int, cfg: OptimConfig, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


class Trainer:
    """Owns model, optimiser, schedule, data order and outputs of one run."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, dist: DistInfo | None = None):
        self.cfg, self.out = cfg, Path(out_dir)
        self.dist = dist or DistInfo()
        # Fail before any model is built: the global batch is fixed, the world size must fit it.
        self.rank_batch = per_rank_batch(cfg.data.batch_size, self.dist.world_size)
        want = (
            cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.device = (
            torch.device(want, self.dist.local_rank) if want == "cuda" else torch.device("cpu")
        )
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
        self.core = UniGeoCLIP(cfg.model).to(self.device)
        self.core.logit_bias.requires_grad_(cfg.loss.kind == "sigmoid")
        self.model: nn.Module = self.core
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.core, device_ids=ids)
        self.loss_fn = AllToAllLoss(cfg.loss, list(cfg.model.modalities))
        pretrained_text = cfg.model.text.kind != "scratch"
        self.opt = build_optimizer(self.core, cfg.optim, pretrained_text)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, partial(lr_factor, cfg=cfg.optim, total=cfg.steps)
        )
        self.train_set, self.val_set = build_datasets(cfg)
        self.collate = make_collate(cfg)
        lats, lons = dataset_coords(self.train_set)
        self.sampler = GeoClusteredBatchSampler(
            lats, lons, cfg.data.batch_size,
            cfg.data.geo_cluster_fraction, cfg.data.cluster_cell_deg, cfg.data.seed,
        )  # fmt: skip
        self.step = 0
        self.metrics = MetricsLog(self.out / "metrics.csv")

    def autocast(self):
        if self.device.type == "cuda" and self.cfg.precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batches(self, workers: int | None = None):
        """Endless stream of this rank's collated batches, starting where ``self.step`` is.

        Args:
            workers: DataLoader workers (default: ``data.num_workers``, ``-1`` = auto).
        """
        epoch, start = divmod(self.step, len(self.sampler))
        order = EpochBatches(self.sampler, self.dist.rank, self.dist.world_size, epoch, start)
        if workers is None:
            workers = resolve_workers(self.cfg.data.num_workers)
        loader = make_loader(self.train_set, order, self.collate, workers,
                             pin_memory=self.device.type == "cuda")  # fmt: skip
        for batch in loader:
            yield move(batch, self.device)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step; returns the metrics row."""
        self.model.train()
        with self.autocast():
            out = compute_loss(self.model, self.loss_fn, batch)
        self.opt.zero_grad(set_to_none=True)
        out.total.backward()
        gnorm = 0.0
        if self.cfg.optim.grad_clip > 0:
            gnorm = float(
                nn.utils.clip_grad_norm_(self.core.parameters(), self.cfg.optim.grad_clip)
            )
        self.opt.step()
        self.sched.step()
        self.step += 1
        row = {"step": self.step, "loss": float(out.total.detach()), "grad_norm": gnorm,
               "lr": self.opt.param_groups[0]["lr"],
               "temperature": float(1.0 / self.core.temperature_scale().detach())}  # fmt: skip
        row.update({f"loss/{k}": v for k, v in out.pairs.items()})
        return row

    def save(self, path: Path | None = None) -> Path:
        path = path or self.out / "checkpoint.pt"
        epoch, batch = divmod(self.step, len(self.sampler))
        # Informational: resuming needs only the step (the sampler order is a function of
        # (seed, epoch)), so any world size that divides the global batch can continue.
        extra = {"world_size": self.dist.world_size, "global_batch": self.cfg.data.batch_size,
                 "sampler_epoch": epoch, "sampler_batch": batch}  # fmt: skip
        return save_checkpoint(path, self.cfg, self.core, self.opt, self.sched, self.step, extra)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, step and RNG.

        The checkpoint may come from a run with another world size: everything in it is
        per global batch (the step, the sampler position, AdamW moments of the averaged
        gradient, the schedule), so only the split of each global batch over ranks changes.
        """
        ckpt = load_checkpoint(path, self.device)
        check_resumable(ckpt["config"], self.cfg, path)
        old_world = ckpt.get("extra", {}).get("world_size", self.dist.world_size)
        if old_world != self.dist.world_size and self.dist.is_main:
            log.info("resuming a %d-process checkpoint with %d processes (%d samples each)",
                     old_world, self.dist.world_size, self.rank_batch)  # fmt: skip
        self.core.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        set_rng_state(ckpt["rng"])
        self.metrics = MetricsLog.resume(self.out / "metrics.csv", self.step)

    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Train until ``steps`` (default ``cfg.steps``); rank 0 logs, checkpoints and plots."""
        end = steps if steps is not None else self.cfg.steps
        rows: list[dict[str, float]] = []
        stream = self.batches()
        bar = tqdm(total=end, initial=self.step, disable=not self.dist.is_main, desc="train")
        t0, seen, wait = time.perf_counter(), 0, 0.0
        while self.step < end:
            t_in = time.perf_counter()
            batch = next(stream)
            wait += time.perf_counter() - t_in  # the step before synced (float(loss))
            row = self.train_step(batch)
            seen += self.cfg.data.batch_size
            elapsed = time.perf_counter() - t0
            row.update(samples_per_s=seen / elapsed, elapsed_s=elapsed, data_wait_s=wait)
            rows.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            self._log_and_save(row, end)
        bar.close()
        return rows

    def _log_and_save(self, row: dict[str, float], end: int) -> None:
        if not self.dist.is_main:
            return
        if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
            from .evaluate import quick_eval

            row.update(quick_eval(self.core, self.val_set, self.cfg))
        if self.step % self.cfg.log_every == 0 or self.step == end:
            self.metrics.add(row)
            self.metrics.flush()
        if self.step % self.cfg.ckpt_every == 0 or self.step == end:
            self.save()
        if self.step == end and self.metrics.rows:
            self.metrics.plot(self.out / "curves.png")


def train_segment(
    info: DistInfo, cfg_dict: dict, out: str, stop: int, resume: str = ""
) -> list[float]:
    """Train (optionally resumed) until step ``stop``; returns the losses (for spawn_gloo)."""
    trainer = Trainer(TrainConfig.from_dict(cfg_dict), out, info)
    if resume:
        trainer.resume(resume)
    return [row["loss"] for row in trainer.fit(stop)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train UniGeoCLIP (arXiv 2604.11668).")
    ap.add_argument(
        "--config", default="tiny", help="config name in training/configs or a YAML path"
    )
    ap.add_argument("--out", default="out/train", help="output folder (checkpoint, metrics)")
    ap.add_argument("--resume", default="", help="checkpoint to continue from")
    ap.add_argument("--set", action="append", default=[], help="override, e.g. optim.lr=3e-4")
    ap.add_argument("--eval", action="store_true", help="run training.evaluate at the end")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="per-device peak for MFU")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    over = parse_overrides(a.set)
    cfg = load_config(a.config, over)
    dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    info = init_distributed(dev)
    try:
        trainer = Trainer(cfg, a.out, info)
        if a.resume:
            trainer.resume(a.resume)
        flops = step_flops(trainer) if a.peak_tflops else 0.0
        rows = trainer.fit()
        if info.is_main and rows:
            last = rows[-1]
            log.info("done: step %d, loss %.4f, %.1f samples/s", trainer.step, last["loss"],
                     last["samples_per_s"])  # fmt: skip
            if flops:
                write_perf(trainer, rows, flops, a.peak_tflops, Path(a.out) / "perf.json")
            if a.eval:
                from .evaluate import evaluate_model, write_report

                write_report(evaluate_model(trainer.core, trainer.val_set, cfg), a.out)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
