"""Ablations of the locked-image model: backbone (frozen / fine-tuned / random), loss, GPS scales.

    python scripts/ablations.py --locked --steps 1200 --stage2-steps 300 --out docs/model/ablations

Every variant trains on the same data and feature views for the same number of optimiser steps
(``steps + stage2_steps``) from the same seed; only the ablated setting changes:

* ``frozen``     pretrained EfficientNet-Lite0, frozen: stage 1 for all steps (the 0.2.0 recipe,
  :data:`PLAIN`, which every variant but ``robust`` starts from);
* ``finetuned``  pretrained, stage 1 for ``steps``, then stage 2 fine-tunes the aerial blocks after
  the split for ``stage2_steps``;
* ``random``     the same network randomly initialised and frozen (its own feature cache);
* ``pivot``      ImageBind-style loss: only pairs with the aerial image (plus the view term);
* ``gps1``       single-scale GPS encoder (sigma 256) instead of 2^0, 2^4, 2^8, 2^12;
* ``radiometric`` frozen, with a random per-chip and per-band gain on the spectral stream's input;
* ``cnndrop``    frozen, the texture stream hidden from the head for 30 % of training chips;
* ``robust``     both of the last two (the 0.3.0 default recipe of ``lit_cpu``).

All variants are scored together by :mod:`training.targets_run` (checkpoints through
:class:`training.torch_engine.TorchModel`) on the held-out areas, so the table compares them on
the same chips in one run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_text

from .config import TrainConfig, load_config, merge

log = logging.getLogger(__name__)

# The 0.2.0 recipe: no robustness terms. Every variant but ``robust`` starts from it, so the
# first ablations (docs/model/ablations_locked) reproduce with the 0.3.0 defaults in lit_cpu.
PLAIN: dict[str, Any] = {"locked": {"radiometric": 0.0, "cnn_dropout": 0.0}}

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "frozen": ("pretrained Lite0, frozen (stage 1 only)", PLAIN),
    "finetuned": ("pretrained Lite0, stage 1 then stage 2 (blocks after the split trained)",
                  PLAIN),
    "random": ("random-init Lite0, frozen", merge(PLAIN, {
        "model": {"aerial": {"pretrained": False}, "streetview": {"pretrained": False}}})),
    "pivot": ("aerial-pivot loss (pairs with aerial only)",
              merge(PLAIN, {"loss": {"mode": "pivot", "pivot": "aerial"}})),
    "gps1": ("single-scale GPS (sigma 256)",
             merge(PLAIN, {"model": {"gps": {"sigmas": [256.0]}}})),
    "radiometric": ("frozen + radiometric augmentation of the spectral input (r 0.3)",
                    {"locked": {"radiometric": 0.3, "cnn_dropout": 0.0}}),
    "cnndrop": ("frozen + texture-stream dropout (p 0.3)",
                {"locked": {"radiometric": 0.0, "cnn_dropout": 0.3}}),
    "robust": ("frozen + radiometric (r 0.3) + texture-stream dropout (p 0.3): the 0.3.0 recipe",
               {"locked": {"radiometric": 0.3, "cnn_dropout": 0.3}}),
}  # fmt: skip


def variant_config(base: str, variant: str, steps: int, stage2: int,
                   over: dict[str, Any]) -> TrainConfig:  # fmt: skip
    """The config of one variant: same data, seed and total steps for every variant."""
    d = merge(over, VARIANTS[variant][1])
    if variant == "finetuned":
        d = merge(d, {"steps": steps, "locked": {"stage2_steps": stage2}})
    else:
        d = merge(d, {"steps": steps + stage2, "locked": {"stage2_steps": 0}})
    return load_config(base, merge(d, {"ckpt_every": 10**9}))


def run(base: str, variants: list[str], steps: int, stage2: int, work: Path, out: Path,
        over: dict[str, Any], gps_n: int = 2000) -> dict[str, Any]:  # fmt: skip
    """Train every variant (resuming any that stopped) and score them side by side."""
    from .locked import run_stages
    from .targets_run import run as score

    ckpts, walls, cfg = [], {}, None
    for v in variants:
        cfg = variant_config(base, v, steps, stage2, over)
        folder = work / v
        t0 = time.perf_counter()
        if not (folder / "checkpoint.pt").is_file():
            run_stages(cfg, folder)
        walls[v] = time.perf_counter() - t0
        ckpts.append(folder / "checkpoint.pt")
        log.info("ablation %s trained (%.0f s)", v, walls[v])
    assert cfg is not None
    res = score(ckpts, Path(cfg.data.source), list(cfg.data.holdout_areas), out / "scores",
                gps_n=gps_n, timing=False)  # fmt: skip
    doc = {"base_config": base, "steps": steps, "stage2_steps": stage2,
           "variants": {v: VARIANTS[v][0] for v in variants}, "train_wall_s": walls,
           "scores": "scores/targets.json"}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "locked.json", json.dumps(doc, indent=1) + "\n")
    return {"doc": doc, "scores": res}
