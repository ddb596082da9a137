"""Held-out evaluation data: chips of areas and places never trained on, and their truths.

Reads a dataset folder (format 1 or 2) directly, so any bundle can be scored on it through the
engine: every aerial view is expanded to the canonical bands
(:data:`engine.model.contract.SPECTRAL_BANDS`, NaN for a band the sensor lacks) and resized to the
chip side the towers were trained at (the same resize the training collate applies). Truths for
text-to-map hits come from the chip itself (water: MNDWI > 0 where SWIR exists, else NDWI > 0;
vegetation: NDVI) and from the land-use labels (OSM polygons in the labelled area).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.model.contract import SPECTRAL_BANDS

from .band_match import footprint_crop
from .cache_build import manifest_rows
from .data.collate import _resize
from .data.format import chip_to_float
from .data.reader import ChipStore

COARSE = {"water": "water", "forest": "forest", "residential": "built-up",
          "industrial": "built-up", "cropland": "agriculture/grass",
          "grassland": "agriculture/grass"}  # fmt: skip
"""The coarse groups of the zero-shot target; other classes (bare, wetland, shrubland) have none."""


@dataclass
class Scene:
    """Samples of one area (or split) with every aerial view as a canonical-band chip."""

    name: str
    rows: list[dict[str, Any]]
    views: list[np.ndarray]  # per sample [V, 6, S, S] float32, NaN = absent band / nodata
    dates: list[list[str]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.rows)

    def first(self) -> np.ndarray:
        """The first view of every sample ``[N, 6, S, S]``."""
        return np.stack([v[0] for v in self.views])

    def column(self, name: str, default: Any = None) -> list[Any]:
        return [r.get(name, default) for r in self.rows]


def _canonical(chip: np.ndarray, bands: tuple[str, ...], size: int) -> np.ndarray:
    out = np.full((len(SPECTRAL_BANDS), *chip.shape[1:]), np.nan, dtype=np.float32)
    for k, b in enumerate(SPECTRAL_BANDS):
        if b in bands:
            out[k] = chip[bands.index(b)]
    return _resize(out, size, "bilinear")


def load_scene(
    root: str | Path, name: str, keep: Callable[[dict[str, Any]], bool], size: int = 64,
    dataset_bands: tuple[str, ...] = ("red", "green", "blue", "nir"), max_views: int = 32,
    footprint: float = 320.0,
) -> Scene:  # fmt: skip
    """The samples of ``root`` with aerial imagery for which ``keep(row)`` is true, each view
    cut to ``footprint`` metres (what the engine tiles; :func:`band_match.footprint_crop`)."""
    root = Path(root)
    store = ChipStore(root)
    rows = [r for r in manifest_rows(root) if r.get("aerial") and keep(r)]
    views, dates = [], []
    for r in rows:
        bands = tuple(b.lower() for b in (r.get("aerial_bands") or dataset_bands))
        refs = r["aerial"][:max_views]
        g = r.get("gsd_m")
        views.append(np.stack([
            _canonical(footprint_crop(chip_to_float(np.array(store.load(x))), g, footprint),
                       bands, size) for x in refs]))  # fmt: skip
        d = list(r.get("aerial_dates") or [])
        dates.append((d + [""] * len(refs))[: len(refs)])
    return Scene(name, rows, views, dates)


def band(x: np.ndarray, name: str) -> np.ndarray:
    """One canonical band of chips ``[N, 6, H, W]`` (NaN where absent)."""
    return x[:, SPECTRAL_BANDS.index(name)]


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / (a + b + 1e-6)


def truths(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-chip spectral truths of chips ``[N, 6, H, W]``: water and vegetation fractions.

    ``water``: share of pixels with MNDWI > 0 (SWIR1 present) or NDWI > 0 (else); NaN when
    the chip lacks the bands. ``dense_veg``: share with NDVI > 0.5; NaN without red/NIR.
    """
    g, r, n, s1 = (band(x, b) for b in ("green", "red", "nir", "swir1"))
    with np.errstate(invalid="ignore"):
        mndwi, ndwi, ndvi = _nd(g, s1), _nd(g, n), _nd(n, r)

        def frac(v: np.ndarray, thr: float) -> np.ndarray:
            ok = np.isfinite(v)
            share = np.where(ok, v > thr, False).sum((1, 2)) / np.maximum(ok.sum((1, 2)), 1)
            return np.where(ok.any((1, 2)), share, np.nan)

        water = np.where(np.isfinite(mndwi).any((1, 2)), frac(mndwi, 0.0), frac(ndwi, 0.0))
    return {"water": water, "dense_veg": frac(ndvi, 0.5)}


def pixel_stats(x: np.ndarray) -> np.ndarray:
    """The raw-pixel baseline: per canonical band mean, std and 10/50/90th percentiles.

    Statistics over all bands of the same chip; a band the sensor lacks gives zeros (a flag
    column per band says which), so chips of every sensor stay comparable.
    """
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    have = np.isfinite(flat).any(-1)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            feats = [np.nanmean(flat, -1), np.nanstd(flat, -1),
                     *np.nanpercentile(flat, [10, 50, 90], axis=-1)]  # fmt: skip
    out = np.concatenate([np.nan_to_num(f) * have for f in feats] + [have.astype(np.float32)], 1)
    return out.astype(np.float32)
