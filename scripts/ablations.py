"""Ablation grid in the spirit of UniGeoCLIP (arXiv 2604.11668): loss topology and GPS scales.

Every run is trained the same way (one config, steps, data, batch size and seed set); only the
ablated setting changes:

* ``all``    all-to-all: every modality pair is a loss term (the paper's method);
* ``pivot``  ImageBind-style: only pairs with the aerial image;
* ``pairs``  only the pairs single-pair datasets provide: aerial-text (captioning), aerial-dsm
  (height), aerial-gps (SatCLIP-style) and streetview-gps (image geolocation). A spanning tree
  like the pivot (4 terms), but street photos reach the space through GPS, not the image;
* ``gps1``   all-to-all with a single-scale GPS encoder (sigma = 2^8 = 256) instead of
  sigma = 2^0, 2^4, 2^8, 2^12.

Metrics come from ``training.evaluate.evaluate_model`` on the held-out split. The seed spread is
the noise band; a rerun of one run in a fresh process checks that a seed reproduces its loss
curve exactly (what ``make model`` relies on to rebuild the shipped bundle).

    python scripts/ablations.py --worlds synthetic real --seeds 0 1 2 --steps 100 --jobs 2

Run it from the repository root: world folders (``data-cache/...``) are relative to it, so the
configs recorded in ``ablations.json`` hold no machine paths.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import multiprocessing
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

from engine.atomic import atomic_path, atomic_write_text  # noqa: E402
from engine.errors import InputError  # noqa: E402
from training.config import TrainConfig, load_config, merge, parse_overrides  # noqa: E402

log = logging.getLogger("ablations")
PIVOT = "aerial"
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "all": ("all-to-all, multi-scale GPS", {"loss": {"mode": "all"}}),
    "pivot": ("aerial pivot, multi-scale GPS", {"loss": {"mode": "pivot", "pivot": PIVOT}}),
    "pairs": (
        "dataset pairs (aerial-text, aerial-dsm, aerial-gps, streetview-gps)",
        {
            "loss": {
                "mode": "pairs",
                "pairs": ["aerial-text", "aerial-dsm", "aerial-gps", "streetview-gps"],
            }
        },
    ),  # fmt: skip
    "gps1": ("all-to-all, single-scale GPS (sigma 256)", {"model": {"gps": {"sigmas": [256.0]}}}),
}
WORLDS = {"real": "data-cache/dataset", "synthetic": "data-cache/synthetic", "toy": "toy"}
METRICS = ("R@1", "R@10", "R@1_nonpivot", "R@10_nonpivot", "acc100_gps2aerial",
           "acc100_aerial2gps", "gps_probe_linear", "final_loss")  # fmt: skip


def run_config(base: str, over: dict, world: str, variant: str, seed: int, steps: int):
    """The resolved config of one run: shared overrides, then world, variant and seed."""
    source = WORLDS.get(world, world)
    run = {"steps": steps, "seed": seed, "eval_every": 0, "ckpt_every": steps, "log_every": 1,
           "data": {"source": source, "seed": seed}}  # fmt: skip
    d = copy.deepcopy(merge(merge(over, run), VARIANTS[variant][1]))
    mods, loss = d.get("model", {}).get("modalities"), d.get("loss", {})
    if mods and loss.get("mode") == "pairs":  # a reduced tower set keeps the pairs it has
        loss["pairs"] = [p for p in loss["pairs"] if set(p.split("-")) <= set(mods)]
    return load_config(base, d)


def summarise_eval(res: dict[str, Any]) -> dict[str, Any]:
    """The ablation metrics from an ``evaluate_model`` result (None where not measurable)."""
    ret = res["retrieval"]

    def mean(key: str, keep) -> float | None:
        vals = [r[key] for p, r in ret.items() if keep(*p.split("->"))]
        return float(np.mean(vals)) if vals else None

    def acc(pair: str) -> float | None:
        return ret[pair]["acc@100m"] if pair in ret else None

    nonpivot = lambda a, b: PIVOT not in (a, b)  # noqa: E731
    return {
        "R@1": mean("R@1", lambda a, b: True),
        "R@10": mean("R@10", lambda a, b: True),
        "R@1_nonpivot": mean("R@1", nonpivot),
        "R@10_nonpivot": mean("R@10", nonpivot),
        "chance@1": mean("chance@1", lambda a, b: True),
        "acc100_gps2aerial": acc("gps->aerial"),
        "acc100_aerial2gps": acc("aerial->gps"),
        "gps_probe_linear": res["probe"].get("gps", {}).get("linear"),
        "pairs": {p: {"R@1": r["R@1"], "R@10": r["R@10"], "n": r["n"]} for p, r in ret.items()},
    }


def train_and_eval(cfg: TrainConfig, work: Path) -> tuple[list[float], dict[str, Any], float]:
    """Train in this process; returns the loss curve, the eval metrics and the wall time."""
    from training.evaluate import evaluate_model
    from training.train import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(cfg, work)
    losses = [row["loss"] for row in trainer.fit()]
    wall = time.perf_counter() - t0
    metrics = summarise_eval(evaluate_model(trainer.core, trainer.val_set, cfg))
    metrics["final_loss"] = float(np.mean(losses[-10:]))  # last-10-step mean: less batch noise
    return losses, metrics, wall


def rerun_losses(cfg: TrainConfig, work: Path) -> list[float]:
    """Train the same config in a fresh ``python -m training.train`` process; its loss curve."""
    work.mkdir(parents=True, exist_ok=True)
    yml = work / "config.yaml"
    yml.write_text(yaml.safe_dump(cfg.to_dict()), encoding="utf-8")
    cmd = [sys.executable, "-m", "training.train", "--config", str(yml), "--out", str(work),
           "--threads", str(torch.get_num_threads())]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise InputError(f"rerun failed ({shlex.join(cmd)}):\n{proc.stderr[-2000:]}")
    with (work / "metrics.csv").open(newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def determinism(cfg: TrainConfig, losses: list[float], work: Path) -> dict[str, Any]:
    """Max |loss difference| between a run and its rerun with the same seed (fresh process)."""
    again = rerun_losses(cfg, work)
    if len(again) != len(losses):
        raise InputError(f"rerun logged {len(again)} steps, the run {len(losses)}")
    diff = float(np.max(np.abs(np.asarray(again) - np.asarray(losses))))
    return {"steps": len(losses), "max_abs_loss_diff": diff, "identical": diff == 0.0}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """world -> variant -> metric -> {mean, std, n} over seeds (std with ddof=1; 0 for n=1)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["world"], {}).setdefault(r["variant"], {"_runs": []})["_runs"].append(r)
    for variants in out.values():
        for name, v in variants.items():
            runs_v = v.pop("_runs")
            for m in (*METRICS, "chance@1", "wall_s"):
                vals = [x["metrics"].get(m, x.get(m)) for x in runs_v]
                vals = [float(x) for x in vals if x is not None and math.isfinite(x)]
                sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                v[m] = {"mean": float(np.mean(vals)), "std": sd, "n": len(vals)} if vals else None
            v["label"] = VARIANTS[name][0]
    return out


