"""The model contract: the spec inside each ONNX file and the ``bundle.json`` schema.

Training's export imports this module to *write* specs; the engine imports it to *read and
validate* them. Every metadata key and every field name is defined here, once.

An ONNX encoder carries one metadata property, ``META_SPEC_KEY``, whose value is the JSON of an
:class:`EncoderSpec`. A bundle is a folder with ``bundle.json`` (a :class:`BundleSpec`), one ONNX
file per modality and the text tokenizer's ``tokenizer.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ModelContractError

FORMAT_VERSION = 2
"""Version of this contract. The engine refuses files with a newer format version.

Version 2 (2026-12): the aerial encoder takes a second input, ``band_mask`` ``[batch, bands]``
(1 = the sensor has the band, 0 = it does not), so one encoder serves sensors with and without
e.g. SWIR; and a bundle's aerial and DSM encoders cover one ground footprint
(:func:`footprint_m`). Version 1 files (aerial input ``pixels`` only) still load.
"""

META_SPEC_KEY = "unigeo.spec"
"""ONNX ``metadata_props`` key whose value is the JSON-encoded :class:`EncoderSpec`."""

BUNDLE_FILE = "bundle.json"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_NAME = "embedding"
"""Every encoder has exactly one output, ``[batch, dim]`` float32, L2-normalised."""

BATCH_AXIS = "batch"
"""Name of the dynamic batch axis in every input and output shape."""

PROVENANCES = ("real", "derived", "synthetic")


class Modality(str, Enum):
    """The five modalities of UniGeoCLIP. The value is the name used in files and JSON."""

    AERIAL = "aerial"
    STREETVIEW = "streetview"
    DSM = "dsm"
    TEXT = "text"
    GPS = "gps"


# Input tensor names and dtypes per modality; export must use exactly these.
INPUT_NAMES: dict[Modality, tuple[str, ...]] = {
    Modality.AERIAL: ("pixels", "band_mask"),
    Modality.STREETVIEW: ("pixels",),
    Modality.DSM: ("heights",),
    Modality.TEXT: ("input_ids", "attention_mask"),
    Modality.GPS: ("latlon",),
}
# What format version 1 used where it differed: its aerial encoder had no band mask.
_V1_INPUT_NAMES: dict[Modality, tuple[str, ...]] = {Modality.AERIAL: ("pixels",)}
INPUT_DTYPES: dict[str, str] = {
    "pixels": "float32",
    "band_mask": "float32",
    "heights": "float32",
    "input_ids": "int64",
    "attention_mask": "int64",
    "latlon": "float32",
}


# Canonical spectral band names (the engine matches a raster's bands to these by name).
SPECTRAL_BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")
FOOTPRINT_RTOL = 0.01
"""Aerial and DSM footprints of one bundle may differ by this fraction (rounding of gsd_m)."""


def input_names(modality: Modality, format_version: int = FORMAT_VERSION) -> tuple[str, ...]:
    """The input names of ``modality``'s encoder in a file of ``format_version``."""
    if format_version < 2 and modality in _V1_INPUT_NAMES:
        return _V1_INPUT_NAMES[modality]
    return INPUT_NAMES[modality]


def footprint_m(p: Preprocess) -> float:
    """Ground side of one chip in metres (``size * gsd_m``); 0 when the GSD is free."""
    return float(p.size) * float(p.gsd_m)


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
        raise _fail(
            where,
            f"the aerial encoder covers {fa:g} m per chip but the DSM encoder {fd:g} m: "
            "re-export the bundle with one footprint (DSM gsd_m = aerial footprint / DSM size)",
        )


def _fail(where: str, msg: str) -> ModelContractError:
    return ModelContractError(f"{where}: {msg}")


def _need(d: Any, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict):
        raise _fail(where, f"expected an object, got {type(d).__name__}")
    if key not in d:
        raise _fail(where, f"missing field '{key}'")
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _fail(where, f"field '{key}' has the wrong type (bool)")
    if not isinstance(v, types):
        raise _fail(where, f"field '{key}' has type {type(v).__name__}")
    return v


