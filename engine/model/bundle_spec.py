"""The ``bundle.json`` schema: one model's encoders, tokenizer, prompts, training domain, quality.

A bundle is a folder with ``bundle.json`` (a :class:`BundleSpec`), one ONNX file per modality
(each carrying its :class:`~.contract.EncoderSpec`) and the text tokenizer's ``tokenizer.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelContractError
from .contract import FORMAT_VERSION, EncoderSpec, Modality, footprint_m
from .fields import fail, finite_list, need

BUNDLE_FILE = "bundle.json"
TOKENIZER_FILE = "tokenizer.json"
PROVENANCES = ("real", "derived", "synthetic")
FOOTPRINT_RTOL = 0.01
"""Aerial and DSM footprints of one bundle may differ by this fraction (rounding of gsd_m)."""


def check_footprints(specs: dict[Modality, EncoderSpec], where: str) -> None:
    """Refuse a format-2 bundle whose aerial and DSM encoders cover different ground footprints.

    The engine tiles a DSM and an image of the same place with the same tile grid; a DSM
    tower trained on another footprint would be fed chips it never saw (version 1 bundles
    did exactly that: 64 px at 2 m = 128 m against 64 px at 5 m = 320 m, and still load).
    """
    a, d = specs.get(Modality.AERIAL), specs.get(Modality.DSM)
    if a is None or d is None or min(a.format_version, d.format_version) < 2:
        return
    fa, fd = footprint_m(a.preprocess), footprint_m(d.preprocess)
    if fa > 0 and fd > 0 and abs(fa - fd) > FOOTPRINT_RTOL * fa:
        raise fail(
            where,
            f"the aerial encoder covers {fa:g} m per chip but the DSM encoder {fd:g} m: "
            "re-export the bundle with one footprint (DSM gsd_m = aerial footprint / DSM size)",
        )


@dataclass(frozen=True)
class TrainingDomain:
    """Where and at which resolution the model saw data: used for out-of-domain warnings."""

    bboxes: tuple[tuple[float, float, float, float], ...] = ()  # WGS84 (west, south, east, north)
    gsd_range_m: tuple[float, float] = (0.0, math.inf)  # aerial GSD seen in training, metres

    def contains(self, lon: float, lat: float) -> bool:
        """True if (lon, lat) lies inside any training box (boxes may cross the antimeridian)."""
        for w, s, e, n in self.bboxes:
            in_lon = (w <= lon <= e) if w <= e else (lon >= w or lon <= e)
            if in_lon and s <= lat <= n:
                return True
        return False

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TrainingDomain:
        boxes = []
        for b in need(d, "bboxes", list, where):
            w, s, e, n = finite_list(b, 4, where, "bboxes")
            if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90):
                raise fail(where, f"training-domain box {b} is not a WGS84 (W, S, E, N) box")
            boxes.append((w, s, e, n))
        g = d.get("gsd_range_m", [0.0, None])
        if not isinstance(g, list) or len(g) != 2:
            raise fail(where, "'gsd_range_m' must be [min, max]")
        lo = finite_list([g[0]], 1, where, "gsd_range_m")[0]
        hi = math.inf if g[1] is None else finite_list([g[1]], 1, where, "gsd_range_m")[0]
        if not 0 <= lo <= hi:
            raise fail(where, "'gsd_range_m' must satisfy 0 <= min <= max")
        return cls(bboxes=tuple(boxes), gsd_range_m=(lo, hi))

    def to_dict(self) -> dict[str, Any]:
        hi = None if math.isinf(self.gsd_range_m[1]) else self.gsd_range_m[1]
        return {"bboxes": [list(b) for b in self.bboxes], "gsd_range_m": [self.gsd_range_m[0], hi]}


@dataclass(frozen=True)
class BundleSpec:
    """The schema of ``bundle.json``."""

    name: str  # model name, also written into every encoder spec
    version: str  # model version
    dim: int  # shared embedding dimension D
    encoders: dict[Modality, str]  # modality -> ONNX file name inside the bundle folder
    tokenizer: str = TOKENIZER_FILE  # tokenizer file for the text tower
    class_prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # land-use prompts
    class_colors: dict[str, str] = field(default_factory=dict)  # land-use class -> "#rrggbb"
    prompt_templates: tuple[str, ...] = ("{}",)  # text-query templates, "{}" is the prompt
    provenance: dict[str, str] = field(default_factory=dict)  # modality -> real/derived/synthetic
    training_domain: TrainingDomain = field(default_factory=TrainingDomain)
    description: str = ""  # one paragraph for the model card / plugin settings
    format_version: int = FORMAT_VERSION
    # Optional. The learned multiplier of cosine logits (CLIP's exp(logit_scale), 1/temperature):
    # zero-shot confidence is softmax(cos * logit_scale). None: the bundle does not declare it.
    logit_scale: float | None = None
    # Optional measured quality, e.g. {"zero_shot": {"accuracy": 0.015, "n_test": 68,
    # "classes": 7}, "source": "where it was measured"}; read by the zero-shot warnings.
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def zero_shot_accuracy(self) -> float | None:
        """The declared zero-shot land-use accuracy (0..1), or None when not measured."""
        acc = self.evaluation.get("zero_shot", {}).get("accuracy")
        return None if acc is None else float(acc)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "dim": self.dim,
            "encoders": {m.value: f for m, f in self.encoders.items()},
            "tokenizer": self.tokenizer,
            "class_prompts": {k: list(v) for k, v in self.class_prompts.items()},
            "class_colors": dict(self.class_colors),
            "prompt_templates": list(self.prompt_templates),
            "provenance": dict(self.provenance),
            "training_domain": self.training_domain.to_dict(),
            "description": self.description,
            **({} if self.logit_scale is None else {"logit_scale": self.logit_scale}),
            **({"evaluation": self.evaluation} if self.evaluation else {}),
        }

    def write(self, folder: str | Path) -> Path:
        """Write ``bundle.json`` atomically into ``folder``."""
        from ..atomic import atomic_write_text

        path = Path(folder) / BUNDLE_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: Any, where: str = BUNDLE_FILE) -> BundleSpec:
        fv = need(d, "format_version", int, where)
        if not 1 <= fv <= FORMAT_VERSION:
            raise fail(
                where, f"format version {fv} is not supported (engine supports 1..{FORMAT_VERSION})"
            )
        enc: dict[Modality, str] = {}
        for k, v in need(d, "encoders", dict, where).items():
            try:
                m = Modality(k)
            except ValueError:
                raise fail(where, f"unknown modality '{k}' in encoders") from None
            if not isinstance(v, str) or not _safe_name(v):
                raise fail(
                    where, f"encoder file for '{k}' must be a plain file name inside the bundle"
                )
            enc[m] = v
        if not enc:
            raise fail(where, "the bundle lists no encoders")
        prompts = {}
        raw_prompts = d.get("class_prompts", {})
        if not isinstance(raw_prompts, dict):
            raise fail(where, "'class_prompts' must be an object")
        for k, v in raw_prompts.items():
            if (
                not isinstance(v, list)
                or not v
                or not all(isinstance(p, str) and p.strip() for p in v)
            ):
                raise fail(where, f"class '{k}' needs a non-empty list of prompts")
            prompts[str(k)] = tuple(v)
        templates = d.get("prompt_templates", ["{}"])
        if (
            not isinstance(templates, list)
            or not templates
            or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates)
        ):
            raise fail(where, "'prompt_templates' must be strings each holding one '{}'")
        prov = d.get("provenance", {})
        colors = d.get("class_colors", {})
        if not isinstance(prov, dict) or not isinstance(colors, dict):
            raise fail(where, "'provenance' and 'class_colors' must be objects")
        tok = d.get("tokenizer", TOKENIZER_FILE)
        if not isinstance(tok, str) or not _safe_name(tok):
            raise fail(where, "'tokenizer' must be a plain file name inside the bundle")
        dim = need(d, "dim", int, where)
        if not 2 <= dim <= 8192:
            raise fail(where, f"dim {dim} is out of range")
        return cls(
            name=str(need(d, "name", str, where)),
            version=str(need(d, "version", str, where)),
            dim=dim,
            encoders=enc,
            tokenizer=tok,
            class_prompts=prompts,
            class_colors={str(k): str(v) for k, v in colors.items()},
            prompt_templates=tuple(templates),
            provenance={str(k): str(v) for k, v in prov.items()},
            training_domain=TrainingDomain.from_dict(
                d.get("training_domain", {"bboxes": []}), where
            ),
            description=str(d.get("description", "")),
            format_version=fv,
            logit_scale=_logit_scale(d.get("logit_scale"), where),
            evaluation=_evaluation(d.get("evaluation", {}), where),
        )

    @classmethod
    def read(cls, folder: str | Path) -> BundleSpec:
        path = Path(folder) / BUNDLE_FILE
        if not path.is_file():
            raise ModelContractError(
                f"no {BUNDLE_FILE} in {folder}: is this a UniGeo model bundle?"
            )
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ModelContractError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, str(path))


def _safe_name(name: str) -> bool:
    """A plain file name: no folders, no '..', nothing absolute."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _logit_scale(v: Any, where: str) -> float | None:
    """The optional ``logit_scale``: a finite multiplier in (0, 1000] (CLIP clamps it at 100)."""
    if v is None:
        return None
    x = finite_list([v], 1, where, "logit_scale")[0]
    if not 0 < x <= 1000:
        raise fail(where, f"'logit_scale' must be in (0, 1000] (1/temperature), got {x}")
    return x


def _evaluation(v: Any, where: str) -> dict[str, Any]:
    """The optional ``evaluation`` block; ``zero_shot.accuracy`` must be a fraction in [0, 1]."""
    if not isinstance(v, dict):
        raise fail(where, "'evaluation' must be an object")
    zs = v.get("zero_shot", {})
    if not isinstance(zs, dict):
        raise fail(where, "'evaluation.zero_shot' must be an object")
    if "accuracy" in zs:
        acc = finite_list([zs["accuracy"]], 1, where, "evaluation.zero_shot.accuracy")[0]
        if not 0 <= acc <= 1:
            raise fail(where, f"'evaluation.zero_shot.accuracy' must be in [0, 1], got {acc}")
    return json.loads(json.dumps(v))  # a private deep copy (the caller keeps its dict)
