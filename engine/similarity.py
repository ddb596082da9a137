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

from .atomic import atomic_path
from .errors import CancelledError, InputError
from .geo_io import provenance_tags, write_grid_raster, write_vector
from .grid import Bounds, TileGrid

if TYPE_CHECKING:
    from .query import Query
    from .store import EmbeddingStore

CHUNK_TILES = 4096
"""Tiles per chunk: small enough that the widened chunk (4096 x D x 4 bytes) stays in cache."""

SCORE_WORKERS = min(4, os.cpu_count() or 1)
"""Threads that score chunks; numpy releases the GIL, so this scales with the cores."""

EXACT_BELOW = 1 << 16
""":func:`calibrate` ranks fewer valid scores than this exactly (a sort costs < 10 ms there)."""

CAL_BINS = 1 << 18
"""Histogram bins over ``[min, max]`` of the scores in :func:`calibrate`."""

CAL_MAX_ERROR = 0.01
"""Largest deviation (percentile points) :func:`calibrate` accepts from the exact mean rank;
beyond it (heavy ties or a very peaked distribution) it falls back to the exact ranking."""

HIST_BINS = 1 << 20
"""Most bins of :func:`score_histogram` over the cosine range (bin width ~2e-6); smaller stores
get ~4 bins per tile (at least 2^16), so the histogram's fixed cost scales with the store."""

HIST_LIMIT = 1.0078125
"""Histogram range ``[-HIST_LIMIT, HIST_LIMIT]``: cosine plus float16 rounding headroom."""

CHUNKED_ABOVE_TILES = 20_000_000
"""Stores with more tiles are queried chunk by chunk by :func:`heatmap_auto` / :func:`hits_auto`
(an in-memory heatmap of 2*10^7 tiles holds ~160 MB of score and percentile arrays)."""

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
    for r0, r1, block in _scored_chunks(scorer, workers or SCORE_WORKERS, is_canceled):
        yield r0, r1, block
        if progress is not None:
            progress(r1 / rows)


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


