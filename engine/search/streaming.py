"""Queries chunk by chunk: heatmaps and top-k with memory independent of the store's rows.

For stores of 10^7-10^8 tiles a ``[rows, cols]`` score map no longer fits comfortably:
:func:`score_histogram` calibrates percentiles in one pass, :func:`write_heatmap_chunked` writes
the GeoTIFF in row bands on a second pass, and :func:`top_k_chunked` keeps only each chunk's best
candidates. :func:`heatmap_auto` and :func:`hits_auto` choose between these and the in-memory
functions of :mod:`.similarity` by store size.

Parity with the in-memory path (tests/engine/test_streaming_parity.py): the same hit tiles,
order and scores, the same cosine band and nodata cells. Percentiles follow the exact
convention of :func:`calibrate` (ties share their mean rank): hits get the exact mean rank, the
heatmap is within ``Calibration.max_error`` (:data:`CAL_MAX_ERROR` = 0.01 points once big tie
groups are listed exactly by an extra pass), so both paths agree within 0.02 points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..geo.render import render_for
from ..geo.tiff import grid_profile, grid_tiff
from .calibration import Calibration, TieRefiner
from .hits import Hit, best_subset, check_k, nms, top_k
from .scoring import check_canceled, chunked_dot, query_vector, row_step
from .similarity import (
    HEATMAP_BAND_TAGS,
    HEATMAP_BANDS,
    heatmap_provenance,
    similarity,
    write_heatmap,
)

if TYPE_CHECKING:
    from ..store.npy import EmbeddingStore
    from .query import Query

HIST_BINS = 1 << 20
"""Most bins of :func:`score_histogram` over the cosine range (bin width ~2e-6); smaller stores
get ~4 bins per tile (at least 2^16), so the histogram's fixed cost scales with the store."""

HIST_LIMIT = 1.0078125
"""Histogram range ``[-HIST_LIMIT, HIST_LIMIT]``: cosine plus float16 rounding headroom."""

CHUNKED_ABOVE_TILES = 20_000_000
"""Stores with more tiles are queried chunk by chunk by :func:`heatmap_auto` / :func:`hits_auto`
(an in-memory heatmap of 2*10^7 tiles holds ~160 MB of score and percentile arrays)."""


class Histogram:
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
        t = Calibration.bin_position(vals, self.lo, self.scale, self.bins)
        self.pending.append(Calibration.bin_index(t, self.bins))
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


def _chunk_bands(
    store: Any, r0: int, r1: int, block: np.ndarray, cal: Any, count: int
) -> list[np.ndarray]:
    """The cosine (and percentile) rows of one scored chunk, NaN where a tile is invalid."""
    cos = np.array(block[..., 0], dtype=np.float32)
    cos[~np.asarray(store.valid[r0:r1], dtype=bool)] = np.nan
    if count == 1:
        return [cos]
    return [cos, cal.percentiles(cos) if cal else np.full_like(cos, np.nan)]


def _edge_filled(
    render: Any, store: Any, vec: np.ndarray, cal: Any, r0: int, rows: list[np.ndarray]
) -> list[np.ndarray]:
    """A chunk's bands with every skipped edge cell showing its neighbour (``Render.fill``).

    As the in-memory path draws them; a neighbour in the row just above or below the chunk is
    scored here (a few tiles of at most two rows).
    """
    if render.source is None:
        return rows
    h, cols = rows[0].shape
    src = render.source[r0 : r0 + h].reshape(-1)
    lo, hi = r0 * cols, (r0 + h) * cols
    own = np.arange(lo, hi)
    if np.array_equal(src, own):
        return rows
    inside = (src >= lo) & (src < hi)
    outer = src[~inside]
    extra: list[np.ndarray] = []
    if outer.size:
        rr, cc = np.divmod(outer, cols)
        emb = np.empty((outer.size, vec.shape[0]), dtype=np.float32)
        for r in np.unique(rr):  # whole rows: works for memory-mapped and Zarr stores alike
            at = rr == r
            emb[at] = np.asarray(store.embeddings[int(r)], dtype=np.float32)[cc[at]]
        cos = (emb @ np.asarray(vec, dtype=np.float32)).astype(np.float32)
        cos[~np.asarray(store.valid, dtype=bool)[rr, cc]] = np.nan
        extra = [cos]
        if len(rows) > 1:
            extra.append(cal.percentiles(cos) if cal else np.full_like(cos, np.nan))
    out = []
    for i, band in enumerate(rows):
        flat = band.reshape(-1)
        new = np.empty_like(flat)
        new[inside] = flat[src[inside] - lo]
        if outer.size:
            new[~inside] = extra[i]
        out.append(new.reshape(h, cols))
    return out


def _part(
    progress: Callable[[float], None] | None, a: float, b: float
) -> Callable[[float], None] | None:
    return None if progress is None else (lambda f: progress(a + (b - a) * f))


