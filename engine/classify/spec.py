"""A classification as plain data, zero-shot prompts or labelled polygons, and the one way to run it.

The GUI's classify dialog, Processing's ``unigeo:classify`` and the CLI's ``classify`` fill a
:class:`ClassifySpec`; :func:`classify` maps the store and :func:`validate` cross-validates the
same few-shot classifier, so every front end maps and grades alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError
from ..geo.geometry import GeometryLike
from .land_use import Classification, from_examples, zero_shot
from .report import ValidationReport
from .validation import apply_min_confidence, cross_validate

if TYPE_CHECKING:
    from ..model.core import UniGeoModel
    from ..store.npy import EmbeddingStore


@dataclass(frozen=True)
class ClassifySpec:
    """A classification request as plain data."""

    class_prompts: Mapping[str, Sequence[str]] | None = None  # zero-shot; None = the bundle's
    examples: tuple[tuple[GeometryLike, str], ...] = ()  # few-shot: (polygon, class label)
    examples_crs: str | None = None  # CRS of the example polygons (None: the store's)
    method: str = "prototype"  # few-shot method: "prototype" or "logreg"
    min_confidence: float | None = None  # tiles below it get the class "uncertain"

    @property
    def zero_shot(self) -> bool:
        return not self.examples


def classify(
    store: EmbeddingStore,
    model: UniGeoModel,
    spec: ClassifySpec,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> Classification:
    """Classify every tile: zero-shot from prompts, or few-shot from the labelled polygons."""
    cb = {"progress": progress, "is_canceled": is_canceled}
    if spec.zero_shot:
        prompts = spec.class_prompts
        lists = {k: list(v) for k, v in prompts.items()} if prompts else None
        result = zero_shot(store, model, class_prompts=lists, **cb)
    else:
        examples = list(spec.examples)
        result = from_examples(store, examples, method=spec.method, crs=spec.examples_crs, **cb)
    return apply_min_confidence(result, spec.min_confidence)


def validate(
    store: EmbeddingStore,
    spec: ClassifySpec,
    folds: int = 5,
    is_canceled: Callable[[], bool] | None = None,
) -> ValidationReport:
    """Cross-validate the few-shot classifier of ``spec``, grouped by polygon.

    Raises:
        InputError: ``spec`` is zero-shot: there are no labels to validate against.
    """
    if spec.zero_shot:
        raise InputError("validation needs labelled examples (few-shot)")
    return cross_validate(
        store,
        list(spec.examples),
        spec.method,
        spec.examples_crs,
        folds=folds,
        min_confidence=spec.min_confidence,
        is_canceled=is_canceled,
    )
