"""Land-use classification of an embedding store: zero-shot from prompts, few-shot from polygons.

* Zero-shot: each class prototype is the normalised mean of its prompt embeddings (text tower);
  each tile takes the class of highest cosine.
* Few-shot ("prototype"): prototypes are the normalised mean tile embedding per labelled class.
* Few-shot ("logreg"): multinomial logistic regression with L2, fitted in numpy by deterministic
  full-batch gradient descent (Nesterov momentum) on standardised embeddings.

Confidence is the softmax probability of the chosen class. For zero-shot the logits are
``cos * logit_scale``, the scale the model learned in training (``BundleSpec.logit_scale``), so the
probabilities are the ones the model was trained to output; a bundle that declares none falls back
to ``DEFAULT_TEMPERATURE = 0.01`` (scale 100, CLIP's cap), which is likely overconfident, and says
so in the warning. ``confidence="margin"`` gives the cosine gap between the best and second-best
class instead; zero-shot always records the gap's median and the share of near-ties (gap below
``LOW_MARGIN``) in its params, which go into both GeoTIFFs' provenance.

The bundle's class prompts are final (they are what the model was evaluated with); prompt
templates only expand a class given by its bare name (see :func:`resolve_prompts`). A zero-shot
result carries a ``warning`` when the bundle's measured zero-shot accuracy is low or unknown, the
logit scale is unknown, or most tiles are near-ties (see :func:`zero_shot_warning`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import staging_folder
from ..errors import InputError
from ..geo.geometry import GeometryLike
from ..geo.render import render_for
from ..geo.tiff import hex_to_rgba, publish_tiff, write_grid_raster
from ..model.contract import Modality
from ..search.query import tiles_in_polygon
from ..search.scoring import chunked_dot
from .fit import Linear, fit_classifier, normalise_rows, softmax
from .prompts import (
    DEFAULT_TEMPERATURE,
    GAP_BIN,
    GAP_BINS,
    LOW_MARGIN,
    gap_stats,
    resolve_prompts,
    temperature_for,
    zero_shot_warning,
)

if TYPE_CHECKING:
    from ..model.core import UniGeoModel
    from ..store.npy import EmbeddingStore

NODATA_CLASS = -1  # in Classification.class_raster
FILE_NODATA = 255  # in the written uint8 class raster
# Used when the bundle names no colour for a class (Tableau 10, readable on imagery).
PALETTE = "#4e79a7 #f28e2b #e15759 #76b7b2 #59a14f #edc948 #b07aa1 #ff9da7 #9c755f #bab0ac".split()


@dataclass
class Classification:
    """A per-tile class map with its confidence."""

    classes: list[str]  # class names; index i is value i in class_raster
    class_raster: np.ndarray  # int16 [rows, cols], -1 = nodata
    confidence: np.ndarray  # float32 [rows, cols], NaN = nodata
    colors: list[str]  # "#rrggbb" per class
    method: str = ""  # "zero-shot", "prototype" or "logreg"
    params: dict[str, Any] = field(default_factory=dict)  # settings, for provenance
    warning: str = ""  # why the result should not be trusted (zero-shot), "" if no reason known


def _apply(
    store: EmbeddingStore,
    lin: Linear,
    temperature: float,
    confidence: str,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a linear classifier over the store in chunks.

    Returns:
        class int16 and confidence float32 rasters (-1 / NaN = nodata), and the histogram over
        :data:`GAP_BINS` of the valid tiles' top-1 minus top-2 logit (a cosine gap for cosine
        classifiers): a histogram, not a third raster, keeps memory flat on huge stores.
    """
    if confidence not in ("softmax", "margin"):
        raise InputError(f"confidence must be 'softmax' or 'margin', got '{confidence}'")
    if confidence == "margin" and lin.weight.shape[1] < 2:
        raise InputError("a margin needs at least two classes")
    shape = store.embeddings.shape[:2]
    cls = np.empty(shape, dtype=np.int16)
    conf = np.empty(shape, dtype=np.float32)
    hist = np.zeros(len(GAP_BINS) - 1, dtype=np.int64)
    valid = np.asarray(store.valid, dtype=bool)
    for r0, r1, logits in chunked_dot(store, lin.weight, None, progress, is_canceled):
        logits += lin.bias
        cls[r0:r1] = np.argmax(logits, axis=-1)
        if logits.shape[-1] >= 2:
            top2 = np.partition(logits, -2, axis=-1)[..., -2:]
            gap = top2[..., 1] - top2[..., 0]
            # bincount of the bin index: several times faster than np.histogram on edges
            idx = np.clip(gap[valid[r0:r1]] * (1 / GAP_BIN), 0, len(hist) - 1).astype(np.intp)
            hist += np.bincount(idx, minlength=len(hist))
        if confidence == "margin":
            conf[r0:r1] = gap
        else:
            scale = 1.0 / temperature if lin.cosine else 1.0
            conf[r0:r1] = softmax(logits * np.float32(scale)).max(axis=-1)
    cls[~valid] = NODATA_CLASS
    conf[~valid] = np.nan
    return cls, conf, hist


