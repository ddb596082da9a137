"""Class prompts and how far a zero-shot map can be trusted.

The prompt rule (bundle prompts are final; only bare class names get the templates), the softmax
temperature (the bundle's learned ``logit_scale``, else a flagged fallback), the top-1/top-2
cosine-gap statistics and the warning a zero-shot map carries. :mod:`.land_use` uses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..model.bundle_spec import BundleSpec

DEFAULT_TEMPERATURE = 0.01  # only when a bundle declares no logit_scale (and few-shot prototypes)
MIN_ZERO_SHOT_ACCURACY = 0.5  # a declared zero-shot accuracy below this gives a warning
ABOVE_CHANCE = 0.25  # zero-shot is the default only this far above chance (1 / classes)
LOW_MARGIN = 0.02  # best minus second-best class cosine under this is a near-tie
NEAR_TIE_SHARE = 0.5  # warn when more than this share of the tiles are near-ties
GAP_BIN = 0.0005  # width of the cosine-gap histogram bins (gaps lie in [0, 2])
GAP_BINS = np.arange(4001) * GAP_BIN  # bin edges


def gap_stats(hist: np.ndarray) -> tuple[float | None, float | None]:
    """(median cosine gap, share of gaps below :data:`LOW_MARGIN`) from a gap histogram."""
    n = int(hist.sum())
    if n == 0:
        return None, None
    mid = int(np.searchsorted(np.cumsum(hist), n / 2))
    median = float((GAP_BINS[mid] + GAP_BINS[mid + 1]) / 2)
    return median, float(hist[: int(np.searchsorted(GAP_BINS, LOW_MARGIN))].sum() / n)


def resolve_prompts(
    class_prompts: Mapping[str, Sequence[str] | str] | None,
    bundle: BundleSpec,
    templates: Sequence[str] | None = None,
) -> tuple[dict[str, list[str]], list[str]]:
    """The final prompts per class, and the classes that were expanded from a bare name.

    Bundle prompts are final: ``class_prompts=None`` uses ``bundle.class_prompts`` as written
    (templating them again gave "an aerial view of an aerial view of water"). In
    ``class_prompts``, a class whose only prompt is its own name (how the dialog, Processing
    and the CLI pass a bare class name) is expanded with ``templates`` (default: the bundle's
    ``prompt_templates``); other prompts, and the bundle's own prompts for a class, stay as
    written.

    Raises:
        InputError: A class without any non-blank prompt, or a template without one ``{}``.
    """
    if class_prompts is None:
        return {k: list(v) for k, v in bundle.class_prompts.items()}, []
    tmpl = list(templates) if templates is not None else list(bundle.prompt_templates)
    bad = [t for t in tmpl if not isinstance(t, str) or t.count("{}") != 1]
    if bad or not tmpl:
        raise InputError(f"prompt templates must each contain exactly one '{{}}', got {tmpl!r}")
    out: dict[str, list[str]] = {}
    templated = []
    for name, plist in class_prompts.items():
        items = [plist] if isinstance(plist, str) else list(plist)
        clean = [p.strip() for p in items if isinstance(p, str) and p.strip()]
        if not clean:
            raise InputError(f"class '{name}' has no prompts")
        if clean == [str(name).strip()] and clean != list(bundle.class_prompts.get(name, ())):
            out[name] = list(dict.fromkeys(t.replace("{}", clean[0]) for t in tmpl))
            templated.append(name)
        else:
            out[name] = clean
    return out, templated


def zero_shot_warning(
    bundle: BundleSpec,
    near_tie_share: float | None = None,
    scale_declared: bool = True,
    min_accuracy: float = MIN_ZERO_SHOT_ACCURACY,
) -> str:
    """Why a zero-shot map from this bundle should not be trusted; "" when no reason is known.

    Args:
        bundle: The model's bundle (its ``evaluation`` block and ``logit_scale``).
        near_tie_share: Share of valid tiles whose best two class cosines differ by less than
            :data:`LOW_MARGIN` (None: not measured).
        scale_declared: False when the confidence used the fallback temperature.
        min_accuracy: A declared zero-shot accuracy below this is "low".
    """
    parts = []
    acc, model = bundle.zero_shot_accuracy, f"'{bundle.name} {bundle.version}'"
    if acc is None:
        parts.append(
            f"model {model} declares no measured zero-shot accuracy: the classes are unverified"
        )
    elif acc < min_accuracy:
        zs = bundle.evaluation.get("zero_shot", {})
        k, n = zs.get("classes"), zs.get("n_test")
        k = k if isinstance(k, int) and k > 0 else None  # the block is free-form but for accuracy
        how = [f"{n} test samples" if n else "", f"{k} classes, chance {1 / k:.0%}" if k else ""]
        how_s = f" ({', '.join(h for h in how if h)})" if any(how) else ""
        parts.append(
            f"model {model} scored {acc:.1%} zero-shot land-use accuracy{how_s}: "
            "these classes are not reliable"
        )
    if near_tie_share is not None and near_tie_share > NEAR_TIE_SHARE:
        parts.append(
            f"{near_tie_share:.0%} of the tiles are near-ties (best and second-best class "
            f"cosine within {LOW_MARGIN})"
        )
    if not scale_declared:
        parts.append(
            "the bundle declares no logit_scale, so the confidence assumes 100 (CLIP's cap) "
            "and is likely overconfident"
        )
    if not parts:
        return ""
    return (
        "Zero-shot land use: " + "; ".join(parts) + ". Check the map against the imagery, or "
        "label a few example polygons and use few-shot classification instead."
    )


def default_classify_mode(
    bundle: BundleSpec, min_accuracy: float = MIN_ZERO_SHOT_ACCURACY
) -> tuple[str, str]:
    """Which classification to offer first, "zero-shot" or "few-shot", and why, in one sentence.

    Few-shot when the bundle's declared zero-shot accuracy is below ``min_accuracy`` (the level
    below which zero-shot maps carry a warning) or less than :data:`ABOVE_CHANCE` above chance
    for its number of classes. Zero-shot when it clears both, or when nothing was measured
    (then the sentence says the classes are unverified).
    """
    acc, model = bundle.zero_shot_accuracy, f"'{bundle.name} {bundle.version}'"
    if acc is None:
        return "zero-shot", (
            f"Model {model} declares no measured zero-shot accuracy, so zero-shot classes are "
            "unverified; labelled polygons (few-shot) are the safer choice when you have them."
        )
    k = bundle.evaluation.get("zero_shot", {}).get("classes")
    k = k if isinstance(k, int) and k > 1 else None
    floor = max(min_accuracy, 1 / k + ABOVE_CHANCE) if k else min_accuracy
    of = f" on {k} classes (chance {1 / k:.0%})" if k else ""
    if acc < floor:
        return "few-shot", (
            f"Few-shot is selected: model {model} declares {acc:.1%} zero-shot land-use "
            f"accuracy{of}, below the {floor:.0%} UniGeo asks for. Label a few polygons per "
            "class."
        )
    return "zero-shot", (
        f"Zero-shot is selected: model {model} declares {acc:.1%} zero-shot land-use "
        f"accuracy{of}."
    )


def temperature_for(bundle: BundleSpec, temperature: float | None) -> tuple[float, str]:
    """The softmax temperature and where it came from ("given", "bundle", "fallback")."""
    if temperature is not None:
        t, source = float(temperature), "given"
    elif bundle.logit_scale:
        t, source = 1.0 / bundle.logit_scale, "bundle"
    else:
        t, source = DEFAULT_TEMPERATURE, "fallback"
    if not t > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    return t, source
