"""Land-use classes shared by the synthetic world and the builders, and derived labels.

The first seven classes are the synthetic world's (:data:`SYNTH_CLASS_NAMES`); wetland and
shrubland were added for the OpenStreetMap land-use polygons of the real data, so indices of the
first seven never change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASS_NAMES = (
    "water", "forest", "cropland", "grassland", "residential", "industrial", "bare",
    "wetland", "shrubland",
)  # fmt: skip
WATER, FOREST, CROPLAND, GRASSLAND, RESIDENTIAL, INDUSTRIAL, BARE, WETLAND, SHRUBLAND = range(
    len(CLASS_NAMES)
)
SYNTH_CLASS_NAMES = CLASS_NAMES[:7]  # what the synthetic world and street renders draw

# Nouns used by text generation (the class name is always one of the words).
CLASS_PHRASES = {
    "water": ("water", "a lake", "open water"),
    "forest": ("forest", "woodland", "dense trees"),
    "cropland": ("cropland", "farm fields", "cultivated fields"),
    "grassland": ("grassland", "meadows", "open grass"),
    "residential": ("residential housing", "houses", "a residential neighbourhood"),
    "industrial": ("industrial buildings", "warehouses", "an industrial zone"),
    "bare": ("bare ground", "bare soil", "barren land"),
    "wetland": ("wetland", "marsh", "a wet meadow or bog"),
    "shrubland": ("shrubland", "scrub", "bushes and scrub"),
}

# OpenStreetMap land-use / natural values (as in the Geofabrik 'fclass' field) -> class name.
OSM_CLASSES = {
    "meadow": "grassland", "grass": "grassland", "heath": "shrubland", "scrub": "shrubland",
    "farm": "cropland", "farmland": "cropland", "orchard": "cropland", "vineyard": "cropland",
    "allotments": "cropland", "forest": "forest", "wood": "forest", "water": "water",
    "reservoir": "water", "river": "water", "wetland": "wetland", "residential": "residential",
    "industrial": "industrial", "commercial": "industrial", "retail": "industrial",
    "quarry": "bare",
}  # fmt: skip


def _band(x: np.ndarray, bands: Sequence[str], name: str) -> np.ndarray | None:
    return x[list(bands).index(name)].astype(np.float32) if name in bands else None


def spectral_indices(
    x: np.ndarray, bands: Sequence[str] = ("red", "green", "blue", "nir")
) -> dict[str, np.ndarray]:
    """NDVI, NDWI (green vs NIR, McFeeters), MNDWI (green vs SWIR1) and a snow index (NDSI with
    green, else red, against SWIR1, where the visible and NIR are bright: snow is dark only in
    SWIR), where the bands exist.

    Args:
        x: [C, H, W] reflectance-like values (reflectance, or an 8-bit render / 255).
        bands: the model band name of each of the C bands.
    """
    r, g, n, s1 = (_band(x, bands, b) for b in ("red", "green", "nir", "swir1"))
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if r is not None and n is not None:
            out["ndvi"] = (n - r) / (n + r + 1e-6)
        if g is not None and n is not None:
            out["ndwi"] = (g - n) / (g + n + 1e-6)
        if g is not None and s1 is not None:
            out["mndwi"] = (g - s1) / (g + s1 + 1e-6)
        vis = g if g is not None else r
        if vis is not None and s1 is not None:
            snow = (vis - s1) / (vis + s1 + 1e-6)
            # Snow is bright in the visible and NIR too; water (turbid or not) is dark in NIR.
            bright = (vis > 0.25) & (n > 0.2) if n is not None else vis > 0.25
            out["ndsi"] = np.where(bright, snow, -1.0)
    return out


def cover_fractions(
    x: np.ndarray, bands: Sequence[str] = ("red", "green", "blue", "nir")
) -> dict[str, float]:
    """Water / dense vegetation / sparse vegetation / bare fractions from spectral indices.

    Water is NDWI > 0 (green and NIR; MNDWI > 0 also counts when SWIR1 exists), or NDVI < 0
    without a green band; dense vegetation NDVI > 0.4, sparse 0.15..0.4. With SWIR1, snow or
    ice (NDSI > 0.4) is a fifth fraction, taken first. Needs red and NIR (empty otherwise);
    NaN pixels are ignored.
    """
    idx = spectral_indices(x, bands)
    if "ndvi" not in idx:
        return {}
    ndvi = idx["ndvi"]
    if "ndwi" in idx:
        water = idx["ndwi"] > 0.0
        if "mndwi" in idx:
            water |= (idx["mndwi"] > 0.0) & (ndvi < 0.1)
    else:
        water = ndvi < 0.0
    ok = np.isfinite(ndvi)
    for v in idx.values():
        ok &= np.isfinite(v)
    if not ok.any():
        return {}
    ndvi, water = ndvi[ok], water[ok]
    snow = idx["ndsi"][ok] > 0.4 if "ndsi" in idx else np.zeros_like(water)
    water &= ~snow
    dense = ~water & ~snow & (ndvi > 0.4)
    sparse = ~water & ~snow & (ndvi > 0.15) & ~dense
    out = {
        "water": float(water.mean()),
        "dense vegetation": float(dense.mean()),
        "sparse vegetation": float(sparse.mean()),
        "bare or built": float((~water & ~snow & ~dense & ~sparse).mean()),
    }
    if "ndsi" in idx:
        out["snow or ice"] = float(snow.mean())
    return out


def derive_label(fractions: dict[str, float], building_cover: float | None) -> int:
    """A land-use class from cover fractions and building cover, or -1 when unsure.

    Args:
        fractions: output of :func:`cover_fractions` (may be empty without NIR).
        building_cover: share of the chip under building footprints (None: unknown).
    """
    if building_cover is not None and building_cover > 0.12:
        return RESIDENTIAL
    if not fractions or fractions.get("snow or ice", 0.0) > 0.3:
        return -1  # snow hides the land use
    if fractions["water"] > 0.5:
        return WATER
    if fractions["dense vegetation"] > 0.6:
        return FOREST if fractions["dense vegetation"] > 0.85 else CROPLAND
    if fractions["sparse vegetation"] > 0.5:
        return GRASSLAND
    if fractions["bare or built"] > 0.6:
        return BARE
    return -1