def _finite_list(v: Any, n: int | None, where: str, key: str) -> list[float]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise _fail(where, f"'{key}' must be a list of {n if n else 'some'} numbers")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise _fail(where, f"'{key}' holds a non-finite or non-numeric value")
        out.append(float(x))
    return out


@dataclass(frozen=True)
class Preprocess:
    """Everything the engine needs to turn raw input into the encoder's input tensor.

    Fields not used by a modality keep their defaults (and are ignored).
    """

    size: int = 0  # image/DSM side in pixels (H = W); 0 for text and GPS
    bands: tuple[str, ...] = ()  # band names in input order, e.g. ("red", "green", "blue")
    mean: tuple[float, ...] = ()  # per-band mean after scaling to [0, 1]
    std: tuple[float, ...] = ()  # per-band std after scaling to [0, 1]
    gsd_m: float = 0.0  # ground sample distance the tower was trained at (aerial, DSM); 0 = any
    dsm_center: str = "median"  # DSM: subtract the chip's "median" or "min" height
    dsm_scale_m: float = 1.0  # DSM: heights are divided by this after centring
    max_text_length: int = 0  # text: tokens including special tokens
    lowercase: bool = False  # text: lowercase before tokenising

    def validate(self, modality: Modality, where: str) -> None:
        """Raise :class:`ModelContractError` if the fields do not fit the modality."""
        if modality in (Modality.AERIAL, Modality.STREETVIEW):
            if self.size < 8 or not self.bands:
                raise _fail(where, "image preprocessing needs size >= 8 and band names")
            if len(self.mean) != len(self.bands) or len(self.std) != len(self.bands):
                raise _fail(where, "mean and std need one value per band")
            if any(s <= 0 for s in self.std):
                raise _fail(where, "std values must be positive")
        if modality is Modality.DSM:
            if self.size < 8 or self.dsm_scale_m <= 0:
                raise _fail(where, "DSM preprocessing needs size >= 8 and dsm_scale_m > 0")
            if self.dsm_center not in ("median", "min"):
                raise _fail(where, f"unknown dsm_center '{self.dsm_center}'")
        if modality is Modality.TEXT and not 4 <= self.max_text_length <= 4096:
            raise _fail(where, "text preprocessing needs 4 <= max_text_length <= 4096")
        if self.gsd_m < 0:
            raise _fail(where, "gsd_m must be >= 0")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Preprocess:
        if not isinstance(d, dict):
            raise _fail(where, "'preprocess' must be an object")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise _fail(where, f"unknown preprocessing fields {sorted(unknown)}")
        kw: dict[str, Any] = {}
        for k in ("size", "max_text_length"):
            if k in d:
                kw[k] = _need(d, k, int, where)
        for k in ("gsd_m", "dsm_scale_m"):
            if k in d:
                kw[k] = _finite_list([_need(d, k, (int, float), where)], 1, where, k)[0]
        for k in ("mean", "std"):
            if k in d:
                kw[k] = tuple(_finite_list(d[k], None, where, k))
        if "bands" in d:
            bands = _need(d, "bands", list, where)
            if not all(isinstance(b, str) and b for b in bands):
                raise _fail(where, "'bands' must be a list of names")
            kw["bands"] = tuple(bands)
        if "dsm_center" in d:
            kw["dsm_center"] = _need(d, "dsm_center", str, where)
        if "lowercase" in d:
            kw["lowercase"] = _need(d, "lowercase", bool, where)
        return cls(**kw)


