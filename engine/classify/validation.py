"""Validation of few-shot classification against its own labels, and the confidence threshold.

:func:`cross_validate` runs k-fold cross-validation **grouped by polygon**: the tiles of one
polygon are never split between training and test, because neighbouring tiles look alike and a
split polygon would grade the classifier on near-copies of its training tiles. Polygons that share
a tile form one group. Folds are stratified by class: each class's groups are dealt over the folds
(a class with fewer polygons than folds is tested in fewer folds), and a class with a single
polygon cannot be tested: it stays in every training fold (it is part of the classifier the user
runs) and is reported as not validatable. The accuracy is compared with two baselines on the same
folds: the training fold's majority class, and chance (a guess drawn from the training fold's
class shares). With balanced classes the majority baseline falls below chance: a class whose
polygons are held out is the training minority exactly where it is tested.

:func:`apply_min_confidence` marks tiles whose confidence is below a threshold as
:data:`UNCERTAIN`: a dedicated class appended after the real classes (index ``len(classes)``,
grey), so "uncertain" stays distinct from nodata (255) in the written class raster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CancelledError, InputError
from ..geo.geometry import GeometryLike
from ..search.query import tiles_in_polygon
from .fit import Linear, fit_classifier, softmax
from .land_use import Classification
from .prompts import DEFAULT_TEMPERATURE
from .report import ValidationReport

if TYPE_CHECKING:
    from ..store.npy import EmbeddingStore

UNCERTAIN = "uncertain"  # name of the class given to tiles below min_confidence
UNCERTAIN_COLOR = "#9e9e9e"
# Tile accuracies are correlated within polygons, so a gain smaller than this over the better
# of the two baselines is treated as no gain (a rule of thumb, not a significance test).
NOT_BETTER_MARGIN = 0.05


@dataclass
class _Examples:
    x: np.ndarray  # [n, D] float32 tile embeddings
    y: np.ndarray  # [n] class index
    group: np.ndarray  # [n] group of the tile's polygon
    classes: list[str]
    empty: int  # polygons without tiles


def _components(tiles: np.ndarray, poly: np.ndarray, n: int) -> np.ndarray:
    """Group id per polygon: polygons that share a tile (transitively) are one group."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = np.argsort(tiles, kind="stable")
    t, p = tiles[order], poly[order]
    for i in np.nonzero(t[1:] == t[:-1])[0]:
        a, b = find(int(p[i])), find(int(p[i + 1]))
        parent[max(a, b)] = min(a, b)
    return np.unique([find(i) for i in range(n)], return_inverse=True)[1].reshape(-1)


def _gather(store: EmbeddingStore, pairs: Iterable[tuple[GeometryLike, str]], crs: str | None):
    """Example tiles with their class and polygon group; a tile is kept once per label."""
    vecs, flat, labels, empty = [], [], [], 0
    for geom, label in pairs:
        rows, cols = tiles_in_polygon(store, geom, crs)
        if len(rows) == 0:
            empty += 1
            continue
        vecs.append(np.asarray(store.embeddings[rows, cols], np.float32).reshape(-1, store.dim))
        flat.append(rows.astype(np.int64) * store.grid.cols + cols)
        labels.append(str(label))
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise InputError(
            "validation needs labelled polygons of at least two classes with valid tiles inside"
        )
    poly = np.repeat(np.arange(len(flat)), [len(f) for f in flat])
    tiles = np.concatenate(flat)
    y = np.array([classes.index(lab) for lab in labels])[poly]
    group = _components(tiles, poly, len(flat))[poly]
    # a tile under two polygons of one class counts once (it would otherwise sit in both sets)
    keep = np.sort(np.unique(tiles * len(classes) + y, return_index=True)[1])
    return _Examples(np.concatenate(vecs)[keep], y[keep], group[keep], classes, empty)


