"""Ablations of the locked-image model: backbone (frozen / fine-tuned / random), loss, GPS scales.

    python scripts/ablations.py --locked --steps 1200 --stage2-steps 300 --out docs/model/ablations

Every variant trains on the same data and feature views for the same number of optimiser steps
(``steps + stage2_steps``) from the same seed; only the ablated setting changes:

* ``frozen``     pretrained EfficientNet-Lite0, frozen: stage 1 for all steps (the 0.2.0 recipe,
  :data:`PLAIN`, which every variant starts from);
* ``finetuned``  pretrained, stage 1 for ``steps``, then stage 2 fine-tunes the aerial blocks after
  the split for ``stage2_steps``;
* ``random``     the same network randomly initialised and frozen (its own feature cache);
* ``pivot``      ImageBind-style loss: only pairs with the aerial image (plus the view term);
* ``gps1``       single-scale GPS encoder (sigma 256) instead of 2^0, 2^4, 2^8, 2^12;
* ``radiometric`` frozen, with a random per-chip and per-band gain on the spectral stream's input;
* ``cnndrop``    frozen, the texture stream hidden from the head for 30 % of training chips;
* ``robust``     both of the last two;
* ``recon``      frozen, the chip's spectral statistics decoded from the embedding with weight 10
  instead of 3 (aimed at few-shot probes, which pixel statistics still beat);
* ``wide``       frozen, a 256-d embedding instead of 128-d (the same aim, by capacity);
* ``quantiles``  frozen, the decoded chip statistics also hold each band's 10th, 50th and 90th
  percentiles (what the pixel-statistics baseline has beyond moments and histograms);
* ``recon_radio`` both ``recon`` and ``radiometric`` (each helped a different held-out area):
  the 0.3.0 default's recipe;
* ``view``       frozen, the same-place view term (another date or crop of the chip as the
  positive) weighted 6 instead of 2: the heads keep less cross-date identity than the frozen
  backbone's own features (targets' cross-date references);
* ``distill``    ``recon_radio`` plus a term that keeps the frozen Lite0's neighbourhoods across
  views (``locked.distill_weight``: KL between its and the embedding's in-batch similarity
  softmaxes over two dates or crops of each chip), aimed at the same cross-date gap;
  ``distill_low`` the same at a quarter of the weight.

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

# The 0.2.0 recipe: no robustness terms, statistics decoded with weight 3. Every variant starts
# from it, so the committed ablation tables reproduce whatever lit_cpu turns on later (0.3.0 is
# ``recon_radio``).
PLAIN: dict[str, Any] = {"locked": {"radiometric": 0.0, "cnn_dropout": 0.0, "recon_weight": 3.0}}

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
                    merge(PLAIN, {"locked": {"radiometric": 0.3}})),
    "cnndrop": ("frozen + texture-stream dropout (p 0.3)",
                merge(PLAIN, {"locked": {"cnn_dropout": 0.3}})),
    "robust": ("frozen + radiometric (r 0.3) + texture-stream dropout (p 0.3)",
               merge(PLAIN, {"locked": {"radiometric": 0.3, "cnn_dropout": 0.3}})),
    "recon": ("frozen, spectral-statistics decoding weighted 10 (0.2.0: 3)",
              merge(PLAIN, {"locked": {"recon_weight": 10.0}})),
    "wide": ("frozen, 256-d embedding (0.2.0: 128)", merge(PLAIN, {"model": {"embed_dim": 256}})),
    "quantiles": ("frozen, the decoded statistics include per-band 10/50/90th percentiles",
                  merge(PLAIN, {"model": {"recon_quantiles": True}})),
    "recon_radio": ("frozen, recon weight 10 + radiometric augmentation (r 0.3)",
                    merge(PLAIN, {"locked": {"recon_weight": 10.0, "radiometric": 0.3}})),
    "view": ("frozen, same-place view term weighted 6 (0.2.0: 2)",
             merge(PLAIN, {"locked": {"view_weight": 6.0}})),
    "distill": ("recon_radio (0.3.0) + the frozen Lite0's cross-date neighbourhoods kept (weight 2)",
                merge(PLAIN, {"locked": {"recon_weight": 10.0, "radiometric": 0.3,
                                         "distill_weight": 2.0}})),
    "distill_low": ("as distill, weight 0.5",
                    merge(PLAIN, {"locked": {"recon_weight": 10.0, "radiometric": 0.3,
                                             "distill_weight": 0.5}})),
}  # fmt: skip


def variant_config(base: str, variant: str, steps: int, stage2: int,
                   over: dict[str, Any], seed: int = 0) -> TrainConfig:  # fmt: skip
    """The config of one variant: same data, seed and total steps for every variant.

    ``seed`` sets both the initialisation (``seed``) and the batch order (``data.seed``).
    """
    d = merge(over, VARIANTS[variant][1])
    if variant == "finetuned":
        d = merge(d, {"steps": steps, "locked": {"stage2_steps": stage2}})
    else:
        d = merge(d, {"steps": steps + stage2, "locked": {"stage2_steps": 0}})
    if seed:
        d = merge(d, {"seed": seed, "data": {"seed": seed}})
    return load_config(base, merge(d, {"ckpt_every": 10**9}))


def run_name(variant: str, seed: int) -> str:
    """A run's folder and column name: the variant, with ``-seed<k>`` beyond seed 0."""
    return variant if seed == 0 else f"{variant}-seed{seed}"


