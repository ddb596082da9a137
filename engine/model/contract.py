"""The model contract: the modalities, each encoder's tensors and the spec inside each ONNX file.

Training's export imports this module to *write* specs; the engine imports it to *read and
validate* them. Every metadata key, input name and spec field is defined here, once; the
``bundle.json`` schema that ties the encoders into one model is :mod:`.bundle_spec`.

An ONNX encoder carries one metadata property, ``META_SPEC_KEY``, whose value is the JSON of an
:class:`EncoderSpec`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from .fields import fail, finite_list, need

FORMAT_VERSION = 2
"""Version of this contract. The engine refuses files with a newer format version.

Version 2 (2026-12): the aerial encoder takes a second input, ``band_mask`` ``[batch, bands]``
(1 = the sensor has the band, 0 = it does not), so one encoder serves sensors with and without
e.g. SWIR; and a bundle's aerial and DSM encoders cover one ground footprint
(:func:`footprint_m`). Version 1 files (aerial input ``pixels`` only) still load.
"""

META_SPEC_KEY = "unigeo.spec"
"""ONNX ``metadata_props`` key whose value is the JSON-encoded :class:`EncoderSpec`."""

OUTPUT_NAME = "embedding"
"""Every encoder has exactly one output, ``[batch, dim]`` float32, L2-normalised."""

BATCH_AXIS = "batch"
"""Name of the dynamic batch axis in every input and output shape."""


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


def input_names(modality: Modality, format_version: int = FORMAT_VERSION) -> tuple[str, ...]:
    """The input names of ``modality``'s encoder in a file of ``format_version``."""
    if format_version < 2 and modality in _V1_INPUT_NAMES:
        return _V1_INPUT_NAMES[modality]
    return INPUT_NAMES[modality]


def footprint_m(p: Preprocess) -> float:
    """Ground side of one chip in metres (``size * gsd_m``); 0 when the GSD is free."""
    return float(p.size) * float(p.gsd_m)


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
                raise fail(where, "image preprocessing needs size >= 8 and band names")
            if len(self.mean) != len(self.bands) or len(self.std) != len(self.bands):
                raise fail(where, "mean and std need one value per band")
            if any(s <= 0 for s in self.std):
                raise fail(where, "std values must be positive")
        if modality is Modality.DSM:
            if self.size < 8 or self.dsm_scale_m <= 0:
                raise fail(where, "DSM preprocessing needs size >= 8 and dsm_scale_m > 0")
            if self.dsm_center not in ("median", "min"):
                raise fail(where, f"unknown dsm_center '{self.dsm_center}'")
        if modality is Modality.TEXT and not 4 <= self.max_text_length <= 4096:
            raise fail(where, "text preprocessing needs 4 <= max_text_length <= 4096")
        if self.gsd_m < 0:
            raise fail(where, "gsd_m must be >= 0")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Preprocess:
        if not isinstance(d, dict):
            raise fail(where, "'preprocess' must be an object")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise fail(where, f"unknown preprocessing fields {sorted(unknown)}")
        kw: dict[str, Any] = {}
        for k in ("size", "max_text_length"):
            if k in d:
                kw[k] = need(d, k, int, where)
        for k in ("gsd_m", "dsm_scale_m"):
            if k in d:
                kw[k] = finite_list([need(d, k, (int, float), where)], 1, where, k)[0]
        for k in ("mean", "std"):
            if k in d:
                kw[k] = tuple(finite_list(d[k], None, where, k))
        if "bands" in d:
            bands = need(d, "bands", list, where)
            if not all(isinstance(b, str) and b for b in bands):
                raise fail(where, "'bands' must be a list of names")
            kw["bands"] = tuple(bands)
        if "dsm_center" in d:
            kw["dsm_center"] = need(d, "dsm_center", str, where)
        if "lowercase" in d:
            kw["lowercase"] = need(d, "lowercase", bool, where)
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
            raise fail(
                where,
                f"format version {self.format_version} is not supported by this engine "
                f"(supports 1..{FORMAT_VERSION}); update the plugin or re-export the model",
            )
        if not 2 <= self.dim <= 8192:
            raise fail(where, f"embedding dim {self.dim} is out of range")
        want = input_names(self.modality, self.format_version)
        if tuple(self.inputs) != want:
            raise fail(
                where, f"{self.modality.value} inputs must be {list(want)}, got {list(self.inputs)}"
            )
        for name, shape in self.inputs.items():
            if not shape or shape[0] != BATCH_AXIS:
                raise fail(where, f"input '{name}' must start with the '{BATCH_AXIS}' axis")
            if not all(isinstance(s, int) and s > 0 for s in shape[1:]):
                raise fail(where, f"input '{name}' has a bad shape {shape}")
        self.preprocess.validate(self.modality, where)
        p = self.preprocess
        if self.modality in (Modality.AERIAL, Modality.STREETVIEW):
            if self.inputs["pixels"][1:] != [len(p.bands), p.size, p.size]:
                raise fail(where, "pixels shape does not match bands and size")
            if "band_mask" in self.inputs and self.inputs["band_mask"][1:] != [len(p.bands)]:
                raise fail(where, "band_mask shape must be [batch, number of bands]")
        elif self.modality is Modality.DSM:
            if self.inputs["heights"][1:] != [1, p.size, p.size]:
                raise fail(where, "heights shape does not match size")
        elif self.modality is Modality.TEXT:
            for n in ("input_ids", "attention_mask"):
                if self.inputs[n][1:] != [p.max_text_length]:
                    raise fail(where, f"{n} shape does not match max_text_length")
        elif self.inputs["latlon"][1:] != [2]:
            raise fail(where, "latlon shape must be [batch, 2]")
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
            raise fail(where, f"spec is not valid JSON ({e})") from None
        try:
            modality = Modality(need(d, "modality", str, where))
        except ValueError:
            raise fail(where, f"unknown modality {d.get('modality')!r}") from None
        inputs = need(d, "inputs", dict, where)
        for k, v in inputs.items():
            if not isinstance(v, list) or not all(
                (isinstance(s, int) and not isinstance(s, bool)) or s == BATCH_AXIS for s in v
            ):
                raise fail(where, f"input '{k}' shape must be a list of ints and '{BATCH_AXIS}'")
        # JSON objects are unordered (to_json even sorts keys): restore the contract's order.
        fv = d.get("format_version")
        want = input_names(modality, fv if isinstance(fv, int) else FORMAT_VERSION)
        order = [k for k in want if k in inputs] + [k for k in inputs if k not in want]
        spec = cls(
            modality=modality,
            dim=need(d, "dim", int, where),
            inputs={str(k): list(inputs[k]) for k in order},
            preprocess=Preprocess.from_dict(need(d, "preprocess", dict, where), where),
            model_name=str(d.get("model_name", "unigeo")),
            model_version=str(d.get("model_version", "0")),
            format_version=need(d, "format_version", int, where),
        )
        return spec.validate(where)
