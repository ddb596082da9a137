"""Held-out evaluation: cross-modal retrieval, Accuracy@100 m, land-use probes, a raw baseline.

``python -m training.evaluate --checkpoint out/train/checkpoint.pt --out out/eval`` writes
``eval.json``, ``eval.md`` and ``retrieval_r1.png`` (``--gps-probes`` adds the GPS-encoder probes
of :mod:`training.gps_probes` under the key ``gps_probes``). Retrieval is measured for every ordered
modality pair on the samples that have both; chance is k/N. The land-use linear probe and kNN run
on frozen embeddings; the same probes on raw pixel statistics are the baseline to beat.
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

log = logging.getLogger(__name__)
KS = (1, 5, 10)
EARTH_RADIUS_M = 6_371_008.8


@torch.no_grad()
def embed_dataset(model: torch.nn.Module, ds: Any, cfg: TrainConfig, batch_size: int = 64):
    """Embeddings, masks, coordinates, labels and raw-statistics features of a whole dataset."""
    from .train import make_collate, move

    collate = make_collate(cfg)
    device = next(model.parameters()).device
    model.eval()
    embs: dict[str, list[np.ndarray]] = {}
    masks: dict[str, list[np.ndarray]] = {}
    lat, lon, lab, raw = [], [], [], []
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
    cat = {k: np.concatenate(v) for k, v in embs.items()}
    return cat, {k: np.concatenate(v) for k, v in masks.items()}, np.array(lat), np.array(lon), \
        np.array(lab), np.stack(raw)  # fmt: skip


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
    from engine.contract import Modality

    from .data.collate import collate_samples
    from .train import make_collate, move

    idx = np.flatnonzero(keep & (labels >= 0) & np.isfinite(emb).all(1))
    if len(idx) < 2 or not class_names or "text" not in getattr(model, "towers", {}):
        return None
    prompts = [t.format(n.replace("_", " ")) for n in class_names for t in ZERO_SHOT_TEMPLATES]
    samples = [{"text": p, "lat": 0.0, "lon": 0.0, "sample_id": str(i)}
               for i, p in enumerate(prompts)]  # fmt: skip
    full = make_collate(cfg)  # a partial of collate_samples: reuse its text preprocessing
    pre = {Modality.TEXT: full.keywords["preprocess"][Modality.TEXT]}
    batch = collate_samples(samples, pre, full.keywords["tokenizer"])
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


def retrieval(q: np.ndarray, g: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> dict[str, float]:
    """R@k of the true partner (row i of g for query i) and Accuracy@100 m of the top hit."""
    sims = q @ g.T
    true = np.diagonal(sims)[:, None]
    # Ties count against the query (identical captions must not inflate recall).
    rank = (sims > true).sum(1) + (sims == true).sum(1) - 1
    top = sims.argmax(1)
    d = haversine_m(lat, lon, lat[top], lon[top])
    out = {f"R@{k}": float((rank < k).mean()) for k in KS}
    out["acc@100m"] = float((d <= 100.0).mean())
    out["n"] = int(len(q))
    return out


def knn_accuracy(xtr, ytr, xte, yte, k: int = 5) -> float:
    """Cosine kNN majority vote."""
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True).clip(1e-9)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True).clip(1e-9)
    nn_idx = np.argsort(-(b @ a.T), axis=1)[:, :k]
    votes = ytr[nn_idx]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float((pred == yte).mean())


def linear_probe(xtr, ytr, xte, yte, steps: int = 300, wd: float = 1e-3) -> float:
    """Multinomial logistic regression (standardised features, full-batch L-BFGS)."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xt = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    xv = torch.tensor((xte - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(ytr, dtype=torch.long)
    lin = torch.nn.Linear(xt.shape[1], int(max(ytr.max(), yte.max())) + 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + wd * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xv).argmax(1).numpy() == yte).mean())


