"""Held-out evaluation: cross-modal retrieval, Accuracy@100 m, land-use probes, a raw baseline.

``python -m training.evaluate --checkpoint out/train/checkpoint.pt --out out/eval`` writes
``eval.json``, ``eval.md`` and ``retrieval_r1.png`` (``--gps-probes`` adds the GPS-encoder probes
of :mod:`training.gps_probes` under the key ``gps_probes``). Retrieval is measured for every ordered
modality pair on the samples that have both; in pairs with text, samples with the same caption
string are equivalent hits; tied scores count as their expectation under a random order (see
:func:`retrieval`). The land-use linear probe and kNN run on frozen embeddings with stratified
k-fold cross-validation, beside the majority class of the same folds; the same probes on raw pixel
statistics are the baseline to beat.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.atomic import atomic_path, atomic_write_text

from .config import TrainConfig
from .probes import (  # noqa: F401  (re-exported: callers import them from here)
    MIN_PROBE_SAMPLES,
    NOTES,
    PROBE_FOLDS,
    PROBE_SEED,
    knn_accuracy,
    linear_probe,
    probes,
    stratified_folds,
)

log = logging.getLogger(__name__)
KS = (1, 5, 10)
EARTH_RADIUS_M = 6_371_008.8


@torch.no_grad()
def embed_dataset(model: torch.nn.Module, ds: Any, cfg: TrainConfig, batch_size: int = 64):
    """Embeddings, masks, coordinates, labels, raw-pixel features, captions and areas of a dataset."""
    from .steps import make_collate, move

    collate = make_collate(cfg)
    device = next(model.parameters()).device
    model.eval()
    embs: dict[str, list[np.ndarray]] = {}
    masks: dict[str, list[np.ndarray]] = {}
    lat, lon, lab, raw, caps, areas = [], [], [], [], [], []
    for start in range(0, len(ds), batch_size):
        samples = [ds[i] for i in range(start, min(len(ds), start + batch_size))]
        batch = move(collate(samples), device)
        for k, v in model(batch).items():
            embs.setdefault(k, []).append(v.float().cpu().numpy())
            masks.setdefault(k, []).append(batch["mask"][k].cpu().numpy())
        lat += [s["lat"] for s in samples]
        lon += [s["lon"] for s in samples]
        lab += [s.get("landuse", -1) for s in samples]
        raw += [raw_stats(s) for s in samples]
        caps += [s.get("text") for s in samples]
        areas += [str(s.get("area_id") or "") for s in samples]
    cat = {k: np.concatenate(v) for k, v in embs.items()}
    return cat, {k: np.concatenate(v) for k, v in masks.items()}, np.array(lat), np.array(lon), \
        np.array(lab), np.stack(raw), {"caption": caps, "area": np.array(areas)}  # fmt: skip


def raw_stats(sample: dict) -> np.ndarray:
    """Baseline features: per-band mean, std and 10/50/90th percentiles of aerial pixels.

    A band the chip lacks (e.g. no NIR) or holds only as no data gives zeros, so chips of every
    source stay comparable; a chip with no aerial image at all gives NaN (and is left out).
    """
    x = sample.get("aerial")
    if x is None or np.isnan(x).all():
        return np.full(4 * 5, np.nan, np.float32)
    x = x[:4].reshape(min(4, x.shape[0]), -1)
    out = np.zeros((5, 4), np.float32)
    for b in range(x.shape[0]):
        v = x[b][np.isfinite(x[b])]
        if v.size:
            out[:, b] = [v.mean(), v.std(), *np.percentile(v, (10, 50, 90))]
    return out.ravel()


ZERO_SHOT_TEMPLATES = ("{}", "an aerial view of {}")  # the default bundle's class prompts


@torch.no_grad()
def zero_shot_landuse(
    model: torch.nn.Module,
    cfg: TrainConfig,
    emb: np.ndarray,
    keep: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
) -> dict[str, float] | None:
    """Zero-shot land use: each labelled image gets the class whose text prompts it is closest to.

    Class vectors are the normalised mean of the text tower's embeddings of
    :data:`ZERO_SHOT_TEMPLATES` filled with the class name (what the engine's classifier does).
    """
    from engine.model.contract import Modality

    from .data.collate import collate_samples
    from .steps import make_collate, move

    idx = np.flatnonzero(keep & (labels >= 0) & np.isfinite(emb).all(1))
    if len(idx) < 2 or not class_names or "text" not in getattr(model, "towers", {}):
        return None
    prompts = [t.format(n.replace("_", " ")) for n in class_names for t in ZERO_SHOT_TEMPLATES]
    samples = [{"text": p, "lat": 0.0, "lon": 0.0, "sample_id": str(i)}
               for i, p in enumerate(prompts)]  # fmt: skip
    full = make_collate(cfg)  # a partial (maybe wrapped by the band matcher): its preprocessing
    base = full.keywords.get("base", full)
    pre = {Modality.TEXT: base.keywords["preprocess"][Modality.TEXT]}
    batch = collate_samples(samples, pre, base.keywords["tokenizer"])
    model.eval()
    device = next(model.parameters()).device
    txt = model(move(batch, device))["text"].float().cpu().numpy()
    protos = txt.reshape(len(class_names), len(ZERO_SHOT_TEMPLATES), -1).mean(1)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    pred = np.argmax(emb[idx] @ protos.T, axis=1)
    return {"accuracy": float(np.mean(pred == labels[idx])), "n_test": int(len(idx)),
            "classes": len(class_names)}  # fmt: skip


def haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray):
    """Great-circle distance in metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def caption_groups(captions: list[str | None]) -> np.ndarray:
    """Equivalence-class id per sample: samples with the same caption string share an id.

    A sample without a caption gets an id of its own (it is never in a text pair anyway).
    """
    ids: dict[str, int] = {}
    out = np.empty(len(captions), np.int64)
    for i, c in enumerate(captions):
        out[i] = ids.setdefault(c, len(ids)) if c else -1 - i
    return out


def _hit_probability(above: np.ndarray, tied_n: np.ndarray, tied_m: np.ndarray, k: int):
    """P(first correct item within the top k) when tied items come in uniformly random order.

    ``above`` wrong items score higher than the best correct one; ``tied_n`` wrong and
    ``tied_m`` (>= 1) correct items tie with it. The first correct item misses the top k iff
    the first ``k - above`` tied items are all wrong: prod (tied_n - i) / (tied_n + tied_m - i).
    """
    room = k - above
    p_miss = np.ones(len(above))
    for i in range(k):
        step = np.clip(tied_n - i, 0, None) / np.maximum(tied_n + tied_m - i, 1)
        p_miss *= np.where(i < room, step, 1.0)
    return np.where(room > 0, 1.0 - p_miss, 0.0)


def retrieval(
    q: np.ndarray,
    g: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """R@k and Accuracy@100 m of query row i against gallery row i (the true partner).

    Args:
        q, g: query and gallery embeddings ``[N, D]``; row i of each belongs to sample i.
        lat, lon: coordinates of every sample, degrees.
        groups: equivalence ids (e.g. :func:`caption_groups`): gallery item j is a correct hit
            for query i when ``groups[i] == groups[j]``; None: only j == i is correct.

    Ties: tied scores are ranked in a uniformly random order and the exact expectation is
    reported, for R@k (over the position of the first correct item) and Accuracy@100 m (share
    of the top-scoring items within 100 m) alike; a constant model scores chance (k/N when
    ``groups`` is None).
    """
    sims = q @ g.T
    n = len(q)
    match = np.eye(n, dtype=bool) if groups is None else groups[:, None] == groups[None, :]
    best = np.where(match, sims, -np.inf).max(1, keepdims=True)
    above = (~match & (sims > best)).sum(1)
    tied_n, tied_m = (~match & (sims == best)).sum(1), (match & (sims == best)).sum(1)
    out = {f"R@{k}": float(_hit_probability(above, tied_n, tied_m, k).mean()) for k in KS}
    rows, cols = np.nonzero(sims == sims.max(1, keepdims=True))
    near = haversine_m(lat[rows], lon[rows], lat[cols], lon[cols]) <= 100.0
    share = np.bincount(rows, near, n) / np.bincount(rows, minlength=n).clip(1)
    out["acc@100m"] = float(share.mean())
    # A random ranking's R@1: the share of the gallery that counts as correct (1/N w/o groups).
    out["chance@1"] = float(match.sum(1).mean() / n)
    out["n"] = int(n)
    return out


def _all_retrieval(emb, mask, lat, lon, groups) -> dict[str, dict[str, float]]:
    """Every ordered modality pair on the samples that have both; text pairs match by caption."""
    out = {}
    for a in emb:
        for b in emb:
            v = mask[a] & mask[b]
            if a == b or v.sum() < 2:
                continue
            gr = groups[v] if "text" in (a, b) else None
            out[f"{a}->{b}"] = retrieval(emb[a][v], emb[b][v], lat[v], lon[v], gr)
    return out


def _all_probes(res: dict[str, Any], emb, mask, lab, raw, areas) -> None:
    """Probe every modality's embeddings and the raw-pixel baseline; record skips and why."""
    feats = {m: (emb[m], mask[m], "probe") for m in emb}
    if "aerial" in mask:
        feats["aerial_raw_stats"] = (raw, mask["aerial"], "baseline")
    for name, (x, keep, where) in feats.items():
        p = probes(x, lab, keep, areas=areas)
        if "skipped" in p:
            res["probe_skipped"][name] = p["skipped"]
        else:
            res[where][name] = p
    first = res["probe"].get("aerial") or next(iter(res["probe"].values()), None)
    if first:  # kept for old readers: the fair majority of the aerial probe's folds
        res["baseline"]["majority_class"] = first["majority"]


def evaluate_model(model: torch.nn.Module, ds: Any, cfg: TrainConfig) -> dict[str, Any]:
    """All metrics of the held-out split, as a JSON-ready dict."""
    emb, mask, lat, lon, lab, raw, meta = embed_dataset(model, ds, cfg)
    groups = caption_groups(meta["caption"])
    res: dict[str, Any] = {"retrieval": _all_retrieval(emb, mask, lat, lon, groups), "probe": {},
                           "baseline": {}, "probe_skipped": {}, "n": int(len(lat))}  # fmt: skip
    g = groups[groups >= 0]  # samples with a caption
    shared = float(np.mean(np.bincount(g)[g] > 1)) if len(g) else 0.0
    res["notes"] = NOTES | {"shared_caption_share": shared}
    _all_probes(res, emb, mask, lab, raw, meta["area"])
    if "aerial" in mask:
        names = list(getattr(getattr(ds, "info", None), "class_names", None) or [])
        zs = zero_shot_landuse(model, cfg, emb["aerial"], mask["aerial"], lab, names)
        if zs:
            res["zero_shot"] = {"aerial": zs}
    return res


def quick_eval(
    model: torch.nn.Module, ds: Any, cfg: TrainConfig, max_samples: int = 256
) -> dict[str, float]:
    """Mean R@1 and R@10 over all ordered pairs on the first ``max_samples`` held-out samples."""
    sub = torch.utils.data.Subset(ds, range(min(len(ds), max_samples)))
    emb, mask, lat, lon, _, _, meta = embed_dataset(model, sub, cfg)
    ret = _all_retrieval(emb, mask, lat, lon, caption_groups(meta["caption"])).values()
    if not ret:
        return {}
    return {f"val/{k}": float(np.mean([r[k] for r in ret])) for k in ("R@1", "R@10")}


def markdown(res: dict[str, Any]) -> str:
    """The report as markdown tables."""
    lines = [f"# Held-out evaluation ({res['n']} samples)", "", "## Retrieval", "",
             "| query -> gallery | n | R@1 | R@5 | R@10 | Acc@100 m | chance@1 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for pair, r in res["retrieval"].items():
        lines.append(
            f"| {pair} | {r['n']} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f} "
            f"| {r['acc@100m']:.3f} | {r['chance@1']:.3f} |"
        )
    lines += _probe_markdown(res)
    for m, z in res.get("zero_shot", {}).items():
        lines.append(
            f"\nZero-shot land use ({m} vs text prompts of {z['classes']} classes, no training): "
            f"{z['accuracy']:.3f} on {z['n_test']} labelled samples (all of them, no split)."
        )
    if "gps_probes" in res:
        from .gps_probes import markdown as gps_markdown

        lines += ["", gps_markdown(res["gps_probes"], title="## GPS-encoder probes").rstrip()]
    return "\n".join(lines) + "\n"


def _probe_markdown(res: dict[str, Any]) -> list[str]:
    """The land-use probe table (mean ± std over folds), the skipped probes and the rules."""
    rows = list(res["probe"].items()) + [
        (f"baseline: {k}", v) for k, v in res["baseline"].items() if isinstance(v, dict)
    ]
    lines = ["", "## Land-use probes (frozen embeddings)", ""] + (
        ["| features | linear | kNN (k=5) | majority (same folds) | area majority | n | folds |",
         "|---|---|---|---|---|---|---|"] if rows else ["No probe could run (reasons below)."]
    )  # fmt: skip
    for name, p in rows:
        cells = [f"{p[m]:.3f} ± {p.get(m + '_std', 0.0):.3f}" for m in ("linear", "knn5")]
        maj = " | ".join(f"{p[m]:.3f}" if m in p else "n/a" for m in ("majority", "area_majority"))
        lines.append(f"| {name} | {' | '.join(cells)} | {maj} | {p['n_test']} "
                     f"| {p.get('folds', 1)} |")  # fmt: skip
    for name, why in res.get("probe_skipped", {}).items():
        lines.append(f"\nProbe on {name} not run: {why}.")
    for key, text in res.get("notes", {}).items():
        if isinstance(text, str):
            lines.append(f"\n{key.replace('_', ' ').capitalize()}: {text}.")
    if "shared_caption_share" in res.get("notes", {}):
        share = res["notes"]["shared_caption_share"]
        lines.append(f"\nSamples whose caption another sample shares: {share:.1%}.")
    return lines


def plot_matrix(res: dict[str, Any], png: Path) -> Path:
    """R@1 for every ordered pair as a query x gallery heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mods = sorted(
        {p.split("->")[0] for p in res["retrieval"]} | {p.split("->")[1] for p in res["retrieval"]}
    )
    mat = np.full((len(mods), len(mods)), math.nan)
    for pair, r in res["retrieval"].items():
        a, b = pair.split("->")
        mat[mods.index(a), mods.index(b)] = r["R@1"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set(xticks=range(len(mods)), yticks=range(len(mods)), xlabel="gallery", ylabel="query",
           title="R@1 (held-out)")  # fmt: skip
    ax.set_xticklabels(mods, rotation=45, ha="right")
    ax.set_yticklabels(mods)
    for i in range(len(mods)):
        for j in range(len(mods)):
            if not math.isnan(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im)
    fig.tight_layout()
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return png


def write_report(res: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write eval.json, eval.md and retrieval_r1.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(out / "eval.md", markdown(res))
    paths = {"json": out / "eval.json", "md": out / "eval.md"}
    if res["retrieval"]:
        paths["png"] = plot_matrix(res, out / "retrieval_r1.png")
    return paths


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import load_model
    from .steps import build_datasets

    ap = argparse.ArgumentParser(description="Evaluate a UniGeoCLIP checkpoint on held-out data.")
    ap.add_argument("--checkpoint", required=True, help="checkpoint.pt written by training.train")
    ap.add_argument("--out", default="out/eval", help="folder for eval.json / eval.md / PNG")
    ap.add_argument("--split", default="val", choices=["val", "test"], help="held-out split")
    ap.add_argument(
        "--gps-probes",
        action="store_true",
        help="add GPS probes: our GPS tower vs GeoCLIP vs raw lat/lon",
    )
    ap.add_argument("--gps-n", type=int, default=4000, help="points per global GPS probe task")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, cfg = load_model(a.checkpoint)
    _, val = build_datasets(cfg, a.split)
    res = evaluate_model(model, val, cfg)
    if a.gps_probes:
        from .gps_probes import run_gps_probes

        # The land-use task needs a dataset manifest; the built-in toy world has none.
        src = Path(str(cfg.data.source))
        dataset = src if (src / "samples.parquet").is_file() else None
        res["gps_probes"] = run_gps_probes(model, n=a.gps_n, seed=cfg.seed, dataset=dataset)
    paths = write_report(res, a.out)
    print(markdown(res))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
