"""Out-of-domain checks: where and at which resolution a store lies outside the model's training.

A model only knows the places and ground sample distances it was trained on (the bundle's
:class:`~.contract.TrainingDomain`). Scores elsewhere are unreliable, so the UI warns the analyst
with :func:`domain_warning` and can shade :func:`out_of_domain_mask`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..geo import crs as C
from ..grid import TileGrid
from ..model.bundle_spec import TrainingDomain

if TYPE_CHECKING:
    from ..store.npy import EmbeddingStore

WGS84 = "EPSG:4326"
_GSD_RTOL = 1e-6  # a GSD equal to a range end (up to rounding) is in range
_MAX_BOXES_SHOWN = 3


def _centres_lonlat(grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 longitude and latitude of every tile centre, ``[rows, cols]`` each."""
    xs, ys = grid.centers()
    return C.transform_xy(xs, ys, grid.crs, WGS84)


def in_domain_lonlat(lon: np.ndarray, lat: np.ndarray, domain: TrainingDomain) -> np.ndarray:
    """Vectorised :meth:`TrainingDomain.contains`: True where (lon, lat) lies in some box."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    inside = np.zeros(np.broadcast(lon, lat).shape, dtype=bool)
    for w, s, e, n in domain.bboxes:
        # a box with west > east crosses the antimeridian
        in_lon = (lon >= w) & (lon <= e) if w <= e else (lon >= w) | (lon <= e)
        inside |= in_lon & (lat >= s) & (lat <= n)
    return inside


def out_of_domain_mask(store: EmbeddingStore, domain: TrainingDomain) -> np.ndarray:
    """True for every tile whose centre lies outside every training box (bool ``[rows, cols]``).

    A domain without boxes says nothing about geography, so nothing is flagged. Tile centres that
    cannot be transformed to WGS84 are flagged.
    """
    grid = store.grid
    if not domain.bboxes or grid.n_tiles == 0:
        return np.zeros(grid.shape, dtype=bool)
    lon, lat = _centres_lonlat(grid)
    finite = np.isfinite(lon) & np.isfinite(lat)
    return ~(in_domain_lonlat(lon, lat, domain) & finite)


def gsd_out_of_range(gsd_m: float, domain: TrainingDomain) -> bool:
    """True if an aerial GSD (metres) lies outside the training GSD range."""
    if not (math.isfinite(gsd_m) and gsd_m > 0):
        raise InputError(f"a ground sample distance must be a positive number, got {gsd_m}")
    lo, hi = domain.gsd_range_m
    return gsd_m < lo * (1 - _GSD_RTOL) or gsd_m > hi * (1 + _GSD_RTOL)


def grid_gsd_m(grid: TileGrid) -> float:
    """The grid's pixel size in metres (east-west size along the centre's parallel for degrees)."""
    if C.is_geographic(grid.crs):
        _, y0, _, y1 = grid.bounds
        return float(grid.gsd * C.ground_m_per_degree_lon((y0 + y1) / 2.0))
    factor = C.linear_unit_m(grid.crs) if C.is_projected(grid.crs) else 1.0
    return float(grid.gsd * factor)


def _format_boxes(domain: TrainingDomain) -> str:
    boxes = [f"{w:.2f}, {s:.2f}, {e:.2f}, {n:.2f}" for w, s, e, n in domain.bboxes]
    more = len(boxes) - _MAX_BOXES_SHOWN
    text = "; ".join(f"[{b}]" for b in boxes[:_MAX_BOXES_SHOWN])
    return text + (f" and {more} more" if more > 0 else "")


def domain_warning(
    store: EmbeddingStore, domain: TrainingDomain, gsd_m: float | None = None
) -> str | None:
    """One or two sentences for the UI when the store lies (partly) outside the domain, else None.

    Args:
        store: The embedding store; the area fraction counts its valid tiles only.
        domain: The model's training domain (``model.bundle.training_domain``).
        gsd_m: The source imagery's GSD in metres, if known (the tiler may have resampled it);
            default: the store grid's pixel size.
    """
    parts = []
    valid = np.asarray(store.valid, dtype=bool)
    n_valid = int(valid.sum())
    if n_valid and domain.bboxes:
        outside = int((out_of_domain_mask(store, domain) & valid).sum())
        if outside:
            pct = 100.0 * outside / n_valid
            shown = f"{pct:.0f}" if pct >= 1 else "<1"
            parts.append(
                f"{shown} % of the area lies outside the model's training domain "
                f"(W, S, E, N: {_format_boxes(domain)}); scores there are unreliable."
            )
    gsd = grid_gsd_m(store.grid) if gsd_m is None else gsd_m
    if gsd_out_of_range(gsd, domain):
        lo, hi = domain.gsd_range_m
        parts.append(
            f"The imagery's ground sample distance ({gsd:.2f} m) is outside the model's "
            f"training range ({lo:g}–{hi:g} m); resample it or expect weaker results."
        )
    return " ".join(parts) or None