def assign_folds(
    group_class: np.ndarray, group_size: np.ndarray, folds: int, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Deal polygon groups over folds, class by class.

    Each class's groups are shuffled by ``seed`` and each goes to the fold holding the fewest
    test tiles of that class (then the fewest in all), so a class with ``g >= 2`` groups is
    tested in ``min(g, k)`` folds and always keeps a group for training.

    Returns:
        The fold of each group (-1: never tested, its class has one group) and the number of
        folds used, ``k = min(folds, most groups of any class)`` (0 when no class has two).
    """
    n_classes = int(group_class.max()) + 1 if len(group_class) else 0
    per_class = np.bincount(group_class, minlength=n_classes)
    k = min(int(folds), int(per_class.max(initial=0)))
    fold = np.full(len(group_class), -1)
    if k < 2:
        return fold, 0
    rng = np.random.default_rng(seed)
    total = np.zeros(k)
    for c in np.nonzero(per_class >= 2)[0]:
        load = np.zeros(k)
        for g in rng.permutation(np.nonzero(group_class == c)[0]):
            f = int(np.lexsort((total, load))[0])  # fewest of this class, then fewest overall
            fold[g] = f
            load[f] += group_size[g]
            total[f] += group_size[g]
    return fold, k


def _predict(lin: Linear, x: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Class and softmax confidence, exactly as :func:`engine.classify.land_use.from_examples` gives."""
    logits = x @ lin.weight + lin.bias
    prob = softmax(logits * np.float32(1.0 / temperature if lin.cosine else 1.0))
    return prob.argmax(axis=-1), prob.max(axis=-1)


def _metrics(cm: np.ndarray, classes: list[str], tested: np.ndarray) -> dict[str, dict]:
    """Precision, recall and F1 per class from the confusion matrix (None where undefined)."""
    out = {}
    for i, c in enumerate(classes):
        pred, true = int(cm[:, i].sum()), int(cm[i].sum())
        prec = cm[i, i] / pred if pred and tested[i] else None
        rec = cm[i, i] / true if true else None
        f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if rec is not None else None)
        out[c] = {
            "precision": None if prec is None else float(prec),
            "recall": None if rec is None else float(rec),
            "f1": None if f1 is None else float(f1),
            "tested_tiles": true,
        }
    return out


