"""Per-sensor scaling of raw pixels to the aerial tower's values, from ``engine/sensors.json``.

One table, read by training (its chips) and by the engine (``scale="sensor:<name>"`` of the
GDAL reader, ``--sensor`` on the command line), so a raster is scaled at inference exactly as its
sensor's training chips were: reflectance products as reflectance / ``reflectance_max`` of the
band, 8-bit display products as value / 255, then clipped to [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError

TABLE_PATH = Path(__file__).resolve().parents[1] / "sensors.json"
KINDS = ("reflectance", "display", "linear")


@dataclass(frozen=True)
class Sensor:
    """One sensor's (product's) scaling rule and band names."""

    name: str  # key in the table, e.g. "sentinel2_l1c"
    kind: str  # "reflectance" | "display" | "linear"
    scale: float  # raw x scale + offset = reflectance (or the model value for display/linear)
    offset: float
    nodata: float | None  # raw value that marks no data (None: the file's own)
    bands: dict[str, str] = field(default_factory=dict)  # model band -> the sensor's band id
    description: str = ""
    reflectance_max: dict[str, float] = field(default_factory=dict)  # model band -> 1.0

    def to_model(self, raw: np.ndarray, band: str) -> np.ndarray:
        """Model values in [0, 1] (float32, NaN kept) of raw pixels of model band ``band``."""
        x = np.asarray(raw, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)
        if self.kind == "reflectance":
            x = x / np.float32(self.reflectance_max[band])
        return np.clip(x, 0.0, 1.0)

    def offset_span(self, band: str) -> tuple[float, float]:
        """The engine's form of the rule: model = (raw - lo) / span, before clipping."""
        lo = -self.offset / self.scale
        top = self.reflectance_max[band] if self.kind == "reflectance" else 1.0
        return lo, top / self.scale


def _fail(msg: str) -> InputError:
    return InputError(f"sensor table {TABLE_PATH.name}: {msg}; restore it from the repository")


@lru_cache(maxsize=1)
def load_table(path: str | None = None) -> tuple[tuple[str, ...], dict[str, Sensor]]:
    """Read and check the table: (model band names, sensors by name)."""
    p = Path(path) if path else TABLE_PATH
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _fail(f"cannot be read ({e})") from None
    if d.get("format") != "unigeo-sensors" or d.get("version") != 1:
        raise _fail("not a version 1 'unigeo-sensors' table")
    bands = tuple(d["model_bands"])
    rmax = {b: float(v) for b, v in d["reflectance_max"].items()}
    if set(rmax) != set(bands) or min(rmax.values()) <= 0:
        raise _fail("reflectance_max needs one positive value per model band")
    sensors = {}
    for name, s in d["sensors"].items():
        if s.get("kind") not in KINDS or not float(s.get("scale", 0)) > 0:
            raise _fail(f"sensor {name!r} needs a kind in {KINDS} and a positive scale")
        unknown = set(s.get("bands", {})) - set(bands)
        if unknown:
            raise _fail(f"sensor {name!r} maps unknown model bands {sorted(unknown)}")
        sensors[name] = Sensor(
            name=name,
            kind=s["kind"],
            scale=float(s["scale"]),
            offset=float(s.get("offset", 0.0)),
            nodata=s.get("nodata"),
            bands=dict(s.get("bands", {})),
            description=s.get("description", ""),
            reflectance_max=rmax,
        )
    return bands, sensors


MODEL_BANDS: tuple[str, ...] = load_table()[0]


def get_sensor(name: str) -> Sensor:
    """The sensor called ``name``.

    Raises:
        InputError: no such sensor in the table (the message lists the known ones).
    """
    sensors = load_table()[1]
    if name not in sensors:
        raise InputError(f"unknown sensor {name!r}; known sensors: {', '.join(sorted(sensors))}")
    return sensors[name]


def sensor_names() -> tuple[str, ...]:
    """The sensors of the table, sorted."""
    return tuple(sorted(load_table()[1]))
