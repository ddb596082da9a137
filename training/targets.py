"""The measures of issue 18 on held-out data, for any bundle, scored through the engine.

Every figure comes from ``engine.UniGeoModel`` (the ONNX files a user runs), so the shipped
bundle and a new one are scored by the same code on the same chips in one run, beside the
baselines (chance, majority class, raw pixel statistics). See :mod:`training.targets_run` for
the command line and the report.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from engine.classify.prompts import resolve_prompts
from engine.model import UniGeoModel
from engine.model.contract import SPECTRAL_BANDS, Modality

from .band_match import match_bands
from .evaluate import caption_groups, retrieval
from .heldout import COARSE, Scene, pixel_stats, truths

TEXT_QUERIES = {"open water": "water", "forest": "forest", "buildings": "built",
                "cropland": "cropland"}  # fmt: skip
TOP_K = 20


def embed_aerial(model: UniGeoModel, chips: np.ndarray, batch: int = 64) -> np.ndarray:
    """Embed canonical-band chips ``[N, 6, S, S]`` with the bundle's own bands (by name)."""
    spec = model.spec(Modality.AERIAL).preprocess
    x = match_bands_batch(chips, spec.bands)
    if x.shape[-1] != spec.size:
        from .data.collate import _resize

        x = np.stack([_resize(c, spec.size, "bilinear") for c in x])
    return model.encode_tiles(Modality.AERIAL, x, batch_size=batch)


def collapse(emb: np.ndarray) -> dict[str, float]:
    """Mean pairwise cosine (off-diagonal) and effective rank (Roy & Vetterli 2007)."""
    n = len(emb)
    sims = emb @ emb.T
    mean_cos = float((sims.sum() - np.trace(sims)) / max(1, n * (n - 1)))
    s = np.linalg.svd(emb - 0.0, compute_uv=False)
    p = s / s.sum()
    erank = float(np.exp(-(p * np.log(np.clip(p, 1e-12, None))).sum()))
    return {"mean_pairwise_cosine": mean_cos, "effective_rank": erank, "n": n}


def class_prototypes(model: UniGeoModel, classes: Sequence[str]) -> np.ndarray:
    """One unit text prototype per class from the bundle's prompts (as the engine's zero-shot)."""
    prompts, _ = resolve_prompts(None, model.bundle, None)
    protos = []
    for c in classes:
        e = model.encode_text(list(prompts.get(c, (c,))))
        p = (e / np.linalg.norm(e, axis=1, keepdims=True)).mean(0)
        protos.append(p / np.linalg.norm(p))
    return np.stack(protos)


def zero_shot(model: UniGeoModel, emb: np.ndarray, labels: np.ndarray, names: Sequence[str]):
    """Zero-shot land use over the bundle's classes, against chance and the majority class."""
    classes = [c for c in model.bundle.class_prompts] or list(names)
    keep = np.array([0 <= y < len(names) and names[y] in classes for y in labels])
    y = np.array([classes.index(names[v]) for v in labels[keep]])
    pred = (emb[keep] @ class_prototypes(model, classes).T).argmax(1)
    counts = np.bincount(y, minlength=len(classes))
    res = {"n": int(keep.sum()), "classes": classes, "accuracy": float((pred == y).mean()),
           "chance": 1.0 / len(classes), "majority": float(counts.max() / counts.sum()),
           "majority_class": classes[int(counts.argmax())],
           "confusion": _confusion(y, pred, len(classes))}  # fmt: skip
    group = [COARSE.get(c) for c in classes]
    ok = np.array([group[v] is not None for v in y])
    if ok.any():
        g_true = np.array([group[v] for v in y[ok]])
        g_pred = np.array([group[v] or "other" for v in pred[ok]])
        uniq, cnt = np.unique(g_true, return_counts=True)
        res["coarse"] = {"n": int(ok.sum()), "accuracy": float((g_true == g_pred).mean()),
                         "majority": float(cnt.max() / cnt.sum()),
                         "counts": dict(zip(uniq.tolist(), cnt.tolist(), strict=True))}  # fmt: skip
    return res


def _confusion(y: np.ndarray, p: np.ndarray, k: int) -> list[list[int]]:
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (y, p), 1)
    return m.tolist()


