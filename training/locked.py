"""The locked-image trainer: ``python -m training.locked --config lit_cpu --out out/lit``.

Stage 1 (LiT, Zhai et al. 2022): the pretrained backbones (EfficientNet-Lite0 for aerial and
street level, MiniLM for text) are frozen and their outputs cached once
(:mod:`training.cache_build`); the heads, the spectral stream, the DSM and GPS towers and the
temperature train on the cache with the masked all-to-all loss, plus a same-place view term
(two dates or augmentations of one aerial chip). Stage 2 (``locked.stage2_steps > 0``) unfreezes
the aerial backbone's blocks after ``model.aerial.split`` at ``locked.stage2_lr`` and trains on
the cached trunk outputs. Both stages checkpoint (``stage1.pt``, ``stage2.pt``) and resume; the
final weights go to ``checkpoint.pt`` (what ``training.export`` reads). The same code runs on a
GPU (``scripts/train_gpu.sh``).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import InputError

from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .config import TrainConfig, load_config, parse_overrides
from .feature_cache import FeatureCache
from .locked_batches import CachedBatches, embed_cached, to_device
from .losses import AllToAllLoss, infonce_pair, relational_distill
from .metrics_log import MetricsLog
from .models.model import UniGeoCLIP
from .sampler import GeoClusteredBatchSampler

log = logging.getLogger(__name__)


def train_indices(cache: FeatureCache, cfg: TrainConfig) -> np.ndarray:
    """Samples stage 1/2 train on: the train split, minus every held-out area."""
    split, area = cache.column("split"), cache.column("area")
    keep = (split == "train") & ~np.isin(area, list(cfg.data.holdout_areas))
    return np.flatnonzero(keep)


# Settings a resumed run may change: where the data lives, logging and checkpoint cadence.
RESUME_MAY_CHANGE = ("data.source", "device", "log_every", "ckpt_every", "eval_every")


def config_changes(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Dotted names of the settings that differ between a checkpoint's run and this one."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix[:-1]: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out

    a, b = flat(saved.to_dict()), flat(current.to_dict())
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and k not in RESUME_MAY_CHANGE]


def freeze_for_stage(model: UniGeoCLIP, stage: int) -> list[nn.Parameter]:
    """Freeze the cached parts; return the aerial backbone parameters stage 2 trains."""
    tail: list[nn.Parameter] = []
    for name, tower in model.towers.items():
        if hasattr(tower, "backbone"):
            tower.backbone.requires_grad_(False)
        if name == "text":
            tower.encoder.requires_grad_(False)
    a = model.towers["aerial"] if "aerial" in model.towers else None
    if stage == 2 and a is not None and hasattr(a, "backbone"):
        for mod in [*a.backbone._blocks[a.split :], a.backbone._conv_head, a.backbone._bn1]:
            mod.requires_grad_(True)
            tail += list(mod.parameters())
    return tail


def build_optimizer(model: UniGeoCLIP, cfg: TrainConfig, stage: int) -> torch.optim.Optimizer:
    """AdamW on the trainable parameters; stage 2: heads at lr/10, backbone tail at stage2_lr."""
    tail = {id(p) for p in freeze_for_stage(model, stage)}
    o = cfg.optim
    head_lr = o.lr if stage == 1 else o.lr * 0.1
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay = p.ndim >= 2 and name.endswith(".weight") and "embedding" not in name
            groups.setdefault((decay, id(p) in tail), []).append(p)
    params = [
        {"params": ps, "weight_decay": o.weight_decay if decay else 0.0,
         "lr": cfg.locked.stage2_lr if is_tail else head_lr}
        for (decay, is_tail), ps in groups.items()
    ]  # fmt: skip
    return torch.optim.AdamW(params, lr=head_lr, betas=tuple(o.betas))


def _lr_lambda(total: int, warmup: int, floor: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


class LockedTrainer:
    """Stage 1 or 2 on a feature cache; owns model, optimiser, schedule and the batch order."""

    def __init__(self, model: UniGeoCLIP, cfg: TrainConfig, cache: FeatureCache, out: str | Path,
                 stage: int = 1) -> None:  # fmt: skip
        self.model, self.cfg, self.cache, self.stage = model, cfg, cache, stage
        self.out = Path(out)
        self.device = torch.device(
            "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"
        )
        self.model.to(self.device)
        self.steps = cfg.steps if stage == 1 else cfg.locked.stage2_steps
        self.opt = build_optimizer(model, cfg, stage)
        warm = min(cfg.optim.warmup_steps, max(1, self.steps // 10))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, _lr_lambda(self.steps, warm, cfg.optim.min_lr_ratio)
        )
        self.loss_fn = AllToAllLoss(cfg.loss, list(cfg.model.modalities))
        self.batches = CachedBatches(cache, cfg)
        self.idx = train_indices(cache, cfg)
        if len(self.idx) < cfg.data.batch_size:
            raise InputError(f"{len(self.idx)} training samples < batch size {cfg.data.batch_size}")
        lat, lon = np.asarray(cache["lat"])[self.idx], np.asarray(cache["lon"])[self.idx]
        d = cfg.data
        self.sampler = GeoClusteredBatchSampler(lat, lon, d.batch_size, d.geo_cluster_fraction,
                                                d.cluster_cell_deg, d.seed + stage)  # fmt: skip
        self.step = 0
        self._epoch: tuple[int, list[list[int]]] = (-1, [])
        self.ckpt = self.out / f"stage{stage}.pt"
        self.metrics = MetricsLog(self.out / f"metrics_stage{stage}.csv")

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        emb = embed_cached(self.model, batch, self.stage)
        view = emb.pop("aerial_view", None)
        scale = self.model.temperature_scale()
        out = self.loss_fn(emb, batch["mask"], scale, self.model.logit_bias, batch.get("groups"))
        total, stats = out.total, dict(out.pairs)
        if view is not None and "aerial" in batch["mask"]:
            v = infonce_pair(emb["aerial"], view, batch["mask"]["aerial"], scale)
            n, vw = max(1, len(out.pairs)), self.cfg.locked.view_weight
            total = (total * n + vw * v) / (n + vw)
            stats["aerial-view"] = float(v.detach())
            dw = self.cfg.locked.distill_weight
            if dw > 0 and self.stage == 1:  # the teacher: the cached pooled Lite0 features
                ok = batch["mask"]["aerial"]
                d = relational_distill(emb["aerial"], view, batch["aerial"]["feat"],
                                       batch["aerial_view"]["feat"], ok,
                                       self.cfg.locked.distill_tau)  # fmt: skip
                total = total + dw * d
                stats["aerial-distill"] = float(d.detach())
        rw, rec = self.cfg.locked.recon_weight, self.model.recon_head
        if rw > 0 and rec is not None and "aerial" in emb:
            a, ok = batch["aerial"], batch["mask"]["aerial"]
            spectral = self.model.towers["aerial"].spectral
            with torch.no_grad():
                target = spectral.summary(a["pixels"], a["band_mask"])
                if self.cfg.model.recon_quantiles:
                    q = spectral.quantiles(a["pixels"], a["band_mask"])
                    target = torch.cat([target, q], dim=1)
            mse = nn.functional.mse_loss(rec(emb["aerial"][ok]), target[ok]) * target.shape[1]
            total = total + rw * mse
            stats["spectral-recon"] = float(mse.detach())
        w, head = self.cfg.locked.label_weight, self.model.label_head
        if w > 0 and head is not None and "aerial" in emb:
            lab = batch["landuse"]
            ok = (lab >= 0) & (lab < head.out_features) & batch["mask"]["aerial"]
            if bool(ok.any()):
                ce = nn.functional.cross_entropy(head(emb["aerial"][ok]), lab[ok])
                total = total + w * ce
                stats["landuse-ce"] = float(ce.detach())
        return total, stats

    def train_step(self, order: list[int], rng: np.random.Generator) -> dict[str, float]:
        self.model.train()
        batch = to_device(self.batches.batch(order, rng, self.stage), self.device)
        total, stats = self._loss(batch)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        gnorm = float(nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        self.opt.step()
        self.sched.step()
        self.step += 1
        row = {"step": self.step, "loss": float(total.detach()), "grad_norm": gnorm,
               "lr": self.opt.param_groups[0]["lr"],
               "temperature": float(1.0 / self.model.temperature_scale().detach())}  # fmt: skip
        row.update({f"loss/{k}": v for k, v in stats.items()})
        return row

    def save(self) -> Path:
        return save_checkpoint(self.ckpt, self.cfg, self.model, self.opt, self.sched, self.step,
                               {"stage": self.stage, "cache": str(self.cache.folder)})  # fmt: skip

    def resume(self) -> bool:
        """Continue from ``stage<k>.pt`` when it exists and belongs to this run; True if it did.

        A checkpoint of another configuration (``make model`` after the recipe changed) is not
        resumed, which would ship the old run under the new name: it is moved aside to
        ``stage<k>.stale.pt`` (nothing is lost) and the stage starts afresh.
        """
        if not self.ckpt.is_file():
            return False
        ck = load_checkpoint(self.ckpt, self.device)
        changed = config_changes(ck["config"], self.cfg)
        if changed:
            stale = self.ckpt.with_suffix(".stale.pt")
            self.ckpt.replace(stale)
            log.warning("stage %d: %s was trained with another configuration (%s); moved to %s, "
                        "starting afresh", self.stage, self.ckpt, ", ".join(changed[:6]),
                        stale.name)  # fmt: skip
            return False
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.step = int(ck["step"])
        set_rng_state(ck["rng"])
        self.metrics = MetricsLog.resume(self.out / f"metrics_stage{self.stage}.csv", self.step)
        log.info("stage %d: resumed at step %d", self.stage, self.step)
        return True

    def fit(self, stop: int | None = None) -> list[dict[str, float]]:
        """Train to ``stop`` (default: the stage's steps); the batch order depends on the step
        only, so a resumed run sees the batches an uninterrupted one would have."""
        end = self.steps if stop is None else min(stop, self.steps)
        rows, t0 = [], time.perf_counter()
        per_epoch = len(self.sampler)
        while self.step < end:
            epoch, pos = divmod(self.step, per_epoch)
            if self._epoch[0] != epoch:
                self._epoch = (epoch, self.sampler.batches(epoch))
            order = self._epoch[1][pos]
            rng = np.random.default_rng([self.cfg.seed, self.stage, self.step])
            row = self.train_step([int(self.idx[i]) for i in order], rng)
            row["elapsed_s"] = time.perf_counter() - t0
            rows.append(row)
            if self.step % self.cfg.log_every == 0 or self.step == end:
                self.metrics.add(row)
                self.metrics.flush()
                log.info("stage %d step %d loss %.4f", self.stage, self.step, row["loss"])
            if self.step % self.cfg.ckpt_every == 0 or self.step == end:
                self.save()
        return rows


def run_stages(cfg: TrainConfig, out: str | Path, stop: int | None = None) -> UniGeoCLIP:
    """Build the cache if needed, run stage 1 and (if configured) stage 2, resuming each."""
    from .cache_build import ensure_cache

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = UniGeoCLIP(cfg.model)
    model.logit_bias.requires_grad_(cfg.loss.kind == "sigmoid")
    cache = ensure_cache(model, cfg, cfg.data.source)
    stages = [1, 2] if cfg.locked.stage2_steps > 0 else [1]
    for stage in stages:
        tr = LockedTrainer(model, cfg, cache, out, stage)
        if not tr.resume() and stage == 2:
            log.info("stage 2: starting from stage 1's weights")
        tr.fit(stop if stage == stages[-1] else None)
        if tr.step < tr.steps:
            return model  # stopped early (``stop``): resume later
    save_checkpoint(out / "checkpoint.pt", cfg, model, step=0, extra={"stages": stages})
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Locked-image training on cached backbone features.")
    ap.add_argument("--config", default="lit_cpu", help="config name or YAML path")
    ap.add_argument("--out", default="out/lit", help="output folder (stage checkpoints, metrics)")
    ap.add_argument("--set", action="append", default=[], help="override, e.g. steps=2000")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    over = parse_overrides(a.set)
    cfg = load_config(a.config, over)
    t0 = time.perf_counter()
    run_stages(cfg, a.out)
    log.info("done in %.0f s -> %s", time.perf_counter() - t0, Path(a.out) / "checkpoint.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