def probes(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> dict[str, float] | None:
    """Linear probe and kNN on the first / second half of the labelled, present samples."""
    idx = np.flatnonzero(keep & (y >= 0) & np.isfinite(x).all(1))
    if len(idx) < 10 or len(np.unique(y[idx])) < 2:
        return None
    tr, te = idx[: len(idx) // 2], idx[len(idx) // 2 :]
    return {
        "linear": linear_probe(x[tr], y[tr], x[te], y[te]),
        "knn5": knn_accuracy(x[tr], y[tr], x[te], y[te]),
        "n_test": int(len(te)),
    }


def evaluate_model(model: torch.nn.Module, ds: Any, cfg: TrainConfig) -> dict[str, Any]:
    """All metrics of the held-out split, as a JSON-ready dict."""
    emb, mask, lat, lon, lab, raw = embed_dataset(model, ds, cfg)
    res: dict[str, Any] = {"retrieval": {}, "probe": {}, "baseline": {}, "n": int(len(lat))}
    for a in emb:
        for b in emb:
            if a == b:
                continue
            v = mask[a] & mask[b]
            if v.sum() >= 2:
                r = retrieval(emb[a][v], emb[b][v], lat[v], lon[v])
                r["chance@1"] = 1.0 / r["n"]
                res["retrieval"][f"{a}->{b}"] = r
    for m in emb:
        p = probes(emb[m], lab, mask[m])
        if p:
            res["probe"][m] = p
    if "aerial" in mask:
        res["baseline"]["aerial_raw_stats"] = probes(raw, lab, mask["aerial"])
        names = list(getattr(getattr(ds, "info", None), "class_names", None) or [])
        zs = zero_shot_landuse(model, cfg, emb["aerial"], mask["aerial"], lab, names)
        if zs:
            res["zero_shot"] = {"aerial": zs}
    labelled = lab[lab >= 0]
    if len(labelled):
        res["baseline"]["majority_class"] = float(np.bincount(labelled).max() / len(labelled))
    return res


def quick_eval(
    model: torch.nn.Module, ds: Any, cfg: TrainConfig, max_samples: int = 256
) -> dict[str, float]:
    """Mean R@1 and R@10 over all ordered pairs on the first ``max_samples`` held-out samples."""
    sub = torch.utils.data.Subset(ds, range(min(len(ds), max_samples)))
    emb, mask, lat, lon, _, _ = embed_dataset(model, sub, cfg)
    r1, r10 = [], []
    for a in emb:
        for b in emb:
            v = mask[a] & mask[b]
            if a != b and v.sum() >= 2:
                r = retrieval(emb[a][v], emb[b][v], lat[v], lon[v])
                r1.append(r["R@1"])
                r10.append(r["R@10"])
    return {"val/R@1": float(np.mean(r1)), "val/R@10": float(np.mean(r10))} if r1 else {}


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
    lines += ["", "## Land-use probes (frozen embeddings)", "",
              "| features | linear | kNN (k=5) | n test |", "|---|---|---|---|"]  # fmt: skip
    rows = list(res["probe"].items()) + [
        (f"baseline: {k}", v) for k, v in res["baseline"].items() if isinstance(v, dict)
    ]
    for name, p in rows:
        lines.append(f"| {name} | {p['linear']:.3f} | {p['knn5']:.3f} | {p['n_test']} |")
    if "majority_class" in res["baseline"]:
        lines.append(f"\nMajority-class accuracy: {res['baseline']['majority_class']:.3f}")
    for m, z in res.get("zero_shot", {}).items():
        lines.append(
            f"\nZero-shot land use ({m} vs text prompts of {z['classes']} classes, no training): "
            f"{z['accuracy']:.3f} on {z['n_test']} labelled samples (all of them, no split)."
        )
    if "gps_probes" in res:
        from .gps_probes import markdown as gps_markdown

        lines += ["", gps_markdown(res["gps_probes"], title="## GPS-encoder probes").rstrip()]
    return "\n".join(lines) + "\n"


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
    from .train import build_datasets

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
