"""Similarity search over an embedding store: cosine heatmaps, percentile calibration, top-k hits.

Scores are computed in row chunks straight from the float16 store (a memmap or a Zarr array: only
``store.embeddings[r0:r1]`` is ever read), so a store is never copied whole as float32. The
float16 -> float32 widening is done with integer bit operations (see :func:`_widen_f16_bits`),
~8x faster than numpy's own float16 cast on CPUs without AVX-512, and chunks are scored on a small
thread pool (numpy releases the GIL in both the widening and the matrix product).

Two ways to query:

- in memory (:func:`similarity` -> ``[rows, cols]`` scores, then :func:`calibrate`,
  :func:`write_heatmap`, :func:`top_k`): fastest up to some 10^7 tiles;
- chunk by chunk (:func:`score_histogram`, :func:`write_heatmap_chunked`,
  :func:`top_k_chunked`): peak memory independent of the number of grid rows, for 10^7-10^8
  tiles. :func:`heatmap_auto` and
  :func:`hits_auto` pick one by store size.

Percentiles of large score sets come from a fine histogram (:class:`Calibration`): a monotone,
piecewise-linear map whose largest deviation from the exact mean rank is known and reported.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# re-exported: callers import calibration from here too
from .calibration import (  # noqa: F401
    CAL_BINS,
    CAL_MAX_ERROR,
    EXACT_BELOW,
    Calibration,
    _calibrate_exact,
    calibrate,
)
from .errors import CancelledError, InputError, StoreError
from .geo.geometry import box_wkb, point_wkb
from .geo.render import render_for
from .geo.tiff import write_grid_raster
from .geo.vector import write_vector
from .grid import Bounds, TileGrid

if TYPE_CHECKING:
    from .query import Query
    from .store.npy import EmbeddingStore

CHUNK_TILES = 4096
"""Tiles per chunk: small enough that the widened chunk (4096 x D x 4 bytes) stays in cache."""

SCORE_WORKERS = min(4, os.cpu_count() or 1)
"""Threads that score chunks; numpy releases the GIL, so this scales with the cores."""


# A float16 bit pattern shifted left by 13 is the float32 with the same mantissa but an exponent
# 112 too small (the bias difference 127 - 15); scaling the *other* matmul operand by 2^112 undoes
# it exactly, also for float16 subnormals (they land on float32 subnormals).
_F16_RESCALE = np.float32(2.0**112)
_CLEAR_SIGN_SPILL = np.int32(~0x70000000)  # sign-extension ones that spill into bits 28..30


def _widen_f16_bits(src: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """Float16 ``src`` [n, D] into ``buf`` [n, D] int32 whose bits read as float32 x 2^-112."""
    buf[...] = src.view(np.int16)  # sign-extends: the sign bit lands on bits 15..31
    buf <<= 13
    buf &= _CLEAR_SIGN_SPILL
    return buf.view(np.float32)


def _check(is_canceled: Callable[[], bool] | None) -> None:
    if is_canceled is not None and is_canceled():
        raise CancelledError("cancelled by the user; no output was written")


def _row_step(cols: int, chunk_rows: int | None) -> int:
    return int(chunk_rows or max(1, CHUNK_TILES // max(cols, 1)))


class _Scorer:
    """Reads, widens and multiplies one row chunk by ``mat``; one widening buffer per thread."""

    def __init__(self, emb: Any, mat: np.ndarray, step: int) -> None:
        self.emb, self.step = emb, step
        self.rows, self.cols, self.dim = emb.shape
        self.fast = emb.dtype == np.float16 and emb.dtype.isnative
        self.mat = np.ascontiguousarray(mat * _F16_RESCALE) if self.fast else mat
        self.local = threading.local()

    def __call__(self, r0: int) -> tuple[int, int, np.ndarray]:
        r1 = min(self.rows, r0 + self.step)
        src = np.asarray(self.emb[r0:r1]).reshape(-1, self.dim)
        if self.fast:
            buf = getattr(self.local, "buf", None)
            if buf is None:
                buf = self.local.buf = np.empty((self.step * self.cols, self.dim), np.int32)
            block = _widen_f16_bits(src, buf[: len(src)])
        else:
            block = np.asarray(src, dtype=np.float32)
        mat = self.mat
        # a 1-column product goes through gemv, which is 2x faster than a 1-column gemm here
        prod = block @ mat[:, 0] if mat.shape[1] == 1 else block @ mat
        return r0, r1, prod.reshape(r1 - r0, self.cols, mat.shape[1])


class _SingleThreadedBlas:
    """Pins BLAS to one thread while any scoring pool runs (process-wide, reference-counted).

    OpenBLAS called from several threads at once serialises on its own thread pool, and its
    idle threads spin on the cores our workers need: measured 2-5x *slower* than one thread.
    One BLAS thread per worker costs nothing here (a 4096 x 128 gemv gains nothing from two).
    The pin is counted so that overlapping queries restore the original setting only once.
    """

    _lock = threading.Lock()
    _users = 0
    _limiter: Any = None
    _controller: Any = None

    @classmethod
    def available(cls) -> bool:
        """Whether threadpoolctl is importable (without it, scoring stays single-threaded)."""
        with cls._lock:
            if cls._controller is None:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:
                    cls._controller = False
                else:
                    cls._controller = ThreadpoolController()
            return cls._controller is not False

    def __enter__(self) -> _SingleThreadedBlas:
        cls = type(self)
        if not cls.available():
            raise RuntimeError("threadpoolctl is needed to pin BLAS; check available() first")
        with cls._lock:
            if cls._users == 0:
                cls._limiter = cls._controller.limit(limits=1, user_api="blas")
            cls._users += 1
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self)
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                cls._limiter.restore_original_limits()
                cls._limiter = None


def _scored_chunks(
    scorer: _Scorer, workers: int, is_canceled: Callable[[], bool] | None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Chunks in row order; with workers > 1 up to 2 x workers are scored ahead on a pool."""
    starts = range(0, scorer.rows, scorer.step)
    if workers <= 1 or len(starts) < 2 or not _SingleThreadedBlas.available():
        for r0 in starts:
            _check(is_canceled)
            yield scorer(r0)
        return
    todo = iter(starts)
    with (
        _SingleThreadedBlas(),
        ThreadPoolExecutor(workers, thread_name_prefix="unigeo-score") as pool,
    ):
        pending = deque(pool.submit(scorer, r0) for r0 in itertools.islice(todo, 2 * workers))
        try:
            while pending:
                _check(is_canceled)
                done = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(scorer, nxt))
                yield done
        finally:  # cancelled, failed or abandoned: do not score the rest
            for fut in pending:
                fut.cancel()


