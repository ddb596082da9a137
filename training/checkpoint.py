"""Checkpoints: weights, optimiser, scheduler, step, RNG and the resolved config.

Everything stored is a tensor or a plain Python value, so ``torch.load(weights_only=True)``
can read it and loading a checkpoint never executes pickled code.
"""

from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.atomic import atomic_path
from engine.errors import ModelContractError

from .config import TrainConfig

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A run resumed on a node with another GPU count restores the devices both have:
        # set_rng_state_all would fail on a checkpoint written by a node with more GPUs.
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device=i)


def save_checkpoint(
    path: str | Path,
    cfg: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically (a crash mid-write leaves the previous file intact)."""
    ckpt: dict[str, Any] = {
        "format": 1,
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "step": int(step),
        "rng": rng_state(),
        "extra": extra or {},
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    path = Path(path)
    with atomic_path(path, suffix=".pt.part") as tmp:
        torch.save(ckpt, tmp)
    return path


def check_resumable(saved: TrainConfig, current: TrainConfig, path: str | Path) -> None:
    """Refuse to resume when the data order or the step would mean something else.

    The world size may change between runs (the global batch is split over whatever ranks
    there are), but the global batch and the data seed define which samples step ``k`` sees;
    changing them mid-run would silently train on another data order. (The data path may
    change: a cluster mounts the same dataset elsewhere.)
    """
    for key in ("batch_size", "seed"):
        old, new = getattr(saved.data, key), getattr(current.data, key)
        if old != new:
            raise ModelContractError(
                f"checkpoint {path} was trained with data.{key}={old!r} but this run has "
                f"{new!r}; resume with --set data.{key}={old!r} (the global batch stays fixed "
                "when the number of processes changes: each of W processes embeds "
                "batch_size / W samples)"
            )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; its ``"config"`` is turned back into a :class:`TrainConfig`."""
    path = Path(path)
    if not path.is_file():
        raise ModelContractError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise ModelContractError(f"checkpoint {path} is unreadable or corrupt ({e})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ModelContractError(f"{path} is not a UniGeo training checkpoint")
    ckpt["config"] = TrainConfig.from_dict(ckpt["config"])
    return ckpt


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild the model from a checkpoint's stored config and load its weights (eval mode)."""
    from .models.model import UniGeoCLIP

    ckpt = load_checkpoint(path, map_location)
    cfg: TrainConfig = ckpt["config"]
    model = UniGeoCLIP(cfg.model)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, cfg