def _histogram_pass(
    store: EmbeddingStore,
    vec: np.ndarray,
    bins: int | None,
    chunk_rows: int | None,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
    workers: int | None,
    refine: bool = False,
) -> Calibration | None:
    """Score every chunk into a histogram; its Calibration, None without valid tiles.

    With ``refine``, heavy bins (big tie groups) are listed exactly in a second pass, which
    runs only when some bin could miss by more than :data:`CAL_MAX_ERROR` and reports no
    progress of its own (it is polled for cancellation like the first).
    """
    hist = Histogram(bins, store.grid.n_tiles)
    for r0, r1, block in chunked_dot(
        store, vec[:, None], chunk_rows, progress, is_canceled, workers
    ):
        hist.add(_valid_scores(store, r0, r1, block)[1])
    cal = hist.calibration()
    if cal is None or not refine:
        return cal
    ties = TieRefiner(hist, cal.n)
    if not ties.heavy.any():
        return cal
    for r0, r1, block in chunked_dot(store, vec[:, None], chunk_rows, None, is_canceled, workers):
        ties.add(_valid_scores(store, r0, r1, block)[1])
        if not ties.heavy.any():  # every heavy bin was given up: no use reading on
            break
    return ties.calibration(cal)


def score_histogram(
    store: EmbeddingStore,
    qvec: np.ndarray | Query,
    bins: int | None = None,
    chunk_rows: int | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    workers: int | None = None,
    refine: bool = False,
) -> Calibration:
    """One pass (two with ``refine``): the :class:`Calibration` of the query's valid scores.

    ``bins`` fixed bins over the cosine range (default: by store size, up to :data:`HIST_BINS`
    of 2e-6); its ``max_error`` states how far (percentile points) a percentile can be from
    the exact mean rank. Exact ties sit in one bin, so a big tie group (constant or duplicated
    tiles) can make that tens of points; ``refine`` then lists the heavy bins exactly in a
    second pass (what :func:`write_heatmap_chunked` does), bringing ``max_error`` down to
    :data:`CAL_MAX_ERROR` (unless more than ``bins`` distinct scores would have to be listed).
    """
    vec = query_vector(store, qvec)
    cal = _histogram_pass(store, vec, bins, chunk_rows, progress, is_canceled, workers, refine)
    if cal is None:
        raise InputError("the store has no valid tile; there is nothing to calibrate against")
    return cal


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

    Pass 1 (only with ``percentiles``) builds a :func:`score_histogram` (``refine=True``: one
    more pass when big tie groups need listing exactly); the last pass scores again and writes
    256-row bands of the GeoTIFF (band 1 cosine, band 2 percentile from the histogram, at most
    ``Calibration.max_error`` points from the exact mean rank: :data:`CAL_MAX_ERROR`, as in
    :func:`calibrate`, unless the tie listing outgrew ``bins`` scores). Same bands, tags,
    CRS and nodata as :func:`write_heatmap`; the file is written beside ``path`` and renamed, so
    a failure or a cancel leaves nothing. Memory: two bands of 256 x cols floats, the histogram
    (up to ~40 bytes x ``bins`` while it is turned into a map: 40 MiB at most), the tie listing
    (at most ``bins`` scores, ~30 bytes each while merged) and a few chunks. Progress: 0-50 %
    for pass 1, 50-100 % for the writing pass; the tie pass (if any) reports none.
    """
    vec = query_vector(store, qvec)
    grid = store.grid
    if grid.rows == 0 or grid.cols == 0:
        raise InputError("the store's grid is empty; there is nothing to write")
    cal = None
    if percentiles:  # None when no tile is valid: the percentile band is all NaN then
        first = _part(progress, 0.0, 0.5)
        cal = _histogram_pass(store, vec, bins, None, first, is_canceled, workers, refine=True)
    count = 2 if percentiles else 1
    render = render_for(store)
    if render is not None:  # drawn finer, inside the raster's outline: one write per chunk
        done = _part(progress, 0.5 if percentiles else 0.0, 1.0)
        with grid_tiff(path, render.out, count, "float32", float("nan")) as tiff:
            tiff.describe(
                HEATMAP_BANDS[:count],
                HEATMAP_BAND_TAGS[:count],
                heatmap_provenance(store, provenance),
            )
            for r0, r1, block in chunked_dot(store, vec[:, None], None, done, is_canceled, workers):
                rows = _chunk_bands(store, r0, r1, block, cal if percentiles else None, count)
                rows = _edge_filled(render, store, vec, cal, r0, rows)
                for i in range(count):
                    pixels, f0 = render.expand(rows[i], r0, np.nan)
                    if pixels.size:
                        tiff.write(i + 1, pixels, f0)
        return Path(path)
    tiled = grid_profile(grid, count, "float32", float("nan"))["tiled"]
    # chunks that tile the 256-row GeoTIFF blocks exactly, so each band is written once
    band = 256 if tiled else row_step(grid.cols, None)
    step = band if band != 256 else 1 << (row_step(grid.cols, None).bit_length() - 1)
    buf = np.empty((count, band, grid.cols), dtype=np.float32)
    done = _part(progress, 0.5 if percentiles else 0.0, 1.0)
    with grid_tiff(path, grid, count, "float32", float("nan")) as tiff:
        prov = heatmap_provenance(store, provenance)
        tiff.describe(HEATMAP_BANDS[:count], HEATMAP_BAND_TAGS[:count], prov)
        b0 = 0
        for r0, r1, block in chunked_dot(store, vec[:, None], step, done, is_canceled, workers):
            part = buf[0, r0 - b0 : r1 - b0]
            part[...] = block[..., 0]
            part[~np.asarray(store.valid[r0:r1], dtype=bool)] = np.nan
            if percentiles:  # per chunk: the float64 temporaries stay chunk-sized
                buf[1, r0 - b0 : r1 - b0] = cal.percentiles(part) if cal else np.nan
            if r1 - b0 < band and r1 < grid.rows:
                continue
            for i in range(count):
                tiff.write(i + 1, buf[i, : r1 - b0], b0)
            b0 = r1
    return Path(path)


class _Candidates:
    """The running best ``m`` tiles (ties: lowest index) and enough counts to rank them exactly.

    Every tile scoring above the m-th best score (the cut) is among the candidates, so their
    counts above any candidate score are exact; only the tiles tied *at* the cut can be left
    out, and ``at_cut`` counts them all. With ``n`` valid tiles, each candidate's mean rank is
    then exact: no histogram is needed for the hits' percentiles.
    """

    def __init__(self, m: int) -> None:
        self.m, self.n, self.at_cut = m, 0, 0
        self.idx, self.val = np.empty(0, np.int64), np.empty(0, np.float32)

    def add(self, flat: np.ndarray, vals: np.ndarray) -> None:
        """Offer tiles (flat grid indices, finite scores) of one chunk."""
        self.n += vals.size
        full = self.idx.size >= self.m
        if full:  # only scores at least the current cut can still enter
            keep = vals >= self.val.min()
            flat, vals = flat[keep], vals[keep]
        if not vals.size:
            return
        old_cut, old_val = (self.val.min() if full else None), self.val
        self.idx, self.val = best_subset(
            np.concatenate([self.idx, flat.astype(np.int64)]),
            np.concatenate([old_val, vals]),
            self.m,
        )
        cut = self.val.min()
        # tiles seen before at the new cut: the old count if the cut stayed, else all of them
        # were candidates (they scored above the old cut, or the set was not full yet)
        seen = self.at_cut if cut == old_cut else int(np.count_nonzero(old_val == cut))
        self.at_cut = seen + int(np.count_nonzero(vals == cut))

    def ranked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates best first (ties: row-major): flat indices, scores, exact percentiles."""
        order = np.lexsort((self.idx, -self.val))
        idx, val, n = self.idx[order], self.val[order], self.n
        if n == 1:
            return idx, val, np.full(1, 100.0, np.float32)
        asc = np.sort(val)
        above = val.size - np.searchsorted(asc, val, side="right")
        tied = np.searchsorted(asc, val, side="right") - np.searchsorted(asc, val, side="left")
        tied = np.where(val == asc[0], self.at_cut, tied)
        first = n - above - tied  # rank of the tie group's lowest member
        # (first + last) / 2 in percent, as calibrate_exact computes it
        pct = (2 * first + tied - 1) * (50.0 / (n - 1))
        return idx, val, pct.astype(np.float32)


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
    candidate set; the greedy NMS then runs on the merged candidates, so the hits (tiles,
    order, scores) are exactly those of :func:`top_k`. Their percentiles are the exact mean
    ranks (counted beside the candidates, see :class:`_Candidates`), the same values as
    :func:`calibrate` gives below ``EXACT_BELOW`` valid tiles and within ``CAL_MAX_ERROR``
    above. ``bins`` is accepted for compatibility and unused (no histogram is needed).
    """
    check_k(k, min_distance_tiles)
    vec = query_vector(store, qvec)
    r = int(min_distance_tiles)
    best = _Candidates(k * (2 * r + 1) ** 2)
    cols = store.grid.cols
    for r0, r1, block in chunked_dot(
        store, vec[:, None], chunk_rows, progress, is_canceled, workers
    ):
        local, vals = _valid_scores(store, r0, r1, block)
        best.add(local + r0 * cols, vals)
    if best.n == 0:
        return []
    return nms(store.grid, *best.ranked(), k, r)


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
    check_canceled(is_canceled)
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

    Both paths return the same tiles, order and scores; the percentiles are the exact mean
    ranks chunked, and within :data:`CAL_MAX_ERROR` of them in memory (exact below
    ``EXACT_BELOW`` valid tiles).
    """
    if _use_chunked(store, chunked):
        return top_k_chunked(store, qvec, k, min_distance_tiles, progress, is_canceled)
    check_k(k, min_distance_tiles)
    scores = similarity(store, qvec, progress=progress, is_canceled=is_canceled)
    return top_k(store, scores, k, min_distance_tiles)
