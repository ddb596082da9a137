"""Land-use classes shared by the synthetic world and the builders, and derived labels."""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("water", "forest", "cropland", "grassland", "residential", "industrial", "bare")
WATER, FOREST, CROPLAND, GRASSLAND, RESIDENTIAL, INDUSTRIAL, BARE = range(len(CLASS_NAMES))

# Nouns used by text generation (the class name is always one of the words).
CLASS_PHRASES = {
    "water": ("water", "a lake", "open water"),
    "forest": ("forest", "woodland", "dense trees"),
    "cropland": ("cropland", "farm fields", "cultivated fields"),
    "grassland": ("grassland", "meadows", "open grass"),
    "residential": ("residential housing", "houses", "a residential neighbourhood"),
    "industrial": ("industrial buildings", "warehouses", "an industrial zone"),
    "bare": ("bare ground", "bare soil", "barren land"),
}


def spectral_indices(rgbn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NDVI and NDWI (McFeeters, green vs NIR) of a [4, H, W] R,G,B,NIR chip in [0, 1]."""
    r, g, n = rgbn[0].astype(np.float32), rgbn[1].astype(np.float32), rgbn[3].astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (n - r) / (n + r + 1e-6)
        ndwi = (g - n) / (g + n + 1e-6)
    return ndvi, ndwi


def cover_fractions(rgbn: np.ndarray) -> dict[str, float]:
    """Water / dense vegetation / sparse vegetation / bare fractions from NDVI and NDWI.

    Thresholds are the usual ones for NDWI > 0 (water) and NDVI > 0.4 (dense vegetation).
    NaN pixels are ignored.
    """
    ndvi, ndwi = spectral_indices(rgbn)
    ok = np.isfinite(ndvi) & np.isfinite(ndwi)
    if not ok.any():
        return {}
    ndvi, ndwi = ndvi[ok], ndwi[ok]
    water = ndwi > 0.0
    dense = ~water & (ndvi > 0.4)
    sparse = ~water & (ndvi > 0.15) & ~dense
    return {
        "water": float(water.mean()),
        "dense vegetation": float(dense.mean()),
        "sparse vegetation": float(sparse.mean()),
        "bare or built": float((~water & ~dense & ~sparse).mean()),
    }


def derive_label(fractions: dict[str, float], building_cover: float | None) -> int:
    """A land-use class from cover fractions and building cover, or -1 when unsure.

    Args:
        fractions: output of :func:`cover_fractions` (may be empty without NIR).
        building_cover: share of the chip under building footprints (None: unknown).
    """
    if building_cover is not None and building_cover > 0.12:
        return RESIDENTIAL
    if not fractions:
        return -1
    if fractions["water"] > 0.5:
        return WATER
    if fractions["dense vegetation"] > 0.6:
        return FOREST if fractions["dense vegetation"] > 0.85 else CROPLAND
    if fractions["sparse vegetation"] > 0.5:
        return GRASSLAND
    if fractions["bare or built"] > 0.6:
        return BARE
    return -1
