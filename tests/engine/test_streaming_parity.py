"""Parity of the streamed (large-store) query path with the exact in-memory one.

The chunked functions of ``engine.search.streaming`` are forced on small stores (``chunked=True``,
small ``chunk_rows``) and compared with ``similarity`` + ``calibrate`` / ``top_k``: hits must
be the same tiles in the same order with the same scores and percentiles, and heatmaps the same
cosine band, the same nodata cells and percentiles within the stated tolerance, on stores with
big tie groups, invalid tiles, valid zero vectors, ragged last blocks, all-invalid blocks, a single valid
tile, k above the number of valid tiles and negative query terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import CancelledError
from engine.grid import TileGrid
from engine.search.calibration import CAL_MAX_ERROR, TieRefiner, calibrate, calibrate_exact
from engine.search.hits import top_k
from engine.search.query import Query
from engine.search.similarity import similarity, write_heatmap
from engine.search.streaming import (
    Histogram,
    heatmap_auto,
    hits_auto,
    score_histogram,
    top_k_chunked,
    write_heatmap_chunked,
)

D = 8
Q = np.r_[1.0, 0.5, np.zeros(D - 2)]
TIE = np.r_[1.0, 0.5, np.zeros(D - 2)]  # the query itself: cosine 1, the top score
MID = np.r_[0.0, 0.0, 1.0, np.zeros(D - 3)]  # orthogonal: cosine 0, mid-range


@dataclass
class Store:
    """What the engine reads of an EmbeddingStore: grid, float16 embeddings, validity."""

    grid: TileGrid
    embeddings: np.ndarray
    valid: np.ndarray
    model_hash: str = "parity"
    meta: dict | None = None

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[-1])


def make_store(vec: np.ndarray, valid: np.ndarray | None = None) -> Store:
    """Unit-normalised float16 store; invalid tiles and NaN or zero vectors are zero."""
    rows, cols, _ = vec.shape
    valid = np.ones((rows, cols), bool) if valid is None else valid.astype(bool)
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    emb = np.where(norm > 0, vec / np.where(norm > 0, norm, 1.0), 0.0)
    emb[~valid] = 0.0
    grid = TileGrid("EPSG:32633", 1.0, 10, 10, 0, 0, rows, cols, 500_000.0, 5_000_000.0)
    return Store(grid, emb.astype(np.float16), valid)


def scenario(name: str, rows: int = 23, cols: int = 17, seed: int = 0) -> Store:
    """Named stores with the shapes of real trouble: ties, holes, almost nothing valid."""
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((rows, cols, D))
    valid = rng.random((rows, cols)) > 0.1
    if name == "top_ties":  # a constant area that is the best match: half the tiles tie
        vec[: rows // 2] = TIE
    elif name == "mid_ties":  # a nodata-like constant area in the middle of the range
        vec[3 : rows - 3] = MID
    elif name == "duplicates":  # scattered copies of 6 tiles: many medium tie groups
        vec = vec[rng.integers(0, 2, (rows, cols)), rng.integers(0, 3, (rows, cols))]
    elif name == "holes":  # invalid rows, and valid tiles whose vector was NaN (zeroed: score 0)
        vec[rng.random((rows, cols)) < 0.05] = np.nan
        valid[5:9] = False
    elif name == "invalid_blocks":  # whole chunks (and the ragged last one) without data
        valid[:6] = False
        valid[rows - 2 :] = False
        vec[10:14] = TIE
    elif name == "single_valid":
        valid[...] = False
        valid[rows // 2, cols // 3] = True
    elif name == "all_invalid":
        valid[...] = False
    elif name != "plain":
        raise ValueError(name)
    return make_store(vec, valid)


SCENARIOS = [
    "plain",
    "top_ties",
    "mid_ties",
    "duplicates",
    "holes",
    "invalid_blocks",
    "single_valid",
    "all_invalid",
]


def hit_keys(hits):
    return [(h.rank, h.row, h.col, h.score, h.percentile, h.x, h.y, h.bounds) for h in hits]


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_hits_match_exactly(name, radius):
    """Same tiles, order, scores and (exact mean-rank) percentiles, whatever the chunking."""
    store = scenario(name)
    scores = similarity(store, Q)
    n_valid = int(np.isfinite(scores).sum())
    for k in (1, 5, n_valid + 3):  # the last: more hits asked than valid tiles
        want = top_k(store, scores, k, radius)
        assert len(want) <= max(k, 0)
        for chunk_rows in (1, 4, 7, None):  # 23 rows: ragged last chunks of 3 and 2 rows
            got = top_k_chunked(store, Q, k, radius, chunk_rows=chunk_rows, workers=2)
            assert hit_keys(got) == hit_keys(want), (name, k, chunk_rows)
        assert hit_keys(hits_auto(store, Q, k, radius, chunked=True)) == hit_keys(want)


def test_top_tie_group_gets_its_mean_rank_not_100():
    """Regression: the streamed path gave a top tie group percentile 100 (exact: ~75)."""
    store = scenario("top_ties", 50, 40)
    scores = similarity(store, Q)
    n = int(np.isfinite(scores).sum())
    tie = int((scores == np.nanmax(scores)).sum())
    mean_rank = ((n - tie) + (n - 1)) / 2  # ranks n - tie .. n - 1, 0-based
    want = np.float32(100.0 * mean_rank / (n - 1))
    hits = top_k_chunked(store, Q, 3, 1, chunk_rows=3)
    assert [h.percentile for h in hits] == [want] * 3
    assert 60.0 < want < 90.0
    cal = score_histogram(store, Q, refine=True)
    assert cal.percentiles(np.array([np.nanmax(scores)]))[0] == want
    assert cal.max_error == 0.0  # every heavy bin listed exactly
    # without the tie pass, the one-pass histogram states its (large) error honestly
    rough = score_histogram(store, Q)
    assert rough.max_error > 40.0
    assert abs(rough.percentiles(np.array([np.nanmax(scores)]))[0] - want) <= rough.max_error


def read_bands(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.read(2), ds.profile


@pytest.mark.parametrize("shape", [(23, 17), (40, 300)])  # one chunk; 4 chunks of 13 rows
@pytest.mark.parametrize("name", SCENARIOS)
def test_heatmap_cells_match(tmp_path, name, shape):
    """Cosine band identical, nodata where the exact heatmap has nodata, equal percentiles."""
    store = scenario(name, *shape)
    q = Query().add(Q).add(MID + 0.3 * TIE, weight=0.5, negative=True)  # negative scores too
    a = write_heatmap(tmp_path / "a.tif", store, similarity(store, q))
    b = heatmap_auto(tmp_path / "b.tif", store, q, chunked=True)
    cos_a, pct_a, prof_a = read_bands(a)
    cos_b, pct_b, prof_b = read_bands(b)
    np.testing.assert_array_equal(cos_b, cos_a)  # NaN positions included
    np.testing.assert_array_equal(np.isnan(pct_b), np.isnan(cos_a))
    np.testing.assert_array_equal(np.isnan(pct_b), np.isnan(pct_a))
    assert prof_a["width"] == prof_b["width"] and prof_a["height"] == prof_b["height"]
    n = int(np.isfinite(cos_a).sum())
    if n == 0:
        return
    # the negative term pushes some scores below zero
    assert np.nanmin(cos_a) < 0 or name == "single_valid"
    if n <= 5000:  # every non-empty bin is listed exactly: the same float32 values
        np.testing.assert_array_equal(pct_b, pct_a)
    else:  # calibrate() ranks exactly here; the streamed map is within CAL_MAX_ERROR
        assert score_histogram(store, q, refine=True).max_error <= CAL_MAX_ERROR
        np.testing.assert_allclose(pct_b, pct_a, rtol=0, atol=CAL_MAX_ERROR + 1e-4)


def test_heatmap_drawn_inside_the_outline_fills_edge_cells_across_chunks(tmp_path):
    """A store with the raster's outline is drawn finer, cropped to it, and each skipped cell the
    outline cuts shows its valid neighbour; the streamed path must draw the same pixels, also
    where that neighbour lies in the chunk above or below (4 chunks of 13 rows here)."""
    from dataclasses import replace

    from engine.geo.render import render_for

    rows, cols = 40, 300
    base = scenario("plain", rows, cols)
    x0, y1 = base.grid.origin_x, base.grid.origin_y
    # a diagonal edge: about 7.5 cells per row, crossing every row and every chunk boundary
    wkt = f"POLYGON (({x0} {y1}, {x0 + 3000} {y1}, {x0} {y1 - 400}, {x0} {y1}))"
    cy = y1 - (np.arange(rows)[:, None] + 0.5) * 10.0
    cx = x0 + (np.arange(cols)[None, :] + 0.5) * 10.0
    valid = base.valid & ((cx - x0) < 3000.0 * (cy - (y1 - 400)) / 400.0)  # centre inside
    store = replace(base, valid=valid)
    store.embeddings[~valid] = 0
    store.meta = {"footprint_wkt": wkt, "source_gsd_m": 2.5}
    render = render_for(store)
    assert render is not None and render.k == 4 and render.source is not None
    moved = render.source != np.arange(rows * cols).reshape(rows, cols)
    src_rows = render.source[moved] // cols
    edge_rows = np.nonzero(moved)[0]
    crossing = [r for r, s in zip(edge_rows, src_rows, strict=True) if r // 13 != s // 13]
    assert crossing  # some edge cells show a neighbour from another chunk
    q = Query().add(Q)
    a = write_heatmap(tmp_path / "a.tif", store, similarity(store, q))
    b = heatmap_auto(tmp_path / "b.tif", store, q, chunked=True)
    cos_a, pct_a, prof_a = read_bands(a)
    cos_b, pct_b, prof_b = read_bands(b)
    assert prof_a["width"] == prof_b["width"] == render.out.cols
    np.testing.assert_array_equal(cos_b, cos_a)  # NaN positions included
    np.testing.assert_allclose(pct_b, pct_a, rtol=0, atol=CAL_MAX_ERROR + 1e-4)


def test_valid_tiles_holding_nan_are_refused_by_both_paths(tmp_path):
    """A float32 store (no float16 bit widening) whose valid tiles hold NaN rows is damaged:
    the in-memory and the streamed paths refuse it alike, naming the first bad tile (they used
    to score such tiles NaN and carry on, which hid the damage)."""
    from engine.errors import StoreError

    store = scenario("top_ties", 21, 13, seed=7)
    emb = store.embeddings.astype(np.float32)
    emb[2, :5] = np.nan  # inside the tie group
    emb[15:17, 4] = np.nan
    store.embeddings = emb
    assert store.valid[2, :5].any()
    calls = [
        lambda: similarity(store, Q),
        lambda: top_k_chunked(store, Q, 40, 0, chunk_rows=2),
        lambda: write_heatmap_chunked(tmp_path / "b.tif", store, Q),
    ]
    for call in calls:
        with pytest.raises(StoreError, match="damaged: the tile at row 2, column 0"):
            call()
    assert not (tmp_path / "b.tif").exists()


def test_big_tiled_heatmap_with_ties_and_holes(tmp_path):
    """78k tiles (above EXACT_BELOW; 256-row GeoTIFF bands, a ragged last band of 44 rows):
    calibrate falls back to exact ranks for the ties, the streamed map stays within 0.01."""
    rows, cols = 300, 260
    rng = np.random.default_rng(3)
    vec = rng.standard_normal((rows, cols, D))
    vec[40:140] = TIE  # 26k-tile tie group at the top score
    vec[200:230, :100] = MID  # 3k-tile tie group in mid range
    valid = np.ones((rows, cols), bool)
    valid[250:] = False  # the whole last band is nodata
    valid[:, :3] = False
    store = make_store(vec, valid)
    scores = similarity(store, Q)
    a = write_heatmap(tmp_path / "a.tif", store, scores)
    b = write_heatmap_chunked(tmp_path / "b.tif", store, Q)
    cos_a, pct_a, _ = read_bands(a)
    cos_b, pct_b, prof = read_bands(b)
    assert prof["tiled"] and prof["blockysize"] == 256
    np.testing.assert_array_equal(cos_b, cos_a)
    np.testing.assert_array_equal(np.isnan(pct_b), np.isnan(pct_a))
    assert np.isnan(pct_b[250:]).all() and np.isnan(pct_b[:, :3]).all()
    exact = calibrate_exact(scores)
    cal = score_histogram(store, Q, refine=True)
    assert cal.max_error <= CAL_MAX_ERROR
    assert np.nanmax(np.abs(pct_b - exact)) <= CAL_MAX_ERROR + 1e-4
    assert np.nanmax(np.abs(pct_b - pct_a)) <= 2 * CAL_MAX_ERROR + 1e-4
    top = scores == np.nanmax(scores)
    assert np.unique(pct_b[top]).size == 1 and pct_b[top][0] == exact[top][0]  # tie: one value
    hits = top_k_chunked(store, Q, 4, 2)
    assert hit_keys(hits) == hit_keys(top_k(store, scores, 4, 2, percentiles=exact))
    in_memory = hits_auto(store, Q, 4, 2, chunked=False)  # calibrate() percentiles
    assert [k[:4] for k in hit_keys(in_memory)] == [k[:4] for k in hit_keys(hits)]
    for a, b in zip(hits, in_memory, strict=True):
        assert abs(a.percentile - b.percentile) <= CAL_MAX_ERROR + 1e-4


def test_tie_listing_gives_up_noisy_bins_but_keeps_ties():
    """With too few bins for the distinct scores, the noisiest bins stay interpolated (and in
    ``max_error``); bins holding one big tie group are still exact."""
    store = scenario("mid_ties", 60, 50, seed=4)
    scores = similarity(store, Q)
    exact = calibrate_exact(scores)
    cal = score_histogram(store, Q, bins=64, refine=True, chunk_rows=5)
    got = cal.percentiles(scores)
    ok = np.isfinite(scores)
    assert CAL_MAX_ERROR < cal.max_error < 20.0
    assert np.max(np.abs(got[ok] - exact[ok])) <= cal.max_error + 1e-4
    mid = scores == np.float32(0.0)
    assert mid.sum() > 1000 and np.all(got[mid] == exact[mid])
    order = np.argsort(scores[ok], kind="stable")
    assert np.all(np.diff(got[ok][order]) >= 0)  # still monotone across listed/linear bins


def test_cancel_during_tie_pass_leaves_nothing(tmp_path):
    store = scenario("top_ties", 60, 300)  # 5 chunks of 13 rows per pass
    polls, seen = [], []

    def cancel_in_tie_pass() -> bool:
        polls.append(1)
        return len(polls) > 5 + 2  # pass 1 polls 5 times; stop at the tie pass's third chunk

    target = tmp_path / "h.tif"
    target.write_bytes(b"old")
    with pytest.raises(CancelledError):
        write_heatmap_chunked(
            target, store, Q, progress=seen.append, is_canceled=cancel_in_tie_pass, workers=1
        )
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["h.tif"]
    assert len(seen) == 5 and seen[-1] == pytest.approx(0.5)  # the tie pass reports nothing


@st.composite
def tie_stores(draw):
    rows = draw(st.integers(1, 14))
    cols = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    levels = draw(st.integers(1, 5))
    rng = np.random.default_rng(seed)
    vec = np.zeros((rows, cols, D))
    vec[..., 0] = 1.0
    vec[..., 1] = rng.integers(-levels, levels + 1, (rows, cols))  # few distinct: many ties
    noisy = rng.random((rows, cols)) < draw(st.floats(0, 1))
    vec[noisy] = rng.standard_normal((int(noisy.sum()), D))
    vec[rng.random((rows, cols)) < draw(st.floats(0, 0.2))] = np.nan
    valid = rng.random((rows, cols)) >= draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
    return make_store(vec, valid)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    store=tie_stores(),
    k=st.integers(1, 12),
    radius=st.integers(0, 2),
    chunk_rows=st.integers(1, 5),
    neg=st.booleans(),
)
def test_property_streamed_equals_exact(store, k, radius, chunk_rows, neg):
    q = -Q if neg else Q
    scores = similarity(store, q)
    want = top_k(store, scores, k, radius)
    got = top_k_chunked(store, q, k, radius, chunk_rows=chunk_rows, workers=1)
    assert hit_keys(got) == hit_keys(want)
    if not np.isfinite(scores).any():
        assert got == []
        return
    cal = score_histogram(store, q, chunk_rows=chunk_rows, refine=True, workers=1)
    np.testing.assert_array_equal(cal.percentiles(scores), calibrate(scores))
    assert cal.max_error == 0.0


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 3000),
    bins=st.sampled_from([2, 16, 64, 4096, None]),
    spread=st.sampled_from([1e-4, 0.01, 0.3]),
    tie_frac=st.floats(0, 1),
    groups=st.integers(1, 6),
)
def test_property_tie_listing_bound(seed, n, bins, spread, tie_frac, groups):
    """Listed scores get their exact mean rank, the rest stay within ``max_error``, the map
    stays monotone and tie-consistent, whatever the chunking and however much is given up."""
    rng = np.random.default_rng(seed)
    vals = np.clip(rng.normal(0.2, spread, n), -1, 1).astype(np.float32)
    tied = rng.random(n) < tie_frac
    vals[tied] = rng.choice(vals, groups)[rng.integers(0, groups, int(tied.sum()))]
    cuts = np.sort(rng.integers(0, n, 4))
    hist = Histogram(bins, n)
    for part in np.split(vals, cuts):
        hist.add(part)
    cal = hist.calibration()
    ties = TieRefiner(hist, cal.n)
    wanted = ties.heavy.copy()
    for part in np.split(vals, np.sort(rng.integers(0, n, 2))):  # other chunks than pass 1
        ties.add(part)
    ref = ties.calibration(cal)
    got = ref.percentiles(vals)
    exact = calibrate_exact(vals)
    assert np.max(np.abs(got - exact)) <= ref.max_error + 1e-4
    listed = np.isin(vals, ref.exact_values)
    np.testing.assert_array_equal(got[listed], exact[listed])
    if np.array_equal(ties.heavy, wanted):  # nothing given up: the calibrate tolerance
        assert ref.max_error <= CAL_MAX_ERROR
    order = np.argsort(vals, kind="stable")
    assert np.all(np.diff(got[order]) >= 0)
    same = np.diff(vals[order]) == 0
    assert np.all(np.diff(got[order])[same] == 0)