def _cell(s: dict[str, Any] | None) -> str:
    return "n/a" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"


def pair_table(doc: dict[str, Any], world: str, key: str = "R@10") -> list[str]:
    """Markdown rows: ``key`` of every non-pivot ordered pair per variant (mean ± std)."""
    runs = [r for r in doc["runs"] if r["world"] == world]
    pairs = sorted({p for r in runs for p in r["metrics"]["pairs"] if PIVOT not in p.split("->")})
    if not pairs:
        return []
    lines = [f"{key} per non-pivot pair (n = held-out samples with both):", "",
             "| variant | " + " | ".join(pairs) + " |", "|---" * (len(pairs) + 1) + "|"]  # fmt: skip
    for variant in dict.fromkeys(r["variant"] for r in runs):
        cells = []
        for p in pairs:
            v = [r["metrics"]["pairs"][p][key] for r in runs
                 if r["variant"] == variant and p in r["metrics"]["pairs"]]  # fmt: skip
            sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
            cells.append(_cell({"mean": float(np.mean(v)), "std": sd}) if v else "n/a")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    n = {p: max(r["metrics"]["pairs"][p]["n"] for r in runs if p in r["metrics"]["pairs"])
         for p in pairs}  # fmt: skip
    return [*lines, "", "n: " + ", ".join(f"{p} {k}" for p, k in n.items()), ""]


