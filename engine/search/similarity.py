"""Similarity over an embedding store in memory: cosine heatmaps with their percentile band.

Two ways to query:

- in memory (:func:`similarity` -> ``[rows, cols]`` scores, then
  :func:`~.calibration.calibrate`, :func:`write_heatmap`, :func:`~.hits.top_k`): fastest up to
  some 10^7 tiles;
- chunk by chunk (:mod:`.streaming`): peak memory independent of the number of grid rows, for
  10^7-10^8 tiles. :func:`~.streaming.heatmap_auto` and :func:`~.streaming.hits_auto` pick one
  by store size.

Percentiles of large score sets come from a fine histogram (:class:`~.calibration.Calibration`):
a monotone, piecewise-linear map whose largest deviation from the exact mean rank is known and
reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geo.render import Render, render_for
from ..geo.tiff import write_grid_raster
from ..grid import TileGrid
from .calibration import calibrate
from .scoring import chunked_dot, query_vector

if TYPE_CHECKING:
    from ..store.npy import EmbeddingStore
    from .query import Query


def similarity(
    store: EmbeddingStore,
    qvec: np.ndarray | Query,
    chunk_rows: int | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Cosine similarity of every tile to the query: float32 ``[rows, cols]``, NaN where invalid.

    Args:
        store: The embedding store (rows are L2-normalised, invalid tiles are zero).
        qvec: The query vector ``[D]`` (normalised here) or a :class:`~.query.Query`.
        chunk_rows: Grid rows per chunk (default: about 4096 tiles per chunk).
        progress: Called with the fraction done.
        is_canceled: Polled between chunks; cancellation raises CancelledError.
        workers: Scoring threads (default :data:`SCORE_WORKERS`); the result does not depend
            on it.
    """
    vec = query_vector(store, qvec)
    out = np.empty(store.embeddings.shape[:2], dtype=np.float32)
    for r0, r1, block in chunked_dot(
        store, vec[:, None], chunk_rows, progress, is_canceled, workers
    ):
        out[r0:r1] = block[..., 0]
    out[~np.asarray(store.valid, dtype=bool)] = np.nan
    return out


def write_heatmap(
    path: str | Path,
    store: EmbeddingStore,
    scores: np.ndarray,
    percentiles: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a heatmap GeoTIFF: band 1 raw cosine, band 2 percentile (optional); NaN = nodata.

    The CRS and geotransform come from ``store.grid``; provenance (model hash, query description,
    parameters) is stored as ``UNIGEO_*`` GDAL metadata tags. The write is atomic.
    """
    prov = heatmap_provenance(store, provenance)
    return write_score_map(path, store.grid, scores, percentiles, prov, render_for(store))


def write_score_map(
    path: str | Path,
    grid: TileGrid,
    scores: np.ndarray,
    percentiles: bool = True,
    provenance: Mapping[str, Any] | None = None,
    render: Render | None = None,
) -> Path:
    """:func:`write_heatmap` of scores on any tile grid (a store's, or a GPS field's cells)."""
    scores = np.asarray(scores, dtype=np.float32)
    bands = [scores]
    if percentiles:
        bands.append(calibrate(scores))
    return write_grid_raster(
        path,
        grid,
        bands,
        dtype="float32",
        nodata=float("nan"),
        descriptions=HEATMAP_BANDS[: len(bands)],
        band_tags=HEATMAP_BAND_TAGS[: len(bands)],
        provenance=dict(provenance or {}),
        render=render,
    )


HEATMAP_BANDS = ["cosine similarity", "percentile within area"]
HEATMAP_BAND_TAGS = [{"UNITS": "cosine"}, {"UNITS": "percent"}]


def heatmap_provenance(
    store: EmbeddingStore, provenance: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a heatmap of ``store`` records: the store's model hash, then ``provenance``."""
    return {"model_hash": getattr(store, "model_hash", ""), **(provenance or {})}