# The measures the seed summary reports: (label, path in a bundle's scores of targets.json).
SUMMARY: list[tuple[str, tuple[str, ...]]] = [
    ("zero-shot Havel", ("scenes", "havel_s2", "zero_shot", "accuracy")),
    ("zero-shot SF Bay", ("scenes", "sfbay_l7", "zero_shot", "accuracy")),
    ("coarse Havel", ("scenes", "havel_s2", "zero_shot", "coarse", "accuracy")),
    ("coarse SF Bay", ("scenes", "sfbay_l7", "zero_shot", "coarse", "accuracy")),
    ("few-shot Havel", ("scenes", "havel_s2", "few_shot", "embedding", "mean")),
    (
        "few-shot Havel, C by inner CV",
        ("scenes", "havel_s2", "few_shot_tuned", "embedding", "mean"),
    ),
    (
        "zero-shot test split",
        ("scenes", "test split (places never trained on)", "zero_shot", "accuracy"),
    ),  # fmt: skip
    ("cross-date R@1", ("cross_date", "R@1")),
]


def _get(d: Any, path: tuple[str, ...]) -> float | None:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return float(d) if isinstance(d, (int, float)) else None


# References beside the variants (same chips, same run): label -> [(name, path in targets.json)];
# "*" in a path: the first bundle that has it (every bundle's few-shot scores them alike).
REFERENCES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    **{label: [
        (name, ("bundles", "*", "scenes", "havel_s2", probe, key, "mean"))
        for name, key in (("pixel statistics", "pixel_stats"), ("frozen Lite0", "frozen_lite0"))
    ] for label, probe in (("few-shot Havel", "few_shot"),
                           ("few-shot Havel, C by inner CV", "few_shot_tuned"))},
    "cross-date R@1": [
        (name, ("cross_date_baselines", name, "R@1"))
        for name in ("pixel statistics", "frozen Lite0")
    ],
}  # fmt: skip


def _reference(scores: dict[str, Any], label: str) -> str:
    """The reference cell of a summary row ("pixel statistics 0.523; frozen Lite0 0.351")."""
    cells = []
    for name, path in REFERENCES.get(label, []):
        if path[:2] == ("bundles", "*"):
            vals = [_get(b, path[2:]) for b in scores.get("bundles", {}).values()]
            got = next((v for v in vals if v is not None), None)
        else:
            got = _get(scores, path)
        if got is not None:
            cells.append(f"{name} {got:.3f}")
    return "; ".join(cells)


