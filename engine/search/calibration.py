"""Percentile calibration of similarity scores: exact mean ranks, or a fine histogram.

:func:`calibrate` turns a score map into percentiles within its valid area (lowest 0, highest
100, ties share their mean rank). Large score sets use :class:`Calibration`, a monotone,
piecewise-linear map built from a histogram whose largest deviation from the exact mean rank is
known and reported; beyond :data:`CAL_MAX_ERROR` it falls back to the exact ranking. Streamed
stores cannot sort: there :class:`TieRefiner` lists the scores of the too-full bins (big tie
groups) exactly in a second pass and :meth:`Calibration.refined` gives them their mean ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError

EXACT_BELOW = 1 << 16
""":func:`calibrate` ranks fewer valid scores than this exactly (a sort costs < 10 ms there)."""

CAL_BINS = 1 << 18
"""Histogram bins over ``[min, max]`` of the scores in :func:`calibrate`."""

CAL_MAX_ERROR = 0.01
"""Largest deviation (percentile points) :func:`calibrate` accepts from the exact mean rank;
beyond it (heavy ties or a very peaked distribution) it falls back to the exact ranking."""


@dataclass(frozen=True, eq=False)
class Calibration:
    """A monotone map from cosine scores to percentiles, built from a histogram of the scores.

    Inside each bin the map is linear between the ranks at the bin's edges (and it runs exactly
    from the lowest score, percentile 0, to the highest, percentile 100, unless a tie group
    there gets its mean rank from :meth:`refined`), so it is monotone,
    increasing over the scores it was built from, and equal scores share a value. A score in a
    bin holding ``c`` scores is at most ``c - 1/2`` ranks from its exact mean rank:
    :attr:`max_error` is that bound in percentile points for the fullest bin (plus float32
    rounding, < 1e-5 points). Bins listed exactly by :meth:`refined` (heavy ties) give every
    score in them its exact mean rank instead, and no longer count towards :attr:`max_error`.
    """

    lo: float  # score at the lower edge of bin 0
    scale: float  # bins per unit of score
    base: np.ndarray  # float32 [bins]: percentile of the bin's line at its lower edge
    slope: np.ndarray  # float32 [bins]: percentile points per bin width
    n: int  # number of scores counted
    vmin: float  # lowest score counted (percentile 0)
    vmax: float  # highest score counted (percentile 100)
    max_error: float  # bound on |percentile - exact mean-rank percentile|, percentile points
    # scores whose exact mean-rank percentile is known (sorted, distinct; see :meth:`refined`)
    exact_values: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    exact_pct: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))

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
        t0, t1 = cls.bin_position(np.array([vmin, vmax]), lo, scale, bins)
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
        t = cls.bin_position(
            vals, vmin, scale, bins, clip=False
        )  # vmin <= vals <= vmax: no clipping
        j = cls.bin_index(t, bins)
        cal = cls.from_counts(np.bincount(j, minlength=bins), vmin, hi, vmin, vmax)
        return cal, t, j

    @staticmethod
    def bin_position(
        vals: np.ndarray, lo: float, scale: float, bins: int, clip: bool = True
    ) -> np.ndarray:
        """Position of each score in bin units (float64; bins are its integer parts)."""
        t = np.array(vals, dtype=np.float64)  # a copy: it is scaled in place
        t -= lo
        t *= scale
        if clip:  # np.maximum/minimum in place: np.clip is several times slower here
            np.maximum(t, 0.0, out=t)
            np.minimum(t, float(bins), out=t)
        return t

    @staticmethod
    def bin_index(t: np.ndarray, bins: int) -> np.ndarray:
        j = t.astype(np.intp)
        return np.minimum(j, bins - 1, out=j)

    def refined(
        self, counts: np.ndarray, values: np.ndarray, value_counts: np.ndarray
    ) -> Calibration:
        """This map with the exact mean rank of every score in the bins that ``values`` cover.

        Args:
            counts: The histogram this map was built from (same bins).
            values: Sorted, distinct scores; a bin is refined only if its ``value_counts`` add up
                to its whole count (a bin listed in part keeps its linear map).
            value_counts: How many times each of ``values`` was counted.
        """
        counts = np.asarray(counts, dtype=np.int64)
        values = np.asarray(values, dtype=np.float32)
        value_counts = np.asarray(value_counts, dtype=np.int64)
        j = self.bin_index(self.bin_position(values, self.lo, self.scale, self.bins), self.bins)
        listed = np.bincount(j, weights=value_counts, minlength=self.bins)
        whole = (listed == counts) & (counts > 0)
        keep = whole[j]
        values, value_counts, j = values[keep], value_counts[keep], j[keep]
        before = np.concatenate([[0], np.cumsum(counts)])[j]  # scores in lower bins
        cum = np.cumsum(value_counts) - value_counts  # listed scores below each value
        less = before + cum - cum[np.searchsorted(j, j)]  # j is sorted: values are
        n = self.n
        # (first rank + last rank) / 2 of each tie group, as calibrate_exact computes it
        pct = (2 * less + value_counts - 1) * (50.0 / (n - 1)) if n > 1 else np.full(j.size, 100.0)
        rest = counts[~whole]
        top = int(rest.max()) if rest.size else 0
        err = 100.0 * (top - 0.5) / (n - 1) if n > 1 and top > 0 else 0.0
        return replace(self, exact_values=values, exact_pct=pct.astype(np.float32), max_error=err)

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
        vals = scores[finite]
        t = self.bin_position(vals, self.lo, self.scale, self.bins)
        res = self._apply(t, self.bin_index(t, self.bins))
        if self.exact_values.size:  # heavy tie groups: their exact mean rank
            pos = np.minimum(np.searchsorted(self.exact_values, vals), self.exact_values.size - 1)
            hit = self.exact_values[pos] == vals
            res[hit] = self.exact_pct[pos[hit]]
        out[finite] = res
        return out


class TieRefiner:
    """Exact (score, count) pairs of the bins whose linear map could miss by > CAL_MAX_ERROR.

    A bin of ``c`` scores can put a score up to ``c - 1/2`` ranks from its exact mean rank; a
    big tie group (constant or duplicated tiles) fills one bin and can miss by tens of points.
    A second pass lists every score of those heavy bins exactly, holding at most ``bins``
    distinct scores: past that, the bins with the fewest counted scores per distinct score (a
    peaked distribution, not ties) are given up and stay in ``max_error``. ``hist`` is the
    streamed histogram (``lo``, ``scale``, ``bins``, ``counts``) of the ``n`` scores.
    """

    def __init__(self, hist: Any, n: int) -> None:
        self.hist = hist
        self.heavy = hist.counts > CAL_MAX_ERROR * (n - 1) / 100.0 + 0.5
        self.vals, self.cnts = np.empty(0, np.float32), np.empty(0, np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_pending = 0

    def _bins(self, vals: np.ndarray) -> np.ndarray:
        h = self.hist
        return Calibration.bin_index(Calibration.bin_position(vals, h.lo, h.scale, h.bins), h.bins)

    def add(self, vals: np.ndarray) -> None:
        """List the scores of ``vals`` (1-D, finite) that fall in a heavy bin."""
        sel = vals[self.heavy[self._bins(vals)]]
        if sel.size:
            self.pending.append(np.unique(sel, return_counts=True))
            self.n_pending += self.pending[-1][0].size
        if self.n_pending >= self.hist.bins:
            self._merge()

    def _merge(self) -> None:
        vals = np.concatenate([self.vals, *(u for u, _ in self.pending)])
        cnts = np.concatenate([self.cnts, *(c for _, c in self.pending)])
        self.pending, self.n_pending = [], 0
        self.vals, inv = np.unique(vals, return_inverse=True)
        self.cnts = np.bincount(inv.reshape(-1), weights=cnts).astype(np.int64)
        if self.vals.size > self.hist.bins:
            self._shed(self.vals.size - self.hist.bins // 2)

    def _shed(self, excess: int) -> None:
        """Give up the bins that gain least per listed score until ``excess`` scores are gone.

        A tie group is one listed score for many counted ones; a bin of distinct scores (a
        peaked distribution) is one per score: those go first.
        """
        j = self._bins(self.vals)
        per = np.bincount(j, minlength=self.hist.bins)
        used = np.flatnonzero(per)
        order = used[np.argsort(self.hist.counts[used] / per[used], kind="stable")]
        drop = order[: int(np.searchsorted(np.cumsum(per[order]), excess)) + 1]
        self.heavy[drop] = False
        keep = self.heavy[j]
        self.vals, self.cnts = self.vals[keep], self.cnts[keep]

    def calibration(self, cal: Calibration) -> Calibration:
        """``cal`` with exact mean ranks in every heavy bin still listed whole."""
        self._merge()
        return cal.refined(self.hist.counts, self.vals, self.cnts)


def calibrate_exact(scores: np.ndarray) -> np.ndarray:
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
        return calibrate_exact(scores)
    cal, t, j = Calibration._fit(scores[finite], CAL_BINS)
    if cal.max_error > CAL_MAX_ERROR:
        return calibrate_exact(scores)
    out = np.full(scores.shape, np.nan, dtype=np.float32)
    out[finite] = cal._apply(t, j)
    return out
