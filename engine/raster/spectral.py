"""What a raster band says it holds: spectral words, sensor band codes and known sensor layouts.

The evidence :func:`~.band_choice.choose_bands` weighs: the spectral words of band descriptions
("Red", "Band 4 - NIR", "swir1", ...), colour interpretations, sensor band codes ("B1".."B7",
"SR_B5", "B04", "B8A") read through the layouts of Landsat 4/5 TM, Landsat 7 ETM+, Landsat 8/9
OLI/TIRS and Sentinel-2 MSI, the hints that name a sensor (``LC08_…``, ``S2A_…``) and the layouts
of unnamed band stacks by their count. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Spectral words (token sequences of a lower-cased description), most specific first.
_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("shortwave", "infrared", "1"), "swir1"),
    (("short", "wave", "infrared", "1"), "swir1"),
    (("swir", "1"), "swir1"),
    (("swir", "16"), "swir1"),
    (("shortwave", "infrared", "2"), "swir2"),
    (("short", "wave", "infrared", "2"), "swir2"),
    (("swir", "2"), "swir2"),
    (("swir", "22"), "swir2"),
    (("red", "edge"), "rededge"),
    (("rededge",), "rededge"),
    (("near", "infrared"), "nir"),
    (("near", "ir"), "nir"),
    (("nir",), "nir"),
    (("nearinfrared",), "nir"),
    (("coastal",), "coastal"),
    (("aerosol",), "coastal"),
    (("thermal",), "thermal"),
    (("tir",), "thermal"),
    (("lwir",), "thermal"),
    (("panchromatic",), "pan"),
    (("cirrus",), "cirrus"),
    (("water", "vapour"), "watervapour"),
    (("water", "vapor"), "watervapour"),
    (("red",), "red"),
    (("green",), "green"),
    (("blue",), "blue"),
    (("alpha",), "alpha"),
)
_LETTERS = {"r": "red", "g": "green", "b": "blue", "n": "nir", "a": "alpha", "pan": "pan"}
COLOURS = {"red": "red", "green": "green", "blue": "blue", "alpha": "alpha"}

_TM = {"1": "blue", "2": "green", "3": "red", "4": "nir", "5": "swir1", "6": "thermal"}
_TM.update({"7": "swir2", "8": "pan"})
_OLI = {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "nir", "6": "swir1"}
_OLI.update({"7": "swir2", "8": "pan", "9": "cirrus", "10": "thermal", "11": "thermal"})
_S2 = {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "rededge", "6": "rededge"}
_S2.update({"7": "rededge", "8": "nir", "8a": "nir", "9": "watervapour", "10": "cirrus"})
_S2.update({"11": "swir1", "12": "swir2"})
# sensor key -> (label, band code -> spectral name)
SENSORS: dict[str, tuple[str, dict[str, str]]] = {
    "tm": ("Landsat 4/5 TM or 7 ETM+", _TM),
    "etm": ("Landsat 7 ETM+", _TM),
    "oli": ("Landsat 8/9 OLI/TIRS", _OLI),
    "s2": ("Sentinel-2 MSI", _S2),
}
# unnamed bands: sensor key -> {band count: the codes of the bands in file order}
STACKS: dict[str, dict[int, tuple[str, ...]]] = {
    "tm": {6: ("1", "2", "3", "4", "5", "7"), 7: tuple("1234567"), 8: tuple("12345678")},
    "etm": {
        6: ("1", "2", "3", "4", "5", "7"),
        7: tuple("1234567"),
        8: tuple("12345678"),
        9: ("1", "2", "3", "4", "5", "6", "6", "7", "8"),  # both thermal gains (B6_VCID_1, _2)
    },
    "oli": {7: tuple("1234567"), 8: tuple("12345678"), 9: tuple("123456789")},
    "s2": {
        10: ("2", "3", "4", "5", "6", "7", "8", "8a", "11", "12"),
        12: ("1", "2", "3", "4", "5", "6", "7", "8", "8a", "9", "11", "12"),
        13: ("1", "2", "3", "4", "5", "6", "7", "8", "8a", "9", "10", "11", "12"),
    },
}
STACKS["oli"][11] = tuple(str(i) for i in range(1, 12))
SR6 = ("blue", "green", "red", "nir", "swir1", "swir2")
# unnamed bands without a sensor hint: band count -> (layout label, names in file order)
BY_COUNT: dict[int, tuple[str, tuple[str, ...]]] = {
    3: ("3 bands without spectral names, taken as red, green, blue", ("red", "green", "blue")),
    4: (
        "4 bands without spectral names, taken as red, green, blue, NIR (NAIP's order; a "
        "PlanetScope-style "
        "blue, green, red, NIR file needs the bands picked by hand)",
        ("red", "green", "blue", "nir"),
    ),
    6: (
        "6 bands without spectral names, taken as Landsat surface reflectance (blue, green, red, NIR, SWIR1, "
        "SWIR2: TM/ETM+ bands 1-5 and 7 or OLI bands 2-7)",
        SR6,
    ),
}
HINTS = (
    (
        "oli",
        re.compile(
            r"(?<![A-Z0-9])(LC0?[89]|LO0?[89]|LANDSAT[-_ ]?[89])(?![0-9])|(?<![A-Z])OLI(?![A-Z])"
        ),
    ),
    ("etm", re.compile(r"(?<![A-Z0-9])(LE0?7|LANDSAT[-_ ]?7)(?![0-9])|(?<![A-Z])ETM(?![A-Z])")),
    ("tm", re.compile(r"(?<![A-Z0-9])(LT0?[45]|LANDSAT[-_ ]?[45])(?![0-9])")),
    ("s2", re.compile(r"(?<![A-Z0-9])(S2[AB]|SENTINEL[-_ ]?2)(?![0-9])")),
)
BAND_CODE = re.compile(r"^(?:(?:sr|toa|st|lt)_)?(?:b|band)[ _]?(\d{1,2}a?)(?:_vcid_?[12])?$", re.I)


@dataclass(frozen=True)
class Band:
    """One band of a raster as its description and colour interpretation describe it."""

    number: int  # 1-based
    label: str  # the description as given, "" when none
    name: str | None  # spectral name from the description or colour interpretation
    code: str | None  # sensor band code from the description ("4", "8a"), lower case
    alpha: bool  # a mask band (alpha colour interpretation, no spectral description)


def spectral_name(text: str | None) -> str | None:
    """The spectral band a description names (``"Band 4 - NIR"`` → nir), or None."""
    t = (text or "").strip().lower()
    if not t:
        return None
    if t in _LETTERS:
        return _LETTERS[t]
    tokens = re.findall(r"[a-z]+|\d+", t)
    for phrase, name in _PHRASES:
        k = len(phrase)
        if any(tuple(tokens[i : i + k]) == phrase for i in range(len(tokens) - k + 1)):
            return name
    return None


def wanted_name(text: str) -> str:
    """A model band name folded to the names used here (``"NIR"``, ``"swir16"`` → nir, swir1)."""
    return spectral_name(text) or text.strip().lower()


def read_bands(
    count: int, descriptions: Sequence[str | None], interps: Sequence[str | None]
) -> list[Band]:
    """What each band says it is: its description, spectral name, sensor code and alpha flag."""
    out = []
    for i in range(count):
        label = (descriptions[i] if i < len(descriptions) else None) or ""
        interp = (interps[i] if i < len(interps) else None) or ""
        name = spectral_name(label)
        colour = COLOURS.get(interp.strip().lower())
        m = BAND_CODE.match(label.strip())
        code = m.group(1).lower() if m else None  # "04" keeps its padding: Sentinel-2's B01..B12
        if name is None and code is None:
            name = colour
        alpha = name == "alpha"
        out.append(Band(i + 1, label.strip(), None if alpha else name, code, alpha))
    return out


def distinct_sensors(keys: list[str], n: int) -> list[str]:
    """``keys`` without sensors whose n-band stack reads exactly like an earlier one's."""
    out: list[str] = []
    for k in keys:
        if not any(SENSORS[k][1] is SENSORS[o][1] and STACKS[k][n] == STACKS[o][n] for o in out):
            out.append(k)
    return out