@dataclass(frozen=True, eq=False)
class Calibration:
    """A monotone map from cosine scores to percentiles, built from a histogram of the scores.

    Inside each bin the map is linear between the ranks at the bin's edges (and it runs exactly
    from the lowest score, percentile 0, to the highest, percentile 100), so it is monotone,
    increasing over the scores it was built from, and equal scores share a value. A score in a
    bin holding ``c`` scores is at most ``c - 1/2`` ranks from its exact mean rank:
    :attr:`max_error` is that bound in percentile points for the fullest bin (plus float32
    rounding, < 1e-5 points).
    """

    lo: float  # score at the lower edge of bin 0
    scale: float  # bins per unit of score
    base: np.ndarray  # float32 [bins]: percentile of the bin's line at its lower edge
    slope: np.ndarray  # float32 [bins]: percentile points per bin width
    n: int  # number of scores counted
    vmin: float  # lowest score counted (percentile 0)
    vmax: float  # highest score counted (percentile 100)
    max_error: float  # bound on |percentile - exact mean-rank percentile|, percentile points

    @classmethod
    def from_counts(
        cls, counts: np.ndarray, lo: float, hi: float, vmin: float, vmax: float
    ) -> Calibration:
        """Build the map from bin ``counts`` over ``[lo, hi]`` and the exact extreme scores."""
        counts = np.asarray(counts, dtype=np.int64)
        bins, n = counts.size, int(counts.sum())
        if n == 0:
            raise InputError("no valid tile to calibrate against; is the area all nodata?")
        scale = bins / (hi - lo)
        knot = np.concatenate([[0], np.cumsum(counts)]) - 0.5  # rank at each bin edge
        base, slope = knot[:-1].copy(), np.diff(knot)
        t0, t1 = cls._t(np.array([vmin, vmax]), lo, scale, bins)
        j0, j1 = (min(int(t), bins - 1) for t in (t0, t1))
        # the end bins run through (vmin, rank 0) and (vmax, rank n - 1) instead of their edges
        if j0 == j1:
            slope[j0] = (n - 1) / (t1 - t0) if t1 > t0 else 0.0
            base[j0] = (n - 1) / 2.0 if t1 <= t0 else -(t0 - j0) * slope[j0]
        else:
            slope[j0] = knot[j0 + 1] / (j0 + 1 - t0)
            base[j0] = -(t0 - j0) * slope[j0]
            slope[j1] = (n - 1 - knot[j1]) / (t1 - j1) if t1 > j1 else 0.0
            base[j1] = knot[j1] if t1 > j1 else n - 1.0
        to_pct = 100.0 / (n - 1) if n > 1 else 0.0
        # percent units in float32: half the gathered bytes, resolution 6e-6 points
        base, slope = (base * to_pct).astype(np.float32), (slope * to_pct).astype(np.float32)
        if n == 1:
            base[:], slope[:] = 100.0, 0.0
        err = 100.0 * (counts.max() - 0.5) / (n - 1) if n > 1 else 0.0
        return cls(float(lo), float(scale), base, slope, n, float(vmin), float(vmax), err)

    @classmethod
    def from_scores(cls, scores: np.ndarray, bins: int = CAL_BINS) -> Calibration:
        """Build the map from finite ``scores`` with ``bins`` bins over their own range."""
        vals = np.asarray(scores, dtype=np.float32).reshape(-1)
        return cls._fit(vals[np.isfinite(vals)], bins)[0]

    @classmethod
    def _fit(cls, vals: np.ndarray, bins: int) -> tuple[Calibration, np.ndarray, np.ndarray]:
        """The calibration of finite ``vals`` and their bin positions ``t`` and bins ``j``."""
        if vals.size == 0:
            raise InputError("no valid tile to calibrate against; is the area all nodata?")
        vmin, vmax = float(vals.min()), float(vals.max())
        hi = vmax if vmax > vmin else vmin + 1.0
        scale = bins / (hi - vmin)
        t = cls._t(vals, vmin, scale, bins, clip=False)  # vmin <= vals <= vmax: no clipping
        j = cls._bin(t, bins)
        cal = cls.from_counts(np.bincount(j, minlength=bins), vmin, hi, vmin, vmax)
        return cal, t, j

    @staticmethod
    def _t(vals: np.ndarray, lo: float, scale: float, bins: int, clip: bool = True) -> np.ndarray:
        """Position of each score in bin units (float64; bins are its integer parts)."""
        t = np.array(vals, dtype=np.float64)  # a copy: it is scaled in place
        t -= lo
        t *= scale
        if clip:  # np.maximum/minimum in place: np.clip is several times slower here
            np.maximum(t, 0.0, out=t)
            np.minimum(t, float(bins), out=t)
        return t

    @staticmethod
    def _bin(t: np.ndarray, bins: int) -> np.ndarray:
        j = t.astype(np.intp)
        return np.minimum(j, bins - 1, out=j)

    @property
    def bins(self) -> int:
        return int(self.base.size)

    def _apply(self, t: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Percentiles (float32) from positions ``t`` and bins ``j``."""
        frac = (t - j).astype(np.float32)
        frac *= self.slope[j]
        frac += self.base[j]
        np.maximum(frac, 0.0, out=frac)
        return np.minimum(frac, 100.0, out=frac)

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """Percentile (float32, 0..100) of each score; NaN stays NaN."""
        scores = np.asarray(scores, dtype=np.float32)
        out = np.full(scores.shape, np.nan, dtype=np.float32)
        finite = np.isfinite(scores)
        t = self._t(scores[finite], self.lo, self.scale, self.bins)
        out[finite] = self._apply(t, self._bin(t, self.bins))
        return out


def _calibrate_exact(scores: np.ndarray) -> np.ndarray:
    """The exact mean-rank percentiles (argsort): the reference :func:`calibrate` falls back on."""
    scores = np.asarray(scores, dtype=np.float32)
    out = np.full(scores.shape, np.nan, dtype=np.float32)
    finite = np.isfinite(scores)
    vals = scores[finite]
    n = vals.size
    if n == 0:
        return out
    if n == 1:
        out[finite] = 100.0
        return out
    order = np.argsort(vals)
    ordered = vals[order]
    # runs of equal scores: every member gets the run's mean rank (first + last) / 2
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], n] - 1
    run = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n]))
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = (starts[run] + ends[run]) * (50.0 / (n - 1))
    out[finite] = ranks
    return out


def calibrate(scores: np.ndarray) -> np.ndarray:
    """Percentile rank of each score within the valid (finite) area, in [0, 100].

    The lowest score maps to 0 and the highest to 100; equal scores share one value and higher
    scores get higher values, so the mapping is monotone and tie-consistent. NaN stays NaN; a
    single valid score maps to 100. With fewer than :data:`EXACT_BELOW` valid scores the value
    is the exact mean rank; above, it comes from a :class:`Calibration` of :data:`CAL_BINS` bins
    and is at most :data:`CAL_MAX_ERROR` percentile points from the exact mean rank (exact
    ranking is used whenever the histogram cannot guarantee that).
    """
    scores = np.asarray(scores, dtype=np.float32)
    finite = np.isfinite(scores)
    n = int(np.count_nonzero(finite))
    if n < EXACT_BELOW:
        return _calibrate_exact(scores)
    cal, t, j = Calibration._fit(scores[finite], CAL_BINS)
    if cal.max_error > CAL_MAX_ERROR:
        return _calibrate_exact(scores)
    out = np.full(scores.shape, np.nan, dtype=np.float32)
    out[finite] = cal._apply(t, j)
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
    """Write hits as points (tile centres) or polygons (tile footprints) to .gpkg or .geojson.

    Fields: rank, score, percentile, row, col. The CRS is set on the layer; provenance goes into
    the GeoPackage metadata. The write is atomic.
    """
    import shapely

    if as_polygons:
        geoms = [shapely.box(*h.bounds) for h in hits]
    else:
        geoms = [shapely.Point(h.x, h.y) for h in hits]
    fields = {
        "rank": np.array([h.rank for h in hits], dtype=np.int32),
        "score": np.array([h.score for h in hits], dtype=np.float64),
        "percentile": np.array([h.percentile for h in hits], dtype=np.float64),
        "row": np.array([h.row for h in hits], dtype=np.int32),
        "col": np.array([h.col for h in hits], dtype=np.int32),
    }
    return write_vector(
        path,
        [shapely.to_wkb(g) for g in geoms],
        fields,
        crs,
        geometry_type="Polygon" if as_polygons else "Point",
        provenance=provenance,
    )


# -- chunk by chunk: memory independent of the number of grid rows ----------------------------


class _Histogram:
    """Counts scores into fixed bins over ``[-HIST_LIMIT, HIST_LIMIT]``, a batch at a time."""

    def __init__(self, bins: int | None, n_tiles: int) -> None:
        if bins is None:
            bins = min(HIST_BINS, max(1 << 16, 1 << (4 * n_tiles).bit_length()))
        if bins < 2:
            raise InputError(f"need at least 2 histogram bins (got {bins})")
        self.bins, self.lo = int(bins), -HIST_LIMIT
        self.scale = self.bins / (2.0 * HIST_LIMIT)
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.vmin, self.vmax = np.inf, -np.inf

    def add(self, vals: np.ndarray) -> None:
        """Count finite float32 scores (1-D)."""
        if vals.size == 0:
            return
        self.vmin = min(self.vmin, float(vals.min()))
        self.vmax = max(self.vmax, float(vals.max()))
        t = Calibration._t(vals, self.lo, self.scale, self.bins)
        self.pending.append(Calibration._bin(t, self.bins))
        self.n_pending += vals.size
        # one bincount per ~bins scores: a bincount per small chunk would cost O(bins) each
        if self.n_pending >= self.bins:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            idx = np.concatenate(self.pending)
            self.counts += np.bincount(idx, minlength=self.bins)
        self.pending, self.n_pending = [], 0

    def calibration(self) -> Calibration | None:
        """The :class:`Calibration` of everything counted, None if nothing was."""
        self._flush()
        if not np.isfinite(self.vmin):
            return None
        return Calibration.from_counts(self.counts, self.lo, -self.lo, self.vmin, self.vmax)


def _valid_scores(store: Any, r0: int, r1: int, block: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat in-chunk indices and scores of the valid, finite tiles of rows ``r0:r1``."""
    scores = block[..., 0].reshape(-1)
    keep = np.asarray(store.valid[r0:r1], dtype=bool).reshape(-1) & np.isfinite(scores)
    local = np.flatnonzero(keep)
    return local, scores[local]


def _part(
    progress: Callable[[float], None] | None, a: float, b: float
) -> Callable[[float], None] | None:
    return None if progress is None else (lambda f: progress(a + (b - a) * f))


def score_histogram(
    store: EmbeddingStore,
    qvec: np.ndarray | Query,
    bins: int | None = None,
    chunk_rows: int | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> Calibration:
    """One pass over the store: the :class:`Calibration` of the query's scores on valid tiles.

    ``bins`` fixed bins over the cosine range (default: by store size, up to :data:`HIST_BINS`
    of 2e-6); its ``max_error`` states how far (percentile points) a percentile can be from
    the exact mean rank.
    """
    vec = _query_vector(store, qvec)
    hist = _Histogram(bins, store.grid.n_tiles)
    for r0, r1, block in chunked_dot(
        store, vec[:, None], chunk_rows, progress, is_canceled, workers
    ):
        hist.add(_valid_scores(store, r0, r1, block)[1])
    cal = hist.calibration()
    if cal is None:
        raise InputError("the store has no valid tile; there is nothing to calibrate against")
    return cal


def _heatmap_profile(grid: TileGrid, count: int) -> dict[str, Any]:
    """The GeoTIFF profile of :func:`~.geo_io.write_grid_raster` for a float32 heatmap."""
    from affine import Affine

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.cols,
        "height": grid.rows,
        "count": count,
        "dtype": "float32",
        "crs": grid.crs,
        "transform": Affine.from_gdal(*grid.geotransform),
        "nodata": float("nan"),
        "compress": "deflate",
    }
    if grid.rows >= 256 and grid.cols >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def write_heatmap_chunked(
    path: str | Path,
    store: EmbeddingStore,
    qvec: np.ndarray | Query,
    percentiles: bool = True,
    provenance: Mapping[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    bins: int | None = None,
    workers: int | None = None,
) -> Path:
    """:func:`write_heatmap` of :func:`similarity` without holding the ``[rows, cols]`` scores.

    Pass 1 (only with ``percentiles``) builds a :func:`score_histogram`; pass 2 scores again
    and writes 256-row bands of the GeoTIFF (band 1 cosine, band 2 percentile from the
    histogram, at most ``Calibration.max_error`` points from the exact rank). Same bands, tags,
    CRS and nodata as :func:`write_heatmap`; the file is written beside ``path`` and renamed, so
    a failure or a cancel leaves nothing. Memory: two bands of 256 x cols floats, the histogram
    (up to ~40 bytes x ``bins`` while it is turned into a map: 40 MiB at most) and a few chunks.
    """
    import rasterio
    from rasterio.windows import Window

    vec = _query_vector(store, qvec)
    grid = store.grid
    if grid.rows == 0 or grid.cols == 0:
        raise InputError("the store's grid is empty; there is nothing to write")
    cal = None
    if percentiles:
        hist = _Histogram(bins, store.grid.n_tiles)
        for r0, r1, block in chunked_dot(
            store, vec[:, None], None, _part(progress, 0.0, 0.5), is_canceled, workers
        ):
            hist.add(_valid_scores(store, r0, r1, block)[1])
        cal = hist.calibration()
    profile = _heatmap_profile(grid, 2 if percentiles else 1)
    # chunks that tile the 256-row GeoTIFF blocks exactly, so each band is written once
    band = 256 if profile.get("tiled") else _row_step(grid.cols, None)
    step = band if band != 256 else 1 << (_row_step(grid.cols, None).bit_length() - 1)
    buf = np.empty((2 if percentiles else 1, band, grid.cols), dtype=np.float32)
    done = _part(progress, 0.5 if percentiles else 0.0, 1.0)
    with atomic_path(path, suffix=".tif") as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i in range(profile["count"]):
                dst.set_band_description(i + 1, _BAND_NAMES[i])
                dst.update_tags(i + 1, **_BAND_TAGS[i])
            dst.update_tags(**provenance_tags(_heatmap_provenance(store, provenance)))
            b0 = 0
            for r0, r1, block in chunked_dot(store, vec[:, None], step, done, is_canceled, workers):
                part = buf[0, r0 - b0 : r1 - b0]
                part[...] = block[..., 0]
                part[~np.asarray(store.valid[r0:r1], dtype=bool)] = np.nan
                if percentiles:  # per chunk: the float64 temporaries stay chunk-sized
                    buf[1, r0 - b0 : r1 - b0] = cal.percentiles(part) if cal else np.nan
                if r1 - b0 < band and r1 < grid.rows:
                    continue
                dst.write(buf[:, : r1 - b0], window=Window(0, b0, grid.cols, r1 - b0))
                b0 = r1
    return Path(path)


def top_k_chunked(
    store: EmbeddingStore,
    qvec: np.ndarray | Query,
    k: int,
    min_distance_tiles: int = 1,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    bins: int | None = None,
    chunk_rows: int | None = None,
    workers: int | None = None,
) -> list[Hit]:
    """``top_k(store, similarity(store, qvec), k, min_distance_tiles)`` in one streaming pass.

    Every chunk offers its best k·(2r+1)^2 tiles (ties: first in row-major order) to a running
    candidate set, and the scores go into a histogram; the greedy NMS then runs on the merged
    candidates, so the hits (tiles, order, scores) are exactly those of :func:`top_k`. Their
    percentiles come from the histogram (within ``Calibration.max_error`` of the exact rank).
    """
    _check_k(k, min_distance_tiles)
    vec = _query_vector(store, qvec)
    r = int(min_distance_tiles)
    m = k * (2 * r + 1) ** 2
    hist = _Histogram(bins, store.grid.n_tiles)
    idx, val = np.empty(0, np.int64), np.empty(0, np.float32)
    cols = store.grid.cols
    for r0, r1, block in chunked_dot(
        store, vec[:, None], chunk_rows, progress, is_canceled, workers
    ):
        local, vals = _valid_scores(store, r0, r1, block)
        hist.add(vals)
        if idx.size >= m:  # only scores at least the current m-th best can still enter
            keep = vals >= val.min()
            local, vals = local[keep], vals[keep]
        if vals.size:
            both = np.concatenate([idx, local.astype(np.int64) + r0 * cols])
            idx, val = _best(both, np.concatenate([val, vals]), m)
    cal = hist.calibration()
    if cal is None:
        return []
    order = np.lexsort((idx, -val))
    idx, val = idx[order], val[order]
    return _nms(store.grid, idx, val, cal.percentiles(val), k, r)


def _use_chunked(store: EmbeddingStore, chunked: bool | None) -> bool:
    return store.grid.n_tiles > CHUNKED_ABOVE_TILES if chunked is None else bool(chunked)


def heatmap_auto(
    path: str | Path,
    store: EmbeddingStore,
    qvec: np.ndarray | Query,
    percentiles: bool = True,
    provenance: Mapping[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    chunked: bool | None = None,
) -> Path:
    """Write a heatmap GeoTIFF, in memory or chunk by chunk (``chunked=None``: by store size).

    Above :data:`CHUNKED_ABOVE_TILES` tiles this is :func:`write_heatmap_chunked`, otherwise
    :func:`write_heatmap` of :func:`similarity`; both write the same bands, tags and CRS.
    """
    if _use_chunked(store, chunked):
        return write_heatmap_chunked(
            path, store, qvec, percentiles, provenance, progress, is_canceled
        )
    scores = similarity(store, qvec, progress=progress, is_canceled=is_canceled)
    _check(is_canceled)
    return write_heatmap(path, store, scores, percentiles, provenance)


def hits_auto(
    store: EmbeddingStore,
    qvec: np.ndarray | Query,
    k: int,
    min_distance_tiles: int = 1,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    chunked: bool | None = None,
) -> list[Hit]:
    """Top-k hits with NMS, in memory or chunk by chunk (``chunked=None``: by store size).

    Both paths return the same tiles, order and scores; percentiles differ by at most the
    calibration error bound (:data:`CAL_MAX_ERROR` in memory, ``Calibration.max_error`` else).
    """
    if _use_chunked(store, chunked):
        return top_k_chunked(store, qvec, k, min_distance_tiles, progress, is_canceled)
    _check_k(k, min_distance_tiles)
    scores = similarity(store, qvec, progress=progress, is_canceled=is_canceled)
    return top_k(store, scores, k, min_distance_tiles)