def cross_validate(
    store: EmbeddingStore,
    polygons_with_labels: Iterable[tuple[GeometryLike, str]],
    method: str = "prototype",
    crs: str | None = None,
    folds: int = 5,
    seed: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
    l2: float = 1e-2,
    min_confidence: float | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> ValidationReport:
    """Polygon-grouped, class-stratified k-fold cross-validation of few-shot classification.

    Args:
        store: The embedding store.
        polygons_with_labels: ``(polygon, label)`` pairs, as for ``from_examples``.
        method: ``"prototype"`` or ``"logreg"``.
        crs: CRS of the polygons (default: the store's).
        folds: Folds wanted (at least 2); fewer are run when no class has that many polygons.
        seed: Seed of the fold assignment.
        temperature: Softmax temperature of the prototype method.
        l2: L2 penalty of the logistic regression.
        min_confidence: If given, also report the share of test tiles at or above it and their
            accuracy.
        is_canceled: Polled between folds.

    Raises:
        InputError: Unknown method, fewer than two folds, or fewer than two labelled classes.
        CancelledError: ``is_canceled`` returned True.
    """
    if method not in ("prototype", "logreg"):
        raise InputError(f"method must be 'prototype' or 'logreg', got '{method}'")
    if int(folds) < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {folds}")
    ex = _gather(store, polygons_with_labels, crs)
    n = len(ex.classes)
    n_groups = int(ex.group.max()) + 1
    counts = np.zeros((n_groups, n), np.int64)
    np.add.at(counts, (ex.group, ex.y), 1)
    group_class = counts.argmax(axis=1)  # a mixed group is dealt as its largest class
    fold_of_group, k = assign_folds(group_class, counts.sum(axis=1), folds, seed)
    run = _Run(group_class, fold_of_group, k, np.zeros((n, n), np.int64))
    fold = fold_of_group[ex.group]
    for f in range(k):
        if is_canceled is not None and is_canceled():
            raise CancelledError("validation cancelled")
        tr, te = fold != f, fold == f
        pred, conf = _predict(
            fit_classifier(ex.x[tr], ex.y[tr], n, method, l2), ex.x[te], temperature
        )
        np.add.at(run.cm, (ex.y[te], pred), 1)
        share = np.bincount(ex.y[tr], minlength=n)
        run.base_right += int(np.sum(ex.y[te] == share.argmax()))
        run.chance += float(np.sum(share[ex.y[te]]) / share.sum())
        run.fold_acc.append(float(np.mean(pred == ex.y[te])))
        run.conf.append(conf)
        run.right.append(pred == ex.y[te])
    rep = _report(ex, run, method, folds, seed)
    if min_confidence is not None and run.conf and rep.accuracy is not None:
        conf, right = np.concatenate(run.conf), np.concatenate(run.right)
        sure = conf >= float(min_confidence)
        rep.min_confidence = float(min_confidence)
        rep.coverage = float(sure.mean())
        rep.confident_accuracy = float(right[sure].mean()) if sure.any() else None
    rep.warnings = _warnings(rep)
    return rep


@dataclass
class _Run:
    """What the folds accumulate."""

    group_class: np.ndarray  # [groups] class a group is dealt as
    fold_of_group: np.ndarray  # [groups] test fold, -1 = never tested
    k: int  # folds used
    cm: np.ndarray  # [C, C] confusion counts
    base_right: int = 0  # test tiles the majority baseline gets right
    chance: float = 0.0  # test tiles a guess by training class shares gets right, expected
    fold_acc: list[float] = field(default_factory=list)
    conf: list[np.ndarray] = field(default_factory=list)  # per fold, test-tile confidence
    right: list[np.ndarray] = field(default_factory=list)  # per fold, test tile correct


def _report(ex: _Examples, run: _Run, method: str, folds: int, seed: int) -> ValidationReport:
    """Assemble the report from the accumulated counts."""
    n, cm, group_class, fold_of_group = len(ex.classes), run.cm, run.group_class, run.fold_of_group
    polys = np.bincount(group_class, minlength=n)
    tested = np.zeros(n, bool)
    tested[group_class[fold_of_group >= 0]] = True
    not_val = {
        c: f"only {polys[i]} polygon: it cannot be held out, so it is always trained on"
        for i, c in enumerate(ex.classes)
        if not tested[i]
    }
    per_class = _metrics(cm, ex.classes, tested)
    for i, c in enumerate(ex.classes):
        per_class[c]["folds"] = len(set(fold_of_group[group_class == i].tolist()) - {-1})
    total = int(cm.sum())
    rec = [per_class[c]["recall"] for c in ex.classes if per_class[c]["recall"] is not None]
    return ValidationReport(
        method=method,
        classes=list(ex.classes),
        folds=int(folds),
        folds_used=run.k,
        seed=int(seed),
        polygons=dict(zip(ex.classes, polys.tolist(), strict=True)),
        tiles=dict(zip(ex.classes, np.bincount(ex.y, minlength=n).tolist(), strict=True)),
        not_validatable=not_val,
        confusion=cm.tolist(),
        per_class=per_class,
        accuracy=float(np.trace(cm) / total) if total else None,
        balanced_accuracy=float(np.mean(rec)) if rec else None,
        baseline_accuracy=run.base_right / total if total else None,
        chance_accuracy=run.chance / total if total else None,
        fold_accuracy=run.fold_acc,
        empty_polygons=ex.empty,
    )


def _warnings(rep: ValidationReport) -> list[str]:
    out = []
    if rep.folds_used == 0:
        out.append("no class has two polygons: draw at least two separate polygons per class")
    elif rep.not_validatable:
        out.append(
            f"not validated: {', '.join(rep.not_validatable)} (one polygon each; draw a second)"
        )
    if rep.accuracy is not None:
        ref = max(rep.baseline_accuracy, rep.chance_accuracy)
        if rep.accuracy < ref + NOT_BETTER_MARGIN:
            out.append(
                f"accuracy {rep.accuracy:.3f} is not clearly above guessing ({ref:.3f}): "
                "the examples do not separate the classes; draw more, or more distinct, polygons"
            )
    if rep.empty_polygons:
        out.append(f"{rep.empty_polygons} polygon(s) cover no valid tile centre and were ignored")
    return out


def apply_min_confidence(
    result: Classification, min_confidence: float | Mapping[str, float] | None
) -> Classification:
    """Give tiles whose confidence is below the threshold the class :data:`UNCERTAIN`.

    Args:
        result: A classification (its ``confidence`` raster is left as it is).
        min_confidence: One threshold for all classes, or class -> threshold (classes not
            named keep all their tiles); None returns ``result`` unchanged.

    Returns:
        A copy with ``UNCERTAIN`` appended to ``classes`` (index ``len(result.classes)``, grey)
        and ``params`` recording the threshold and how many tiles it moved.
    """
    if min_confidence is None:
        return result
    if UNCERTAIN in result.classes:
        raise InputError(f"a class is already named '{UNCERTAIN}': rename it to use a threshold")
    thr = _thresholds(result.classes, min_confidence)
    cls = np.array(result.class_raster, copy=True)
    valid = cls >= 0
    low = np.zeros(cls.shape, bool)
    # NaN confidence (nodata) compares False, and nodata tiles are excluded by ``valid``
    low[valid] = np.asarray(result.confidence)[valid] < thr[cls[valid]]
    cls[low] = len(result.classes)
    params = {
        **result.params,
        "min_confidence": (
            {k: float(v) for k, v in min_confidence.items()}
            if isinstance(min_confidence, Mapping)
            else float(min_confidence)
        ),
        "uncertain_class": len(result.classes),
        "uncertain_tiles": int(low.sum()),
    }
    return replace(
        result,
        classes=[*result.classes, UNCERTAIN],
        class_raster=cls,
        colors=[*result.colors, UNCERTAIN_COLOR],
        params=params,
    )


def _thresholds(classes: list[str], spec: float | Mapping[str, float]) -> np.ndarray:
    """Threshold per class index; checks the numbers and the class names."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(classes))
        if unknown:
            raise InputError(f"min_confidence names unknown classes: {', '.join(unknown)}")
        vals = [float(spec.get(c, -np.inf)) for c in classes]
    else:
        vals = [float(spec)] * len(classes)
    if any(np.isnan(v) or v > 1.0 for v in vals):
        raise InputError(f"min_confidence must be a number up to 1, got {spec}")
    return np.asarray(vals, np.float32)