def band_span(data: list[Band]) -> str:
    """The labels of the first and last band, e.g. ``B1-B7``."""
    return f"{data[0].label}-{data[-1].label}" if len(data) > 1 else data[0].label


def sensor_of(data: list[Band], hints: Sequence[str]) -> tuple[str | tuple[str, ...] | None, str]:
    """The sensor the codes or hints point to: a key, a tuple of candidates, or None; and why."""
    hinted = []
    for text in hints:
        for key, pat in HINTS:
            if text and pat.search(text.upper()) and key not in hinted:
                hinted.append(key)
    codes = [b.code for b in data if b.code]
    labels = " ".join(b.label.lower() for b in data)
    if "vcid" in labels:
        return "etm", "its _VCID_ thermal band names it"
    if any(c.startswith("0") or c.endswith("a") or c in ("12",) for c in codes):
        return "s2", "the names B01-B12 and B8A are Sentinel-2's"
    if {"10", "11"} & set(codes):
        return "oli", "bands 10 and 11 are Landsat 8/9 TIRS's"
    if len(hinted) == 1:
        return hinted[0], "the file name or metadata names it"
    if codes and len(codes) == len(data) and len(codes) >= 5 and {"5", "7"} <= set(codes):
        if "6" not in codes and "1" in codes:
            return "tm", "bands 1-5 and 7 without 6 are TM/ETM+ surface reflectance"
        return ("tm", "oli"), "nothing names the sensor"
    return (tuple(hinted) or None), ("the hints name several sensors" if hinted else "")