def _colors(classes: list[str], named: Mapping[str, str] | None) -> list[str]:
    named = named or {}
    out = []
    for i, c in enumerate(classes):
        col = named.get(c) or PALETTE[i % len(PALETTE)]
        hex_to_rgba(col)  # fail early on a malformed bundle colour
        out.append(col)
    return out


def zero_shot(
    store: EmbeddingStore,
    model: UniGeoModel,
    class_prompts: Mapping[str, Sequence[str] | str] | None = None,
    templates: Sequence[str] | None = None,
    temperature: float | None = None,
    confidence: str = "softmax",
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> Classification:
    """Classify every tile by the closest class prototype built from text prompts.

    Args:
        store: The embedding store.
        model: The model (needs a text encoder); its bundle gives default prompts, templates,
            colours, the logit scale and the declared zero-shot accuracy.
        class_prompts: Class name -> prompts (default: ``model.bundle.class_prompts``, used as
            written); see :func:`resolve_prompts` for which are templated.
        templates: Templates with one ``{}`` for bare class names (default: the bundle's).
        temperature: Softmax temperature on cosine logits (default: ``1 / logit_scale`` of the
            bundle, else :data:`DEFAULT_TEMPERATURE`).
        confidence: ``"softmax"`` (probability of the chosen class) or ``"margin"``.
        progress: Called with the fraction done.
        is_canceled: Polled between chunks.

    Returns:
        The classification; its ``warning`` says why it may not be trusted ("" if no reason).
    """
    if model is None or not model.has(Modality.TEXT):
        raise InputError("zero-shot classification needs a model with a text encoder")
    prompts, templated = resolve_prompts(class_prompts, model.bundle, templates)
    if len(prompts) < 2:
        raise InputError("zero-shot classification needs at least two classes with prompts")
    temp, source = temperature_for(model.bundle, temperature)
    protos = [
        normalise_rows(np.asarray(model.encode_text(plist), dtype=np.float32)).mean(axis=0)
        for plist in prompts.values()
    ]
    weight = normalise_rows(np.stack(protos)).T
    lin = Linear(weight, np.zeros(weight.shape[1], np.float32), cosine=True)
    cls, conf, hist = _apply(store, lin, temp, confidence, progress, is_canceled)
    median, share = gap_stats(hist)
    warning = zero_shot_warning(model.bundle, share, scale_declared=source != "fallback")
    classes = list(prompts)
    params = {
        "temperature": temp,
        "temperature_source": source,
        "confidence": confidence,
        "class_prompts": prompts,  # the final prompts that were embedded
        "templated_classes": templated,
        "templates": list(templates or model.bundle.prompt_templates) if templated else [],
        "cosine_margin_median": median,
        "near_tie_share": share,
        "low_margin": LOW_MARGIN,
        "declared_zero_shot_accuracy": model.bundle.zero_shot_accuracy,
        "warning": warning,
    }
    colors = _colors(classes, model.bundle.class_colors)
    return Classification(classes, cls, conf, colors, "zero-shot", params, warning)


def gather_examples(
    store: EmbeddingStore,
    polygons_with_labels: Iterable[tuple[GeometryLike, str]],
    crs: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tile embeddings under labelled polygons: ``(X [n, D] float32, y [n] int, classes)``."""
    by_class: dict[str, list[np.ndarray]] = {}
    for geom, label in polygons_with_labels:
        rows, cols = tiles_in_polygon(store, geom, crs)
        vecs = np.asarray(store.embeddings[rows, cols], dtype=np.float32)
        by_class.setdefault(str(label), []).append(vecs.reshape(-1, store.dim))
    classes = sorted(by_class)
    xs = [np.concatenate(by_class[c]) for c in classes]
    y = np.concatenate([np.full(len(x), i) for i, x in enumerate(xs)]) if xs else np.empty(0)
    x = np.concatenate(xs) if xs else np.empty((0, store.dim), np.float32)
    return x, y.astype(np.int64), classes


def from_examples(
    store: EmbeddingStore,
    polygons_with_labels: Iterable[tuple[GeometryLike, str]],
    method: str = "prototype",
    crs: str | None = None,
    min_tiles_per_class: int = 2,
    temperature: float = DEFAULT_TEMPERATURE,
    l2: float = 1e-2,
    colors: Mapping[str, str] | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> Classification:
    """Few-shot classification from labelled polygons (class = label).

    Args:
        store: The embedding store.
        polygons_with_labels: ``(polygon, label)`` pairs, polygons as WKT, WKB or GeoJSON;
            the valid tiles whose centre lies inside a polygon are that label's examples.
        method: ``"prototype"`` (nearest class mean, cosine) or ``"logreg"``.
        crs: CRS of the polygons (default: the store's).
        min_tiles_per_class: Fewest example tiles a class needs.
        temperature: Softmax temperature of the prototype method.
        l2: L2 penalty of the logistic regression.
        colors: Optional class -> "#rrggbb".
        progress: Called with the fraction done.
        is_canceled: Polled between chunks.
    """
    if method not in ("prototype", "logreg"):
        raise InputError(f"method must be 'prototype' or 'logreg', got '{method}'")
    x, y, classes = gather_examples(store, polygons_with_labels, crs)
    counts = np.bincount(y, minlength=len(classes))
    if len(classes) < 2:
        raise InputError("few-shot classification needs labelled polygons of at least two classes")
    few = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True) if n < min_tiles_per_class]
    if few:
        raise InputError(
            f"too few example tiles for {', '.join(few)}; each class needs at least "
            f"{min_tiles_per_class}: draw larger polygons or add more"
        )
    lin = fit_classifier(x, y, len(classes), method, l2)
    cls, conf, _ = _apply(store, lin, temperature, "softmax", progress, is_canceled)
    params = {"method": method, "examples": dict(zip(classes, counts.tolist(), strict=True))}
    params.update({"temperature": temperature} if method == "prototype" else {"l2": l2})
    return Classification(classes, cls, conf, _colors(classes, colors), method, params)


def write_classification(
    class_path: str | Path,
    conf_path: str | Path,
    store: EmbeddingStore,
    result: Classification,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write a paletted uint8 class GeoTIFF (255 = nodata) and a float32 confidence GeoTIFF.

    The class raster carries a GDAL colour table and the class names as band tags
    (``CLASS_<i>=<name>``); both files carry the provenance. Either both files are replaced or
    neither is.
    """
    n = len(result.classes)
    if not 1 <= n < FILE_NODATA:
        raise InputError(f"can write 1..{FILE_NODATA - 1} classes, got {n}")
    cls = np.asarray(result.class_raster)
    out = np.where(cls < 0, FILE_NODATA, cls).astype(np.uint8)
    cmap = {i: hex_to_rgba(c) for i, c in enumerate(result.colors)}
    cmap[FILE_NODATA] = (0, 0, 0, 0)
    names = {f"CLASS_{i}": name for i, name in enumerate(result.classes)}
    prov = {
        "model_hash": getattr(store, "model_hash", ""),
        "method": result.method,
        "classes": result.classes,
        "params": result.params,
        **(provenance or {}),
    }
    class_path, conf_path = Path(class_path), Path(conf_path)
    if class_path.absolute() == conf_path.absolute():
        raise InputError(
            f"the classes and the confidence would both be written to {class_path}, the second "
            "replacing the first: give the confidence raster another file name"
        )
    render = render_for(store)
    # Write and check both in staging folders first: a failure in either leaves both targets
    # untouched (the staged files carry the final names, so errors name them).
    with staging_folder(class_path) as cdir, staging_folder(conf_path) as fdir:
        tmp_cls, tmp_c = cdir / class_path.name, fdir / conf_path.name
        write_grid_raster(
            tmp_cls,
            store.grid,
            [out],
            dtype="uint8",
            nodata=FILE_NODATA,
            descriptions=["land-use class"],
            band_tags=[names],
            provenance=prov,
            colormap=cmap,
            render=render,
        )
        write_grid_raster(
            tmp_c,
            store.grid,
            [result.confidence],
            dtype="float32",
            nodata=float("nan"),
            descriptions=[f"confidence ({result.method})"],
            provenance=prov,
            render=render,
        )
        publish_tiff(tmp_cls, class_path)
        publish_tiff(tmp_c, conf_path)
    return class_path, conf_path