def chunked_dot(
    store: EmbeddingStore,
    mat: np.ndarray,
    chunk_rows: int | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(r0, r1, emb[r0:r1] @ mat)`` as float32 ``[r1 - r0, cols, K]`` blocks, in order.

    Args:
        store: The embedding store (``embeddings`` [rows, cols, D], float16 or float32).
        mat: ``[D, K]`` matrix (query vectors or class prototypes / weights as columns).
        chunk_rows: Grid rows per chunk; by default about :data:`CHUNK_TILES` tiles.
        progress: Called with the fraction done after every chunk (in the calling thread).
        is_canceled: Polled before every chunk; when it returns True, raises CancelledError.
        workers: Scoring threads (default :data:`SCORE_WORKERS`); the blocks are identical for
            any number, only faster.
    """
    emb = store.embeddings
    rows, cols, dim = emb.shape
    mat = np.asarray(mat, dtype=np.float32)
    if mat.ndim != 2 or mat.shape[0] != dim:
        raise InputError(
            f"query has dimension {mat.shape[0] if mat.ndim else 0} but the store holds "
            f"{dim}-d embeddings; was the store made with another model?"
        )
    scorer = _Scorer(emb, mat, _row_step(cols, chunk_rows))
    # stored rows are unit vectors (or zero): |row . w| <= |w| (Cauchy-Schwarz), up to float16
    # rounding; anything else is a damaged store (NaN/Inf or huge values gave "cosines" of 10^5)
    limit = 1.01 * np.linalg.norm(mat, axis=0) + 1e-6
    for r0, r1, block in _scored_chunks(scorer, workers or SCORE_WORKERS, is_canceled):
        check_scores(store, r0, block, limit)
        yield r0, r1, block
        if progress is not None:
            progress(r1 / rows)


def check_scores(store: Any, r0: int, block: np.ndarray, limit: np.ndarray) -> None:
    """StoreError when a scored block ``[rows, cols, K]`` (from row ``r0``) exceeds ``limit``."""
    ok = np.abs(block) <= limit  # NaN compares False
    if ok.all():
        return
    r, c = np.argwhere(~ok.all(axis=-1))[0]
    raise StoreError(
        f"the embedding store {getattr(store, 'folder', '')} is damaged: the tile at row "
        f"{r0 + int(r)}, column {int(c)} holds values that no embedding can have (NaN, Inf or "
        "too large); delete the store and embed the raster again"
    )


def _query_vector(store: EmbeddingStore, qvec: np.ndarray | Query) -> np.ndarray:
    vec = qvec.vector() if hasattr(qvec, "vector") else np.asarray(qvec, dtype=np.float32)
    vec = np.asarray(vec, dtype=np.float32).reshape(-1)
    if vec.shape[0] != store.dim:
        raise InputError(
            f"query has dimension {vec.shape[0]} but the store holds {store.dim}-d embeddings; "
            "was the store made with another model?"
        )
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError("the query vector is zero or not finite; check the query terms")
    return vec / norm


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
    vec = _query_vector(store, qvec)
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
    scores = np.asarray(scores, dtype=np.float32)
    bands = [scores]
    if percentiles:
        bands.append(calibrate(scores))
    return write_grid_raster(
        path,
        store.grid,
        bands,
        dtype="float32",
        nodata=float("nan"),
        descriptions=_BAND_NAMES[: len(bands)],
        band_tags=_BAND_TAGS[: len(bands)],
        provenance=_heatmap_provenance(store, provenance),
        render=render_for(store),
    )


_BAND_NAMES = ["cosine similarity", "percentile within area"]
_BAND_TAGS = [{"UNITS": "cosine"}, {"UNITS": "percent"}]


def _heatmap_provenance(
    store: EmbeddingStore, provenance: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {"model_hash": getattr(store, "model_hash", ""), **(provenance or {})}


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


def _best(idx: np.ndarray, vals: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
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
    idx, vals = _best(idx, flat[idx], k * (2 * radius + 1) ** 2)
    # sort on (-score, index): ties resolve to the first tile in row-major order
    return idx[np.lexsort((idx, -vals))]


def _check_k(k: int, min_distance_tiles: int) -> None:
    if k < 1 or min_distance_tiles < 0:
        raise InputError("need k >= 1 and min_distance_tiles >= 0")


def _nms(
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
    _check_k(k, min_distance_tiles)
    pct = calibrate(scores) if percentiles is None else np.asarray(percentiles)
    cand = _candidates(scores, k, int(min_distance_tiles))
    flat_s, flat_p = scores.reshape(-1), pct.reshape(-1)
    return _nms(grid, cand, flat_s[cand], flat_p[cand], k, int(min_distance_tiles))


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