@dataclass(frozen=True)
class EncoderSpec:
    """The spec stored in each ONNX file's metadata (key :data:`META_SPEC_KEY`)."""

    modality: Modality  # which tower this is
    dim: int  # the shared embedding dimension D
    inputs: dict[str, list[int | str]]  # input name -> shape, "batch" marks the dynamic axis
    preprocess: Preprocess  # how raw input becomes the input tensor
    model_name: str = "unigeo"  # the bundle's model name
    model_version: str = "0"  # the bundle's model version
    format_version: int = FORMAT_VERSION  # version of this contract

    def validate(self, where: str = "encoder spec") -> EncoderSpec:
        """Check internal consistency; return self so it can be chained."""
        if self.format_version > FORMAT_VERSION or self.format_version < 1:
            raise _fail(
                where,
                f"format version {self.format_version} is not supported by this engine "
                f"(supports 1..{FORMAT_VERSION}); update the plugin or re-export the model",
            )
        if not 2 <= self.dim <= 8192:
            raise _fail(where, f"embedding dim {self.dim} is out of range")
        want = input_names(self.modality, self.format_version)
        if tuple(self.inputs) != want:
            raise _fail(
                where, f"{self.modality.value} inputs must be {list(want)}, got {list(self.inputs)}"
            )
        for name, shape in self.inputs.items():
            if not shape or shape[0] != BATCH_AXIS:
                raise _fail(where, f"input '{name}' must start with the '{BATCH_AXIS}' axis")
            if not all(isinstance(s, int) and s > 0 for s in shape[1:]):
                raise _fail(where, f"input '{name}' has a bad shape {shape}")
        self.preprocess.validate(self.modality, where)
        p = self.preprocess
        if self.modality in (Modality.AERIAL, Modality.STREETVIEW):
            if self.inputs["pixels"][1:] != [len(p.bands), p.size, p.size]:
                raise _fail(where, "pixels shape does not match bands and size")
            if "band_mask" in self.inputs and self.inputs["band_mask"][1:] != [len(p.bands)]:
                raise _fail(where, "band_mask shape must be [batch, number of bands]")
        elif self.modality is Modality.DSM:
            if self.inputs["heights"][1:] != [1, p.size, p.size]:
                raise _fail(where, "heights shape does not match size")
        elif self.modality is Modality.TEXT:
            for n in ("input_ids", "attention_mask"):
                if self.inputs[n][1:] != [p.max_text_length]:
                    raise _fail(where, f"{n} shape does not match max_text_length")
        elif self.inputs["latlon"][1:] != [2]:
            raise _fail(where, "latlon shape must be [batch, 2]")
        return self

    def to_json(self) -> str:
        d = asdict(self)
        d["modality"] = self.modality.value
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "encoder spec") -> EncoderSpec:
        """Parse and validate; any problem is a :class:`ModelContractError`."""
        try:
            d = json.loads(text)
        except (ValueError, TypeError, RecursionError) as e:
            raise _fail(where, f"spec is not valid JSON ({e})") from None
        try:
            modality = Modality(_need(d, "modality", str, where))
        except ValueError:
            raise _fail(where, f"unknown modality {d.get('modality')!r}") from None
        inputs = _need(d, "inputs", dict, where)
        for k, v in inputs.items():
            if not isinstance(v, list) or not all(
                (isinstance(s, int) and not isinstance(s, bool)) or s == BATCH_AXIS for s in v
            ):
                raise _fail(where, f"input '{k}' shape must be a list of ints and '{BATCH_AXIS}'")
        # JSON objects are unordered (to_json even sorts keys): restore the contract's order.
        fv = d.get("format_version")
        want = input_names(modality, fv if isinstance(fv, int) else FORMAT_VERSION)
        order = [k for k in want if k in inputs] + [k for k in inputs if k not in want]
        spec = cls(
            modality=modality,
            dim=_need(d, "dim", int, where),
            inputs={str(k): list(inputs[k]) for k in order},
            preprocess=Preprocess.from_dict(_need(d, "preprocess", dict, where), where),
            model_name=str(d.get("model_name", "unigeo")),
            model_version=str(d.get("model_version", "0")),
            format_version=_need(d, "format_version", int, where),
        )
        return spec.validate(where)


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
        for b in _need(d, "bboxes", list, where):
            w, s, e, n = _finite_list(b, 4, where, "bboxes")
            if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90):
                raise _fail(where, f"training-domain box {b} is not a WGS84 (W, S, E, N) box")
            boxes.append((w, s, e, n))
        g = d.get("gsd_range_m", [0.0, None])
        if not isinstance(g, list) or len(g) != 2:
            raise _fail(where, "'gsd_range_m' must be [min, max]")
        lo = _finite_list([g[0]], 1, where, "gsd_range_m")[0]
        hi = math.inf if g[1] is None else _finite_list([g[1]], 1, where, "gsd_range_m")[0]
        if not 0 <= lo <= hi:
            raise _fail(where, "'gsd_range_m' must satisfy 0 <= min <= max")
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
        from .atomic import atomic_write_text

        path = Path(folder) / BUNDLE_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: Any, where: str = BUNDLE_FILE) -> BundleSpec:
        fv = _need(d, "format_version", int, where)
        if not 1 <= fv <= FORMAT_VERSION:
            raise _fail(
                where, f"format version {fv} is not supported (engine supports 1..{FORMAT_VERSION})"
            )
        enc: dict[Modality, str] = {}
        for k, v in _need(d, "encoders", dict, where).items():
            try:
                m = Modality(k)
            except ValueError:
                raise _fail(where, f"unknown modality '{k}' in encoders") from None
            if not isinstance(v, str) or not _safe_name(v):
                raise _fail(
                    where, f"encoder file for '{k}' must be a plain file name inside the bundle"
                )
            enc[m] = v
        if not enc:
            raise _fail(where, "the bundle lists no encoders")
        prompts = {}
        raw_prompts = d.get("class_prompts", {})
        if not isinstance(raw_prompts, dict):
            raise _fail(where, "'class_prompts' must be an object")
        for k, v in raw_prompts.items():
            if (
                not isinstance(v, list)
                or not v
                or not all(isinstance(p, str) and p.strip() for p in v)
            ):
                raise _fail(where, f"class '{k}' needs a non-empty list of prompts")
            prompts[str(k)] = tuple(v)
        templates = d.get("prompt_templates", ["{}"])
        if (
            not isinstance(templates, list)
            or not templates
            or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates)
        ):
            raise _fail(where, "'prompt_templates' must be strings each holding one '{}'")
        prov = d.get("provenance", {})
        colors = d.get("class_colors", {})
        if not isinstance(prov, dict) or not isinstance(colors, dict):
            raise _fail(where, "'provenance' and 'class_colors' must be objects")
        tok = d.get("tokenizer", TOKENIZER_FILE)
        if not isinstance(tok, str) or not _safe_name(tok):
            raise _fail(where, "'tokenizer' must be a plain file name inside the bundle")
        dim = _need(d, "dim", int, where)
        if not 2 <= dim <= 8192:
            raise _fail(where, f"dim {dim} is out of range")
        return cls(
            name=str(_need(d, "name", str, where)),
            version=str(_need(d, "version", str, where)),
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
    x = _finite_list([v], 1, where, "logit_scale")[0]
    if not 0 < x <= 1000:
        raise _fail(where, f"'logit_scale' must be in (0, 1000] (1/temperature), got {x}")
    return x


def _evaluation(v: Any, where: str) -> dict[str, Any]:
    """The optional ``evaluation`` block; ``zero_shot.accuracy`` must be a fraction in [0, 1]."""
    if not isinstance(v, dict):
        raise _fail(where, "'evaluation' must be an object")
    zs = v.get("zero_shot", {})
    if not isinstance(zs, dict):
        raise _fail(where, "'evaluation.zero_shot' must be an object")
    if "accuracy" in zs:
        acc = _finite_list([zs["accuracy"]], 1, where, "evaluation.zero_shot.accuracy")[0]
        if not 0 <= acc <= 1:
            raise _fail(where, f"'evaluation.zero_shot.accuracy' must be in [0, 1], got {acc}")
    return json.loads(json.dumps(v))  # a private deep copy (the caller keeps its dict)