def seed_summary(scores: dict[str, Any], runs: dict[str, list[str]]) -> str:
    """Markdown: per variant, the mean and the range over its seeds of the key held-out measures,
    and the references measured on the same chips (pixel statistics, the frozen backbone).

    ``runs`` maps a variant to the checkpoint keys of its seeds in ``scores`` (targets.json).
    """
    rows = []
    for label, path in [*SUMMARY, ("GPS land/sea linear", ()), ("GPS land/sea kNN-5", ())]:
        cells = []
        for keys in runs.values():
            if path:
                vals = [_get(scores["bundles"].get(k, {}), path) for k in keys]
            else:
                kind = "linear" if "linear" in label else "knn5"
                probe = scores.get("gps_probes", {}).get("land_sea", {})
                vals = [_get(probe, (k, kind)) for k in keys]
            got = [x for x in vals if x is not None]
            if not got:
                cells.append("–")
                continue
            mean = sum(got) / len(got)
            spread = f" ({min(got):.3f}–{max(got):.3f})" if len(got) > 1 else ""
            cells.append(f"{mean:.3f}{spread}")
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {_reference(scores, label)} |")
    n = max((len(k) for k in runs.values()), default=0)
    head = ["| measure | " + " | ".join(runs) + " | reference |",
            "|---|" + "---|" * (len(runs) + 1)]  # fmt: skip
    return (f"Mean over {n} seed(s) (min–max in brackets), scored together in one run.\n\n"
            + "\n".join(head + rows) + "\n")  # fmt: skip


def _train(cfg: TrainConfig, folder: Path, threads: int) -> float:
    """Train one run (a process-pool task with ``jobs`` > 1); its wall time in seconds."""
    import torch

    from .locked import run_stages

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run_stages(cfg, folder)
    return time.perf_counter() - t0


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when inside it: the checkpoints are the keys
    of the committed score tables, which must not carry this machine's absolute paths."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def train_runs(todo: list[tuple[str, TrainConfig, Path]], jobs: int = 1,
               threads: int = 1) -> dict[str, float]:  # fmt: skip
    """Train ``(name, config, folder)`` runs, ``jobs`` side by side in spawned processes (each
    run is the same as alone: seeded, ``threads`` torch threads); wall seconds per run."""
    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {name: pool.submit(_train, c, f, threads) for name, c, f in todo}
            walls = {name: fut.result() for name, fut in futs.items()}
    else:
        walls = {name: _train(c, f, threads) for name, c, f in todo}
    for name, wall in walls.items():
        log.info("ablation %s trained (%.0f s)", name, wall)
    return walls


def run(base: str, variants: list[str], steps: int, stage2: int, work: Path, out: Path,
        over: dict[str, Any], gps_n: int = 2000, seeds: tuple[int, ...] = (0,),
        jobs: int = 1, threads: int = 1) -> dict[str, Any]:  # fmt: skip
    """Train every variant for every seed (keeping any run that finished, resuming any that
    stopped; ``jobs`` runs side by side, ``threads`` torch threads each), score them side by
    side and, with more than one seed, summarise each variant over its seeds (``seeds.md``)."""
    from .targets_run import run as score

    ckpts, walls, cfg = [], {}, None
    runs: dict[str, list[str]] = {}
    todo: list[tuple[str, TrainConfig, Path]] = []
    for v in variants:
        for seed in seeds:
            cfg = variant_config(base, v, steps, stage2, over, seed)
            name = run_name(v, seed)
            folder = _relative(work / name)
            if not (folder / "checkpoint.pt").is_file():
                todo.append((name, cfg, folder))
            ckpts.append(folder / "checkpoint.pt")
            runs.setdefault(v, []).append(str(folder / "checkpoint.pt"))
    assert cfg is not None
    walls = train_runs(todo, jobs, threads)
    res = score(ckpts, Path(cfg.data.source), list(cfg.data.holdout_areas), out / "scores",
                gps_n=gps_n, timing=False)  # fmt: skip
    doc = {"base_config": base, "steps": steps, "stage2_steps": stage2, "seeds": list(seeds),
           "variants": {v: VARIANTS[v][0] for v in variants}, "train_wall_s": walls,
           "jobs": jobs, "scores": "scores/targets.json"}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if len(seeds) > 1:
        doc["seed_summary"] = "seeds.md"
        atomic_write_text(out / "seeds.md", seed_summary(res, runs))
    atomic_write_text(out / "locked.json", json.dumps(doc, indent=1) + "\n")
    return {"doc": doc, "scores": res}