# The grid of the tuned few-shot probe's inverse regularisation (sklearn's C), strongest first.
FEW_SHOT_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def _logreg_acc(xtr, ytr, xte, yte, c: float = 1.0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def _inner_c(x: np.ndarray, y: np.ndarray, poly: np.ndarray, cs: Sequence[float],
             folds: int = 5) -> float:  # fmt: skip
    """The C of ``cs`` with the best mean accuracy over ``folds`` folds of the training chips
    grouped by polygon (the test chips are never seen); ties go to the stronger regularisation."""
    from sklearn.model_selection import GroupKFold

    if len(cs) == 1:
        return float(cs[0])
    splits = list(GroupKFold(min(folds, len(np.unique(poly)))).split(x, y, poly))
    scores = []
    for c in cs:
        accs = [_logreg_acc(x[a], y[a], x[b], y[b], c) for a, b in splits
                if len(np.unique(y[a])) > 1]  # fmt: skip
        scores.append(np.mean(accs) if accs else -1.0)
    return float(cs[int(np.argmax(scores))])


def few_shot(feats: dict[str, np.ndarray], labels: np.ndarray, groups: list[list[str]],
             per_class: int = 10, repeats: int = 10, seed: int = 0,
             cs: Sequence[float] = (1.0,),
             engine_methods: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Few-shot land use: ``per_class`` polygons per class for training, grouped by polygon.

    In each repeat, ``per_class`` polygons of each class (with more than ``per_class``) are
    drawn; their chips train a logistic regression, and every chip touching none of them is a
    test chip. The same draws score every feature set (embeddings and the pixel baseline).
    With several ``cs``, each feature set's regularisation is chosen in each repeat by grouped
    cross-validation on the training chips alone (:func:`_inner_c`), as linear-probe protocols
    do: one fixed C favours features with few dimensions. The chosen Cs are reported.
    ``engine_methods`` ("prototype", "logreg") also score the ``embedding`` features with the
    plugin's own few-shot classifier (:func:`engine.classify.fit.fit_classifier`, its default
    settings) on the same draws: what an analyst gets (keys ``engine_<method>``).
    """
    from engine.classify.fit import fit_classifier

    lab = labels >= 0
    first = np.array([g[0] if g else "" for g in groups], dtype=object)
    ok = lab & (first != "")
    classes = [c for c in np.unique(labels[ok])
               if len(np.unique(first[ok & (labels == c)])) > per_class]  # fmt: skip
    use = ok & np.isin(labels, classes)
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {k: [] for k in feats}
    scores.update({f"engine_{m}": [] for m in engine_methods})
    chosen: dict[str, list[float]] = {k: [] for k in feats}
    index = {c: i for i, c in enumerate(classes)}
    n_test = []
    for _ in range(repeats):
        train_groups: set[str] = set()
        for c in classes:
            polys = np.unique(first[use & (labels == c)])
            train_groups |= set(rng.choice(polys, per_class, replace=False).tolist())
        tr = use & np.isin(first, list(train_groups))
        te = use & np.array([not (set(g) & train_groups) for g in groups])
        n_test.append(int(te.sum()))
        for k, x in feats.items():
            c = _inner_c(x[tr], labels[tr], first[tr], cs)
            chosen[k].append(c)
            scores[k].append(_logreg_acc(x[tr], labels[tr], x[te], labels[te], c))
        emb, ytr = feats.get("embedding"), np.array([index[v] for v in labels[tr]])
        for m in engine_methods:
            lin = fit_classifier(emb[tr].astype(np.float32), ytr, len(classes), m)
            pred = np.asarray(classes)[np.argmax(emb[te] @ lin.weight + lin.bias, axis=1)]
            scores[f"engine_{m}"].append(float((pred == labels[te]).mean()))
    return {"classes": [int(c) for c in classes], "per_class": per_class, "repeats": repeats,
            "n_test_mean": float(np.mean(n_test)), "cs": [float(c) for c in cs],
            **{k: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                   **({"c": chosen[k]} if k in chosen else {})}
               for k, v in scores.items()}}  # fmt: skip


def text_truth(scene: Scene, x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Which chips count as hits for each text query (NaN where unknown: not judged)."""
    t = truths(x)
    lab = np.array(scene.column("landuse", -1), dtype=int)
    named = np.array([names[v] if 0 <= v < len(names) else "" for v in lab])
    labelled = lab >= 0
    water = np.where(np.isfinite(t["water"]), t["water"] >= 0.5, named == "water")
    forest = np.where(labelled, named == "forest", np.nan)
    built = np.where(labelled, np.isin(named, ["residential", "industrial"]), np.nan)
    crop = np.where(labelled, named == "cropland", np.nan)
    return {"water": water.astype(float), "forest": forest, "built": built, "cropland": crop}


def text_to_map(model: UniGeoModel, scene: Scene, emb: np.ndarray, x: np.ndarray,
                names: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """Top-20 precision of each text query within the scene, judged by spectral/OSM truth.

    A query is scored only when the scene has at least 20 judged chips that are hits (else
    even a perfect model could not fill the top 20); unjudged chips are left out of its ranking.
    """
    truth = text_truth(scene, x, names)
    tmpl = list(model.bundle.prompt_templates)
    out: dict[str, Any] = {}
    for q, key in TEXT_QUERIES.items():
        t = truth[key]
        judged = np.isfinite(t)
        if (t[judged] > 0.5).sum() < TOP_K:
            out[q] = {"scored": False, "hits_available": int((t[judged] > 0.5).sum())}
            continue
        qe = model.encode_text([q], templates=tmpl)[0]
        idx = np.flatnonzero(judged)
        top = idx[np.argsort(-(emb[idx] @ qe), kind="stable")[:TOP_K]]
        out[q] = {"scored": True, "precision": float((t[top] > 0.5).mean()),
                  "base_rate": float((t[judged] > 0.5).mean()), "judged": int(judged.sum())}  # fmt: skip
    return out


def stats_embedder(scene: Scene) -> Callable[[np.ndarray], np.ndarray]:
    """The pixel-statistics baseline as an embedding: :func:`pixel_stats` of a chip, z-scored
    with the mean and spread over every view of ``scene`` (one fixed transform for every date),
    L2-normalised, so cosine retrieval on it is comparable with the model's."""
    f = np.concatenate([pixel_stats(v) for v in scene.views]) if scene.views else np.zeros((1, 1))
    mu, sd = f.mean(0), f.std(0) + 1e-6

    def embed(chips: np.ndarray) -> np.ndarray:
        z = (pixel_stats(chips) - mu) / sd
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    return embed


def lite0_embedder(config: str = "lit_cpu", batch: int = 128) -> Callable[[np.ndarray], np.ndarray]:
    """The frozen backbone as an embedding: EfficientNet-Lite0's pooled ImageNet feature (1280-d,
    L2-normalised) of a chip's RGB, as the aerial tower of ``config`` feeds it (a missing R, G
    or B is the mean of the others). The reference for what the trained heads keep of it."""
    import torch

    from .config import load_config
    from .models.effnet_towers import _EffNetBase

    cfg = load_config(config).model.aerial
    net = _EffNetBase(cfg).eval()
    mean = np.array(cfg.mean, np.float32)[:, None, None]
    std = np.array(cfg.std, np.float32)[:, None, None]

    def embed(chips: np.ndarray) -> np.ndarray:
        x = match_bands_batch(chips, cfg.bands)
        mask = torch.from_numpy(np.isfinite(x).any(axis=(2, 3)).astype(np.float32))
        px = torch.from_numpy(np.nan_to_num((x - mean) / std).astype(np.float32))
        with torch.no_grad():
            f = torch.cat([net.features(net.backbone_input(px[i : i + batch], mask[i : i + batch]))
                           for i in range(0, len(px), batch)])  # fmt: skip
        return torch.nn.functional.normalize(f, dim=1).numpy()

    return embed


def match_bands_batch(chips: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Canonical-band chips ``[N, 6, S, S]`` in ``bands``' order (absent: NaN)."""
    return np.stack([match_bands(c, SPECTRAL_BANDS, tuple(bands)) for c in chips])


def cross_date(model: UniGeoModel | None, scene: Scene,
               embed: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:  # fmt: skip
    """Same place across dates: query one date's chip among another date's chips, R@1.

    Pairs of views with two different known dates; every such date pair is scored over the
    places that have both dates, and the R@1 are averaged weighted by places (chance = 1/n).
    ``embed`` replaces the model's aerial tower (e.g. :func:`stats_embedder`, the baseline).
    """
    if embed is None:
        assert model is not None
        embed = partial(embed_aerial, model)
    by_pair: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    dated = any(any(ds) for ds in scene.dates)
    for i, ds in enumerate(scene.dates):
        # Format 1 datasets record no dates: their views are taken as one date each. In a
        # dataset with dates, undated views are other crops of one image, not other dates.
        ds = ds if dated else [f"view {j}" for j in range(len(ds))]
        for a in range(len(ds)):
            for b in range(a + 1, len(ds)):
                if ds[a] and ds[b] and ds[a] != ds[b]:
                    by_pair.setdefault((ds[a], ds[b]), []).append((i, a, b))
    hits, chance, n_tot = 0.0, 0.0, 0
    for trip in by_pair.values():
        if len(trip) < 2:
            continue
        qa = embed(np.stack([scene.views[i][a] for i, a, _ in trip]))
        gb = embed(np.stack([scene.views[i][b] for i, _, b in trip]))
        r1 = (qa @ gb.T).argmax(1) == np.arange(len(trip))
        hits += float(r1.sum())
        chance += 1.0
        n_tot += len(trip)
    if not n_tot:
        return {"n": 0}
    return {"R@1": hits / n_tot, "n": n_tot, "date_pairs": len(by_pair),
            "chance@1": chance / n_tot}  # fmt: skip


def pair_retrieval(model: UniGeoModel, scene: Scene, emb: np.ndarray) -> dict[str, Any]:
    """aerial <-> GPS and aerial <-> text R@10 within the scene (identical captions are hits)."""
    lat = np.array(scene.column("lat"), dtype=np.float64)
    lon = np.array(scene.column("lon"), dtype=np.float64)
    caps = specific_captions(scene)
    gps = model.encode_gps(lat, lon)
    txt = model.encode_text(caps)
    groups = caption_groups(caps)
    out = {"aerial->gps": retrieval(emb, gps, lat, lon), "gps->aerial": retrieval(gps, emb, lat, lon),
           "aerial->text": retrieval(emb, txt, lat, lon, groups),
           "text->aerial": retrieval(txt, emb, lat, lon, groups)}  # fmt: skip
    for k, r in out.items():
        r["chance@10"] = chance_at_k(groups if "text" in k else np.arange(len(caps)), 10)
    return out


def specific_captions(scene: Scene) -> list[str]:
    """Each sample's most specific phrasing: the one the fewest samples of the scene share
    (then the longest): cover shares and elevation rather than the scene-wide climate line."""
    from collections import Counter

    texts = [list(r.get("text") or [""]) for r in scene.rows]
    freq = Counter(t for ts in texts for t in set(ts))
    return [min(ts, key=lambda t: (freq[t], -len(t))) for ts in texts]


def chance_at_k(groups: np.ndarray, k: int) -> float:
    """R@k of a random ranking: P(one of a query's m correct items is among k of n), averaged."""
    n = len(groups)
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    m = counts[inv].astype(float)
    miss = np.ones(n)
    for i in range(min(k, n)):
        miss *= np.clip(n - m - i, 0, None) / (n - i)
    return float((1.0 - miss).mean())


# The two few-shot probes of the report: fixed C = 1, and C chosen by grouped CV; UniGeo's own
# classifiers score the embedding beside the second.
PROBES: dict[str, dict[str, Any]] = {"few_shot": {}, "few_shot_tuned": {"cs": FEW_SHOT_CS}}
ENGINE_PROBE, ENGINE_METHODS = "few_shot_tuned", ("prototype", "logreg")


def reference_few_shot(scene: Scene, references: dict[str, np.ndarray] | None = None
                       ) -> dict[str, dict[str, Any]] | None:  # fmt: skip
    """Both probes on the scene's pixel statistics and ``references`` (more features of its
    first views, e.g. the frozen backbone's): the same for every bundle, so computed once per
    scene and merged into each bundle's scores by :func:`scene_measures`. None when the scene is
    not scored few-shot."""
    groups = few_shot_groups(scene)
    if groups is None:
        return None
    labels = np.array(scene.column("landuse", -1), dtype=int)
    feats = {"pixel_stats": pixel_stats(scene.first()), **(references or {})}
    return {k: few_shot(feats, labels, groups, **kw) for k, kw in PROBES.items()}


def scene_measures(model: UniGeoModel, scene: Scene, names: Sequence[str],
                   references: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Everything measured on one held-out scene. ``references``: the scene's
    :func:`reference_few_shot` scores (computed here when not given); the embedding is scored
    on the same draws and both sit side by side in ``few_shot`` and ``few_shot_tuned``."""
    x = scene.first()
    emb = embed_aerial(model, x)
    labels = np.array(scene.column("landuse", -1), dtype=int)
    out: dict[str, Any] = {"n": scene.n, "collapse": collapse(emb),
                           "retrieval": pair_retrieval(model, scene, emb),
                           "text_to_map": text_to_map(model, scene, emb, x, names)}  # fmt: skip
    if (labels >= 0).sum() >= 20:
        out["zero_shot"] = zero_shot(model, emb, labels, names)
    groups = few_shot_groups(scene)
    if groups is not None:
        refs = references if references is not None else reference_few_shot(scene)
        for k, kw in PROBES.items():
            engine = ENGINE_METHODS if k == ENGINE_PROBE else ()
            own = few_shot({"embedding": emb}, labels, groups, engine_methods=engine, **kw)
            out[k] = {**(refs or {}).get(k, {}), **own}
    return out


def few_shot_groups(scene: Scene) -> list[list[str]] | None:
    """The polygons of each sample when ``scene`` is scored few-shot (at least 20 labelled
    chips and polygon groups), else None."""
    labels = np.array(scene.column("landuse", -1), dtype=int)
    groups = [list(g or []) for g in scene.column("groups", [])]
    return groups if (labels >= 0).sum() >= 20 and any(groups) else None
