"""Chunk-by-chunk queries: score histogram, streamed heatmap GeoTIFF, streamed top-k, auto switch."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import rasterio
from pyproj import CRS

from engine.errors import CancelledError, InputError
from engine.search import streaming as sim
from engine.search.calibration import calibrate_exact
from engine.search.hits import top_k
from engine.search.similarity import similarity, write_heatmap
from engine.search.streaming import (
    heatmap_auto,
    hits_auto,
    score_histogram,
    top_k_chunked,
    write_heatmap_chunked,
)


class SliceOnly:
    """Embeddings that only answer ``[r0:r1]`` row slices, like a Zarr array (no memmap)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr, self.shape, self.dtype = arr, arr.shape, arr.dtype

    def __getitem__(self, key):
        assert isinstance(key, slice) and key.step is None, key
        return np.array(self._arr[key])


def _store(fx, rng, rows, cols, d=8, levels=None, invalid_frac=0.1):
    """Random store; ``levels`` quantises the vectors so that many tiles tie exactly."""
    vec = rng.standard_normal((rows, cols, d))
    if levels:
        vec = np.zeros((rows, cols, d))
        vec[..., 0] = 1.0
        vec[..., 1] = rng.integers(0, levels, (rows, cols))
    valid = rng.random((rows, cols)) > invalid_frac
    return fx.make_store(vec, valid)


def _same_hits(got, want, max_pct_error):
    key = lambda h: (h.rank, h.row, h.col, h.score, h.x, h.y, h.bounds)  # noqa: E731
    assert [key(h) for h in got] == [key(h) for h in want]
    for a, b in zip(got, want, strict=True):
        assert a.percentile == pytest.approx(b.percentile, abs=max_pct_error + 1e-4)


@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("chunk_rows", [1, 3, None])
def test_top_k_chunked_equals_top_k(fx, rng, radius, chunk_rows):
    store = _store(fx, rng, 40, 30)
    q = rng.standard_normal(8)
    want = top_k(store, similarity(store, q), 15, radius)
    got = top_k_chunked(store, q, 15, radius, chunk_rows=chunk_rows)
    cal = score_histogram(store, q)
    _same_hits(got, want, cal.max_error)
    assert len(got) == 15


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_top_k_chunked_ties_and_nms_across_chunk_borders(fx, rng, radius):
    # 4 distinct vectors only: thousands of exact ties; chunk_rows=1 puts every vertical
    # neighbour in another chunk, so suppression must work across chunks
    store = _store(fx, rng, 30, 25, levels=4, invalid_frac=0.05)
    q = np.r_[1.0, 0.5, np.zeros(6)]
    scores = similarity(store, q)
    assert np.unique(scores[np.isfinite(scores)]).size <= 4
    want = top_k(store, scores, 12, radius)
    for chunk_rows in (1, 2, 7):
        got = top_k_chunked(store, q, 12, radius, chunk_rows=chunk_rows, workers=2)
        _same_hits(got, want, score_histogram(store, q).max_error)
    # ties go to the first tile in row-major order
    best = np.nanmax(scores)
    first = np.flatnonzero(scores.reshape(-1) == best)[0]
    assert (want[0].row, want[0].col) == divmod(int(first), 25)


def test_score_histogram_percentiles_bound_and_ends(fx, rng):
    store = _store(fx, rng, 60, 50, invalid_frac=0.2)
    q = rng.standard_normal(8)
    scores = similarity(store, q)
    cal = score_histogram(store, q, bins=1 << 12)
    exact = calibrate_exact(scores)
    got = cal.percentiles(scores)
    assert np.array_equal(np.isnan(got), np.isnan(scores))
    ok = np.isfinite(scores)
    assert cal.n == ok.sum() and 0 < cal.max_error < 5
    assert np.max(np.abs(got[ok] - exact[ok])) <= cal.max_error
    assert got[scores == np.nanmin(scores)][0] == 0.0
    assert got[scores == np.nanmax(scores)][0] == 100.0
    order = np.argsort(scores[ok])
    assert np.all(np.diff(got[ok][order]) >= 0)


