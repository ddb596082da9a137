"""Per-sensor scaling for the dataset builders: the table lives in the engine.

:mod:`engine.raster.sensors` reads ``engine/sensors.json`` (the engine applies the same rules at
inference); this module adds what only the builders need: a rule for a user's own raster and
the model band order.
"""

from __future__ import annotations

from engine.errors import InputError
from engine.raster.sensors import MODEL_BANDS, Sensor, load_table


def custom_sensor(value_max: float) -> Sensor:
    """A 'linear' rule for a user's own raster: the raw value ``value_max`` maps to 1.0."""
    if not value_max > 0:
        raise InputError(f"value_max must be positive, got {value_max}")
    rmax = load_table()[1]["display8"].reflectance_max
    return Sensor(f"linear/{value_max:g}", "linear", 1.0 / value_max, 0.0, None, {},
                  f"raw value / {value_max:g}", rmax)  # fmt: skip


def band_order(names: set[str] | list[str] | tuple[str, ...]) -> list[str]:
    """``names`` (model bands) in model order; unknown names are refused."""
    unknown = set(names) - set(MODEL_BANDS)
    if unknown:
        raise InputError(f"unknown band names {sorted(unknown)}; model bands: {MODEL_BANDS}")
    return [b for b in MODEL_BANDS if b in names]
