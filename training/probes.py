"""Land-use probes on frozen embeddings: linear probe and kNN under stratified k-fold.

Each feature set (a modality's embeddings, raw pixel statistics) is scored with the same seeded
folds, beside two baselines on those folds: the training fold's majority class, and the majority
class of each test sample's own area (labelled samples often come from a few areas, and "which
area is it" alone can score high). A probe that cannot run says why. :mod:`.evaluate` uses and
re-exports these names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


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


PROBE_FOLDS = 5  # k of the stratified k-fold probes (fewer when the rarest class is smaller)
PROBE_SEED = 0
MIN_PROBE_SAMPLES = 10
# The rules the numbers follow, written into eval.json and eval.md.
NOTES = {
    "text_matches": "in pairs with text, any sample whose caption string equals the query "
    "sample's caption counts as a correct hit (captions are templated; many repeat); chance@1 "
    "is then the mean share of the gallery that counts as correct",
    "ties": "tied scores are ranked in uniformly random order and the exact expectation is "
    "reported (R@k and Acc@100 m alike); a constant model scores chance",
    "probes": f"stratified {PROBE_FOLDS}-fold cross-validation (fewer folds when the rarest "
    f"class has fewer samples; classes with one sample left out), seed {PROBE_SEED}; "
    "majority = accuracy of predicting the training fold's majority class on its test fold; "
    "area majority = the same per area (the training fold's majority class of the sample's area)",
}


def stratified_folds(y: np.ndarray, k: int, seed: int = PROBE_SEED) -> np.ndarray:
    """Fold id (0..k-1) of every sample: each class, shuffled (seeded), dealt round-robin.

    The deal continues across classes, so fold sizes differ by at most one; a class with at
    least ``k`` samples appears in every fold.
    """
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    offset = 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = (offset + np.arange(len(members))) % k
        offset += len(members)
    return fold


def _probe_samples(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, dict, str]:
    """Indices a probe can use, classes dropped for having one sample, and why not (or "")."""
    idx = np.flatnonzero(keep & (y >= 0) & np.isfinite(x).all(1))
    counts = dict(zip(*(v.tolist() for v in np.unique(y[idx], return_counts=True)), strict=True))
    # A class with one sample can be trained on or tested on, never both: leave it out.
    dropped = {c: n for c, n in counts.items() if n < 2}
    idx = idx[~np.isin(y[idx], list(dropped))]
    why = ""
    if len(counts) - len(dropped) < 2 or len(idx) < MIN_PROBE_SAMPLES:
        why = (
            f"{sum(counts.values())} labelled samples with these features, class counts "
            f"{counts or '{}'}: a probe needs at least {MIN_PROBE_SAMPLES} samples in at least "
            "two classes of 2 or more samples"
        )
    return idx, dropped, why


def probes(
    x: np.ndarray,
    y: np.ndarray,
    keep: np.ndarray,
    folds: int = PROBE_FOLDS,
    seed: int = PROBE_SEED,
    areas: np.ndarray | None = None,
) -> dict[str, Any]:
    """Stratified k-fold linear probe, cosine kNN (k=5) and the majority baseline, same folds.

    ``majority`` is the accuracy of predicting each training fold's majority class on its test
    fold: the constant guess a probe must beat. With ``areas`` (area id per sample),
    ``area_majority`` predicts the training fold's majority class of the test sample's own area:
    what knowing only the area gives. Every usable sample is predicted once. Metrics
    are the mean over folds (``*_std``: their standard deviation); ``{"skipped": why}`` when the
    labelled samples cannot support a probe.
    """
    idx, dropped, why = _probe_samples(x, y, keep)
    if why:
        return {"skipped": why}
    k = int(min(folds, np.bincount(y[idx])[np.unique(y[idx])].min()))
    fold = stratified_folds(y[idx], k, seed)
    area = np.zeros(len(y), np.int64) if areas is None else np.unique(areas, return_inverse=True)[1]
    per: dict[str, list[float]] = {"linear": [], "knn5": [], "majority": [], "area_majority": []}
    for f in range(k):
        tr, te = idx[fold != f], idx[fold == f]
        torch.manual_seed(seed + f)  # the probe's initial weights: same for every feature set
        per["linear"].append(linear_probe(x[tr], y[tr], x[te], y[te]))
        per["knn5"].append(knn_accuracy(x[tr], y[tr], x[te], y[te]))
        per["majority"].append(float(np.mean(y[te] == np.bincount(y[tr]).argmax())))
        per["area_majority"].append(float(np.mean(y[te] == _area_majority(y, area, tr, te))))
    res: dict[str, Any] = {m: float(np.mean(v)) for m, v in per.items()}
    res |= {f"{m}_std": float(np.std(v)) for m, v in per.items()}
    counts = np.unique(y[idx], return_counts=True)
    res |= {"folds": k, "n_test": int(len(idx)), "per_fold": per, "seed": seed,
            "class_counts": {str(c): int(n) for c, n in zip(*counts, strict=True)},
            "dropped_classes": {str(c): int(n) for c, n in dropped.items()}}  # fmt: skip
    return res


def _area_majority(y: np.ndarray, area: np.ndarray, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
    """Per test sample: the majority training class of its area (of all training, if none)."""
    pred = np.full(len(te), np.bincount(y[tr]).argmax())
    for a in np.unique(area[te]):
        here = y[tr][area[tr] == a]
        if len(here):
            pred[area[te] == a] = np.bincount(here).argmax()
    return pred