def test_score_histogram_rejects_empty_store_and_bad_bins(fx, rng):
    store = _store(fx, rng, 4, 4, invalid_frac=1.1)
    with pytest.raises(InputError, match="no valid tile"):
        score_histogram(store, np.ones(8))
    assert top_k_chunked(store, np.ones(8), 3) == []
    with pytest.raises(InputError, match="bins"):
        score_histogram(_store(fx, rng, 4, 4), np.ones(8), bins=1)


@pytest.mark.parametrize("rows,cols", [(9, 11), (300, 260)])
def test_chunked_heatmap_matches_in_memory_heatmap(fx, rng, tmp_path, rows, cols):
    store = _store(fx, rng, rows, cols)
    store.embeddings = SliceOnly(store.embeddings)  # only row slices are ever read
    q = rng.standard_normal(8)
    prov = {"query": "text 'lake'", "params": {"k": 3}}
    a = write_heatmap(tmp_path / "a.tif", store, similarity(store, q), provenance=prov)
    seen = []
    b = write_heatmap_chunked(tmp_path / "b.tif", store, q, provenance=prov, progress=seen.append)
    assert seen[-1] == pytest.approx(1.0) and np.all(np.diff(seen) >= 0)
    err = score_histogram(store, q).max_error
    with rasterio.open(a) as da, rasterio.open(b) as db:
        pa_, pb_ = dict(da.profile), dict(db.profile)
        assert np.isnan(pa_.pop("nodata")) and np.isnan(pb_.pop("nodata")) and pa_ == pb_
        assert CRS.from_user_input(db.crs.to_wkt()) == CRS.from_user_input(fx.UTM)
        assert db.transform.to_gdal() == pytest.approx(store.grid.geotransform)
        assert db.descriptions == da.descriptions and np.isnan(db.nodata)
        assert db.tags() == da.tags() and db.tags(1) == da.tags(1) and db.tags(2) == da.tags(2)
        np.testing.assert_array_equal(db.read(1), da.read(1))
        pa, pb = da.read(2), db.read(2)
    assert np.array_equal(np.isnan(pa), np.isnan(pb))
    assert np.nanmax(np.abs(pa - pb)) <= err + 1e-4


def test_chunked_heatmap_without_percentiles(fx, rng, tmp_path):
    store = _store(fx, rng, 20, 20)
    q = rng.standard_normal(8)
    path = write_heatmap_chunked(tmp_path / "h.tif", store, q, percentiles=False)
    with rasterio.open(path) as ds:
        assert ds.count == 1
        np.testing.assert_array_equal(ds.read(1), similarity(store, q))


@pytest.mark.parametrize("stop_after", [0, 3, 7])
def test_chunked_heatmap_cancel_leaves_nothing(fx, rng, tmp_path, stop_after):
    store = _store(fx, rng, 60, 300)  # 5 chunks of 13 rows per pass
    target = tmp_path / "h.tif"
    target.write_bytes(b"old")
    seen = []
    with pytest.raises(CancelledError):
        write_heatmap_chunked(
            target,
            store,
            np.ones(8),
            progress=seen.append,
            is_canceled=lambda: len(seen) >= stop_after,
        )
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["h.tif"]
    assert len(seen) == stop_after
    assert (max(seen, default=0) > 0.5) == (stop_after == 7)  # 7: cancelled while writing


