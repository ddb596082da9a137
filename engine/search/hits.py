"""Top-k hits: the best tiles of a score map, kept apart by non-maximum suppression, and their file.

:func:`top_k` ranks an in-memory ``[rows, cols]`` score map; the streamed path
(:func:`~.streaming.top_k_chunked`) and the ANN index (:mod:`.ann`) offer their candidates to the
same :func:`nms`, so all three return the same tiles in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..geo.geometry import box_wkb, point_wkb
from ..geo.vector import write_vector
from ..grid import Bounds, TileGrid
from .calibration import calibrate

if TYPE_CHECKING:
    from ..store.npy import EmbeddingStore


@dataclass(frozen=True)
class Hit:
    """One top-k result: a tile of the store with its score and location."""

    rank: int  # 1 = best
    score: float  # cosine similarity
    percentile: float  # percentile of the score within the valid area
    row: int  # local grid row
    col: int  # local grid column
    x: float  # tile centre, store CRS
    y: float  # tile centre, store CRS
    bounds: Bounds  # tile footprint (what the encoder saw), store CRS


def best_subset(idx: np.ndarray, vals: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``m`` of (``idx``, ``vals``) in (-value, index) order, as an unordered subset.

    Ties at the cut keep the lowest indices, so the subset is the same however the scores were
    split into chunks (``argpartition`` alone would pick arbitrary tied tiles).
    """
    if vals.size <= m:
        return idx, vals
    cut = np.partition(vals, vals.size - m)[vals.size - m]  # the m-th largest value
    above = np.flatnonzero(vals > cut)
    tied = np.flatnonzero(vals == cut)
    tied = tied[np.argsort(idx[tied], kind="stable")][: m - above.size]
    sel = np.concatenate([above, tied])
    return idx[sel], vals[sel]


def _candidates(scores: np.ndarray, k: int, radius: int) -> np.ndarray:
    """Flat indices of the best finite scores, best first, enough to find ``k`` NMS hits.

    Each accepted hit suppresses at most (2r+1)^2 tiles, so k·(2r+1)^2 candidates always suffice.
    """
    flat = scores.reshape(-1)
    idx = np.flatnonzero(np.isfinite(flat))
    idx, vals = best_subset(idx, flat[idx], k * (2 * radius + 1) ** 2)
    # sort on (-score, index): ties resolve to the first tile in row-major order
    return idx[np.lexsort((idx, -vals))]


def check_k(k: int, min_distance_tiles: int) -> None:
    if k < 1 or min_distance_tiles < 0:
        raise InputError("need k >= 1 and min_distance_tiles >= 0")


def nms(
    grid: TileGrid, flat: np.ndarray, scores: np.ndarray, pcts: np.ndarray, k: int, radius: int
) -> list[Hit]:
    """Greedy non-maximum suppression over candidates given best first (flat grid indices)."""
    taken: set[tuple[int, int]] = set()
    hits: list[Hit] = []
    span = range(-radius, radius + 1)
    for f, score, pct in zip(flat.tolist(), scores.tolist(), pcts.tolist(), strict=True):
        row, col = divmod(int(f), grid.cols)
        if (row, col) in taken:
            continue
        taken.update((row + a, col + b) for a in span for b in span)
        x, y = grid.tile_center(row, col)
        hits.append(Hit(len(hits) + 1, score, pct, row, col, x, y, grid.tile_bounds(row, col)))
        if len(hits) == k:
            break
    return hits


def top_k(
    store: EmbeddingStore,
    scores: np.ndarray,
    k: int,
    min_distance_tiles: int = 1,
    percentiles: np.ndarray | None = None,
) -> list[Hit]:
    """The ``k`` best tiles with greedy non-maximum suppression.

    A hit suppresses every tile within ``min_distance_tiles`` of it in Chebyshev (king-move)
    distance, so no two hits are closer than ``min_distance_tiles + 1`` tiles along rows or
    columns; 0 disables suppression. Equal scores go to the first tile in row-major order.
    Fewer than ``k`` hits come back if the area runs out. Percentiles are ``calibrate(scores)``
    (the heatmap's band 2) unless given.
    """
    scores = np.asarray(scores, dtype=np.float32)
    grid = store.grid
    if scores.shape != grid.shape:
        raise InputError(f"scores have shape {scores.shape}, the store's grid is {grid.shape}")
    check_k(k, min_distance_tiles)
    pct = calibrate(scores) if percentiles is None else np.asarray(percentiles)
    cand = _candidates(scores, k, int(min_distance_tiles))
    flat_s, flat_p = scores.reshape(-1), pct.reshape(-1)
    return nms(grid, cand, flat_s[cand], flat_p[cand], k, int(min_distance_tiles))


def write_hits(
    path: str | Path,
    hits: Sequence[Hit],
    crs: str,
    as_polygons: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write hits as points (tile centres) or polygons (tile footprints) to .gpkg, .geojson (WGS84) or .shp.

    Fields: rank, score, percentile, row, col. The CRS is set on the layer; provenance goes into
    the GeoPackage metadata. The write is atomic.
    """
    if as_polygons:
        geoms = [box_wkb(*h.bounds) for h in hits]
    else:
        geoms = [point_wkb(h.x, h.y) for h in hits]
    fields = {
        "rank": np.array([h.rank for h in hits], dtype=np.int32),
        "score": np.array([h.score for h in hits], dtype=np.float64),
        "percentile": np.array([h.percentile for h in hits], dtype=np.float64),
        "row": np.array([h.row for h in hits], dtype=np.int32),
        "col": np.array([h.col for h in hits], dtype=np.int32),
    }
    return write_vector(
        path,
        geoms,
        fields,
        crs,
        geometry_type="Polygon" if as_polygons else "Point",
        provenance=provenance,
    )
