"""A training step's parts, shared by the trainer, evaluation and tools: datasets, collation, loss."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import InputError
from engine.model.contract import Modality
from engine.model.preprocess import TextTokenizer

from .band_match import collate_banded, dataset_bands
from .config import TrainConfig
from .data.collate import collate_samples
from .distributed import gather_batch_embeddings
from .losses import AllToAllLoss, LossOutput
from .models.model import UniGeoCLIP
from .models.towers import tokenizer_path
from .specs import all_preprocess
from .toy import ToyWorld


def build_datasets(
    cfg: TrainConfig, held_out: str = "val"
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """Train and held-out (``held_out`` split) datasets: the toy world or a dataset folder."""
    d, m = cfg.data, cfg.model
    if d.source == "toy":
        kw = dict(
            num_classes=d.num_classes, missing_prob=d.missing_prob,
            aerial_shape=(len(m.aerial.bands), m.aerial.image_size),
            street_size=m.streetview.image_size, dsm_size=m.dsm.image_size, world_seed=d.seed,
        )  # fmt: skip
        held = ToyWorld(d.num_val, split_seed=2 if held_out == "val" else 3, **kw)
        return ToyWorld(d.num_samples, split_seed=1, **kw), held
    from .data import ChipDataset

    root = Path(d.source)
    if not (root / "dataset.json").is_file():
        raise InputError(
            f"data.source {d.source!r} is neither 'toy' nor a dataset folder built by "
            "'python -m training.data' (no dataset.json there)"
        )
    train = drop_areas(ChipDataset(root, "train", m.modalities, train=True, seed=d.seed), d)
    val = ChipDataset(root, held_out, m.modalities, train=False, seed=d.seed)
    if len(train) < d.batch_size or len(val) == 0:
        raise InputError(
            f"{root}: {len(train)} train / {len(val)} val samples; need >= batch_size "
            f"({d.batch_size}) train samples and some val samples"
        )
    return train, val


def drop_areas(ds: Any, d: Any) -> Any:
    """``ds`` without the samples of ``d.holdout_areas`` (areas kept for evaluation only)."""
    if not d.holdout_areas:
        return ds
    areas = np.asarray(ds.table.column("area_id").to_pylist(), dtype=object)
    ds.table = ds.table.filter(~np.isin(areas, list(d.holdout_areas)))
    return ds


def make_collate(cfg: TrainConfig, source_bands: tuple[str, ...] | None = None):
    """Batch builder with the towers' own preprocessing (the engine's functions: no skew).

    Aerial chips are matched to the tower's bands by name (``source_bands``, default the
    dataset's own, see :mod:`training.band_match`) and come out as ``{"pixels", "band_mask"}``.
    """
    pre = all_preprocess(cfg.model)
    tok = None
    if Modality.TEXT in pre:
        p = pre[Modality.TEXT]
        tok = TextTokenizer(tokenizer_path(cfg.model.text), p.max_text_length, p.lowercase)
    base = partial(collate_samples, preprocess=pre, tokenizer=tok)
    if Modality.AERIAL not in pre:
        return base
    want = tuple(cfg.model.aerial.bands)
    src = source_bands or dataset_bands(cfg.data.source) or want
    return partial(collate_banded, base=base, source=src, want=want)


def move(batch: Any, device: torch.device) -> Any:
    """Tensors of a nested batch to ``device`` (non-blocking from pinned memory)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move(v, device) for k, v in batch.items()}
    return batch


def compute_loss(model: nn.Module, loss_fn: AllToAllLoss, batch: dict) -> LossOutput:
    """Embed the local batch, gather the global batch, return the global all-to-all loss."""
    core: UniGeoCLIP = model.module if hasattr(model, "module") else model
    emb = model(batch)
    g_emb, g_mask = gather_batch_embeddings(emb, batch["mask"])
    return loss_fn(g_emb, g_mask, core.temperature_scale(), core.logit_bias)