def _slice_only_store(fx, rows, cols=256):
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((rows, cols, 4), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    valid = np.ones((rows, cols), bool)
    store = fx.FakeStore(fx.make_grid(rows, cols), emb.astype(np.float16), valid)
    store.embeddings = SliceOnly(store.embeddings)
    return store


def _peaks(store, q, tmp_path):
    """Peak traced memory (bytes) of the streamed heatmap and of the streamed top-k.

    One scoring thread: with several, how many chunk buffers are alive at the peak depends on
    thread timing (bounded by the pool size, not by the rows), which made the ratio flaky.
    """
    tracemalloc.start()
    try:
        write_heatmap_chunked(tmp_path / "big.tif", store, q, bins=1 << 12, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        top_k_chunked(store, q, 10, 1, bins=1 << 12, workers=1)
        peak_top = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, peak_top


def test_chunked_heatmap_memory_independent_of_rows(fx, tmp_path):
    """4x the rows, same peak memory; far below one [rows, cols] float32 map (4 MiB here)."""
    q = np.array([1.0, 0.5, 0.0, -0.2])
    warm = _slice_only_store(fx, 300)  # imports and GDAL set-up, outside the measurement
    write_heatmap_chunked(tmp_path / "warm.tif", warm, q, bins=1 << 12)
    small, small_top = _peaks(_slice_only_store(fx, 1024), q, tmp_path)
    store = _slice_only_store(fx, 4096)
    peak, peak_top = _peaks(store, q, tmp_path)
    full = 4096 * 256 * 4
    # scoring threads hold their own chunk buffers (~1 MiB here), whatever the store size
    assert peak < full / 2 and peak_top < full / 4, (peak, peak_top)
    assert peak < 1.25 * small and peak_top < 1.25 * small_top, (small, peak, small_top, peak_top)
    with rasterio.open(tmp_path / "big.tif") as ds:
        assert ds.shape == (4096, 256) and ds.block_shapes[0] == (256, 256)
        row = ds.read(1, window=((4000, 4001), (0, 256)))[0]
    np.testing.assert_array_equal(row, similarity(store, q)[4000])


def test_auto_switch_picks_path_by_size(fx, rng, tmp_path, monkeypatch):
    store = _store(fx, rng, 30, 20)
    q = rng.standard_normal(8)
    calls = []
    real = sim.write_heatmap_chunked

    def spy(*a, **k):
        calls.append("chunked")
        return real(*a, **k)

    monkeypatch.setattr(sim, "write_heatmap_chunked", spy)
    small = heatmap_auto(tmp_path / "small.tif", store, q, provenance={"query": "x"})
    hits_mem = hits_auto(store, q, 5, 1)
    assert calls == []
    monkeypatch.setattr(sim, "CHUNKED_ABOVE_TILES", 100)
    big = heatmap_auto(tmp_path / "big.tif", store, q, provenance={"query": "x"})
    hits_chunked = hits_auto(store, q, 5, 1)
    assert calls == ["chunked"]
    with rasterio.open(small) as a, rasterio.open(big) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.tags() == b.tags()
    _same_hits(hits_chunked, hits_mem, score_histogram(store, q).max_error)
    with pytest.raises(InputError):
        hits_auto(store, q, 0)
    with pytest.raises(CancelledError):
        heatmap_auto(tmp_path / "c.tif", store, q, is_canceled=lambda: True, chunked=False)
    assert not (tmp_path / "c.tif").exists()


def test_chunked_queries_and_ann_on_a_real_zarr_store(fx, rng, tmp_path):
    """The Zarr store (embeddings a sliceable array, not a memmap) gives the same results."""
    zarr = pytest.importorskip("zarr")
    zs = pytest.importorskip("engine.store.zarr")
    mem = _store(fx, rng, 37, 23)
    s = zs.ZarrEmbeddingStore.create(tmp_path / "z.zarr", mem.grid, 8, "h", "fp", None, 8)
    zarr.open_array(s.folder / "embeddings", mode="r+")[...] = mem.embeddings
    zarr.open_array(s.folder / "valid", mode="r+")[...] = mem.valid
    zarr.open_array(s.folder / "done", mode="r+")[...] = 1
    store = s.finalize()
    q = rng.standard_normal(8)
    want = top_k(mem, similarity(mem, q), 6, 1)
    _same_hits(
        top_k_chunked(store, q, 6, 1, chunk_rows=4), want, score_histogram(store, q).max_error
    )
    path = write_heatmap_chunked(tmp_path / "z.tif", store, q)
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), similarity(mem, q))
    pytest.importorskip("faiss")
    from engine.search.ann import AnnIndex, top_k_ann

    index = AnnIndex.build(store, kind="flat")
    got = top_k_ann(store, index, q, 6, 1)
    assert [(h.row, h.col) for h in got] == [(h.row, h.col) for h in want]