def markdown(doc: dict[str, Any]) -> str:
    """The summary tables (mean ± std over seeds) with the exact command on top."""
    lines = ["# UniGeoCLIP ablations", "", "Command:", "", "```", doc["command"], "```", "",
             f"Config `{doc['config']}`, {doc['steps']} steps, seeds {doc['seeds']}; "
             "mean ± std (ddof 1) over seeds; held-out split; R@k averaged over ordered pairs; "
             f"non-pivot = pairs without {PIVOT}.", ""]  # fmt: skip
    cols = ("R@1", "R@10", "R@1_nonpivot", "R@10_nonpivot", "acc100_gps2aerial",
            "acc100_aerial2gps", "gps_probe_linear", "final_loss", "wall_s")  # fmt: skip
    for world, variants in doc["summary"].items():
        lines += [f"## World: {world}", "", "| variant | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]  # fmt: skip
        for name, v in variants.items():
            lines.append(
                f"| {name}: {v['label']} | " + " | ".join(_cell(v[c]) for c in cols) + " |"
            )
        chance = next(iter(variants.values()))["chance@1"]
        lines += ["", f"Mean chance R@1 over pairs: {_cell(chance)}.", ""]
        lines += pair_table(doc, world)
    lines += [
        "Notes: `final_loss` (mean of the last 10 steps) sums a different set of pair terms "
        "per loss mode, so compare it only between `all` and `gps1`. `n/a`: not measurable "
        "on that split (the GPS land-use probe needs >= 2 land-use classes among the "
        "labelled held-out samples). The seed spread (± std) is the noise band.",
        "",
    ]
    d = doc.get("determinism")
    if d:
        lines += ["## Determinism", "", f"Run `{d['run']}` retrained in a fresh process with the "
                  f"same seed: max |Δ loss| over {d['steps']} steps = {d['max_abs_loss_diff']:.3g}"
                  f" ({'bit-identical' if d['identical'] else 'not bit-identical'}).", ""]  # fmt: skip
    return "\n".join(lines)


def plot(doc: dict[str, Any], png: Path) -> Path:
    """Bars per variant (mean over seeds, std error bars) for the headline metrics per world."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("R@1", "R@1_nonpivot", "R@10_nonpivot", "acc100_gps2aerial", "gps_probe_linear")
    worlds = list(doc["summary"])
    fig, axes = plt.subplots(1, len(worlds), figsize=(6 * len(worlds), 4), squeeze=False)
    for ax, world in zip(axes[0], worlds, strict=True):
        variants = doc["summary"][world]
        width = 0.8 / len(variants)
        for i, (name, v) in enumerate(variants.items()):
            mean = [v[m]["mean"] if v[m] else np.nan for m in shown]
            err = [v[m]["std"] if v[m] else 0.0 for m in shown]
            ax.bar(np.arange(len(shown)) + i * width, mean, width, yerr=err, capsize=3, label=name)
        ax.set_xticks(np.arange(len(shown)) + 0.4 - width / 2)
        ax.set_xticklabels(shown, rotation=20, ha="right", fontsize=8)
        ax.set(title=f"{world} ({doc['steps']} steps, {len(doc['seeds'])} seeds)")
        ax.set_ylim(bottom=0.0)  # metrics near chance would vanish on a fixed 0..1 axis
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return png


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny", help="base config (name or YAML path)")
    ap.add_argument("--steps", type=int, default=150, help="optimiser steps of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="seeds of every run (default 0 1 2; with --locked: 0)")  # fmt: skip
    ap.add_argument("--worlds", nargs="+", default=["synthetic", "real"],
                    help=f"names in {sorted(WORLDS)} or dataset folders")  # fmt: skip
    from training.ablate_locked import VARIANTS as LOCKED

    ap.add_argument("--variants", nargs="+", default=list(VARIANTS),
                    choices=sorted({*VARIANTS, *LOCKED}))  # fmt: skip
    ap.add_argument("--set", action="append", default=[], help="override for every run")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/model/ablations")
    ap.add_argument("--work", type=Path, default=None, help="run folders (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained side by side (processes)")
    ap.add_argument("--no-determinism", action="store_true", help="skip the same-seed rerun")
    ap.add_argument("--report-only", action="store_true",
                    help="only rewrite ablations.md/png from OUT/ablations.json")  # fmt: skip
    ap.add_argument("--locked", action="store_true",
                    help="ablate the locked-image model instead (training.ablate_locked): "
                    "frozen / finetuned / random / pivot / gps1 on --config lit_cpu")  # fmt: skip
    ap.add_argument("--stage2-steps", type=int, default=300, help="--locked: stage 2 steps")
    return ap.parse_args(argv)


def run_locked(a: argparse.Namespace) -> int:
    """``--locked``: every locked-image variant trained and scored on the held-out areas."""
    from training.ablate_locked import VARIANTS as LOCKED
    from training.ablate_locked import run

    over = parse_overrides(a.set)
    base = a.config if a.config != "tiny" else "lit_cpu"
    chosen = a.variants != list(VARIANTS)  # the old grid's default means "every variant"
    names = [v for v in a.variants if v in LOCKED] if chosen else list(LOCKED)
    work = a.work or (ROOT / "out" / "ablations_locked")
    seeds = tuple(a.seeds or [0])
    res = run(base, names, a.steps, a.stage2_steps, work, a.out, over, seeds=seeds,
              jobs=a.jobs, threads=a.threads)  # fmt: skip
    print((a.out / "scores" / "targets.md").read_text())
    if len(seeds) > 1:
        print((a.out / "seeds.md").read_text())
    return 0 if res else 1


def run_one(task: tuple) -> dict[str, Any]:
    """One (world, variant, seed) run as a JSON-ready record (a process-pool task)."""
    base, over, world, variant, seed, steps, work, threads = task
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    cfg = run_config(base, over, world, variant, seed, steps)
    log.info("run %s / %s / seed %d", world, variant, seed)
    losses, metrics, wall = train_and_eval(cfg, Path(work) / f"{world}-{variant}-{seed}")
    log.info("done %s / %s / seed %d: %.0f s, loss %.3f, R@1 %.3f", world, variant, seed, wall,
             metrics["final_loss"], metrics["R@1"] or math.nan)  # fmt: skip
    return {"world": world, "variant": variant, "seed": seed, "wall_s": wall, "metrics": metrics,
            "loss_curve": losses, "config": cfg.to_dict()}  # fmt: skip


def run_grid(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train and evaluate every (world, variant, seed); returns the JSON document."""
    over = parse_overrides(a.set)
    tasks = [(a.config, over, w, v, s, a.steps, str(work), a.threads)
             for w in a.worlds for v in a.variants for s in a.seeds]  # fmt: skip
    if a.jobs > 1:
        # Runs are independent and fully seeded, so running them side by side changes nothing
        # but the wall time (each process keeps its own single thread).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(a.jobs, mp_context=ctx) as pool:
            runs = list(pool.map(run_one, tasks))
    else:
        runs = [run_one(t) for t in tasks]
    doc = {"command": "python scripts/ablations.py " + shlex.join(a.argv),
           "config": a.config, "steps": a.steps, "seeds": a.seeds, "worlds": a.worlds,
           "variants": {v: VARIANTS[v][0] for v in a.variants}, "pivot": PIVOT,
           "runs": runs, "summary": aggregate(runs)}  # fmt: skip
    if not a.no_determinism and runs:
        r = runs[0]
        cfg = TrainConfig.from_dict(r["config"])
        name = f"{r['world']}/{r['variant']}/seed {r['seed']}"
        doc["determinism"] = {"run": name, **determinism(cfg, r["loss_curve"], work / "rerun")}
    return doc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if a.seeds is None and not a.locked:
        a.seeds = [0, 1, 2]
    torch.set_num_threads(a.threads)
    if a.locked:
        return run_locked(a)
    if a.report_only:
        src = a.out / "ablations.json"
        if not src.is_file():
            raise InputError(f"--report-only needs {src}; run the grid first")
        doc = json.loads(src.read_text(encoding="utf-8"))
    else:
        with tempfile.TemporaryDirectory(prefix="ablations-") as tmp:
            doc = run_grid(a, a.work or Path(tmp))
        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out / "ablations.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(a.out / "ablations.md", markdown(doc))
    plot(doc, a.out / "ablations.png")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
