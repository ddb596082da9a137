"""Similarity heatmaps, threaded scoring, percentile calibration, GeoTIFF output, top-k with NMS."""

from __future__ import annotations

import json
import time

import numpy as np
import pyogrio
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyproj import CRS, Transformer

from engine.errors import CancelledError, InputError
from engine.search.calibration import CAL_MAX_ERROR, Calibration, calibrate, calibrate_exact
from engine.search.hits import top_k, write_hits
from engine.search.query import Query
from engine.search.scoring import chunked_dot
from engine.search.similarity import similarity, write_heatmap


def _random_store(fx, rng, rows=7, cols=9, d=16, invalid=()):
    valid = np.ones((rows, cols), bool)
    for rc in invalid:
        valid[rc] = False
    return fx.make_store(rng.standard_normal((rows, cols, d)), valid)


def _reference(store, q):
    """float64 cosine from the stored float16 values (the exact answer)."""
    ref = store.embeddings.astype(np.float64) @ (q / np.linalg.norm(q))
    ref[~store.valid] = np.nan
    return ref


def test_heatmap_values_are_exact_cosines(fx):
    # tiles set to chosen unit vectors: e0, e1, (e0+e1)/√2, -e0
    vec = np.array([[[1, 0, 0, 0], [0, 1, 0, 0]], [[1, 1, 0, 0], [-1, 0, 0, 0]]], float)
    store = fx.make_store(vec)
    s = similarity(store, np.array([2.0, 0.0, 0.0, 0.0]))
    assert s.dtype == np.float32 and s.shape == (2, 2)
    np.testing.assert_allclose(s, [[1.0, 0.0], [np.float16(2**-0.5), -1.0]], atol=1e-7)


@pytest.mark.parametrize("chunk_rows", [None, 1, 3, 100])
def test_chunked_fp16_path_matches_float64(fx, rng, chunk_rows):
    store = _random_store(fx, rng, invalid=[(0, 0), (6, 8), (3, 4)])
    # float16 subnormals, negative zero and negative subnormals must widen exactly
    store.embeddings[1, 1, :4] = np.array([3e-6, -3e-6, -0.0, 6e-8], np.float16)
    q = rng.standard_normal(16)
    s = similarity(store, q, chunk_rows=chunk_rows)
    ref = _reference(store, q)
    assert np.array_equal(np.isnan(s), ~store.valid)
    np.testing.assert_allclose(s[store.valid], ref[store.valid], atol=2e-7)


def test_float32_store_and_query_object(fx, rng):
    store = _random_store(fx, rng)
    q32 = Query().add(rng.standard_normal(16))
    s16 = similarity(store, q32)
    store.embeddings = store.embeddings.astype(np.float32)
    s32 = similarity(store, q32.vector())
    np.testing.assert_allclose(s16, s32, atol=2e-7)


def test_similarity_rejects_bad_queries_and_cancels(fx, rng):
    store = _random_store(fx, rng)
    with pytest.raises(InputError, match="dimension 8"):
        similarity(store, np.ones(8))
    with pytest.raises(InputError, match="zero"):
        similarity(store, np.zeros(16))
    seen = []
    with pytest.raises(CancelledError):
        similarity(
            store,
            np.ones(16),
            chunk_rows=2,
            progress=seen.append,
            is_canceled=lambda: len(seen) >= 2,
        )
    assert seen == [2 / 7, 4 / 7]


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.integers(1, 60),
        elements=st.one_of(
            st.floats(-1, 1, width=32), st.just(np.nan), st.sampled_from([0.5, -0.25])
        ),
    )
)
def test_calibrate_is_monotone_bounded_and_keeps_nan(scores):
    p = calibrate(scores)
    nan = np.isnan(scores)
    assert np.array_equal(np.isnan(p), nan)
    v, pv = scores[~nan], p[~nan]
    if v.size == 0:
        return
    assert pv.min() >= 0.0 and pv.max() <= 100.0
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(pv[order]) >= 0)  # monotone
    for a in np.unique(v):  # ties share one percentile, strictly above lower scores
        assert np.ptp(pv[v == a]) == 0
        assert np.all(pv[v < a] < pv[v == a][0])
    if np.unique(v).size > 1:
        assert pv[v == v.min()][0] < 50 < pv[v == v.max()][0] or v.size == 2
    if v.size == 1:
        assert pv[0] == 100.0


def test_calibrate_known_values():
    p = calibrate(np.array([[0.1, 0.3, np.nan], [0.2, 0.3, 0.0]], np.float32))
    np.testing.assert_allclose(p, [[25.0, 87.5, np.nan], [50.0, 87.5, 0.0]])


def test_heatmap_geotiff_has_store_crs_transform_values_and_provenance(fx, rng, tmp_path):
    store = _random_store(fx, rng, invalid=[(2, 3)])
    q = rng.standard_normal(16)
    s = similarity(store, q)
    path = write_heatmap(
        tmp_path / "h.tif", store, s, provenance={"query": "text 'lake'", "params": {"k": 3}}
    )
    with rasterio.open(path) as ds:
        assert ds.count == 2 and ds.dtypes == ("float32", "float32")
        assert CRS.from_user_input(ds.crs.to_wkt()) == CRS.from_user_input(fx.UTM)
        assert ds.transform.to_gdal() == pytest.approx(store.grid.geotransform)
        assert ds.descriptions == ("cosine similarity", "percentile within area")
        tags = ds.tags()
        assert tags["UNIGEO_QUERY"] == "text 'lake'"
        assert tags["UNIGEO_MODEL_HASH"] == store.model_hash
        assert json.loads(tags["UNIGEO_PARAMS"]) == {"k": 3}
        assert np.isnan(ds.nodata)
        band1, band2 = ds.read(1), ds.read(2)
        # value at the pixel containing a tile centre = that tile's cosine
        x, y = store.grid.tile_center(5, 7)
        r, c = ds.index(x, y)
        assert (r, c) == (5, 7)
        assert band1[r, c] == pytest.approx(_reference(store, q)[5, 7], abs=2e-7)
    assert np.isnan(band1[2, 3]) and np.isnan(band2[2, 3])
    np.testing.assert_array_equal(band2, calibrate(s))


def test_heatmap_write_failure_leaves_no_file(fx, rng, tmp_path, monkeypatch):
    store = _random_store(fx, rng)
    s = similarity(store, np.ones(16))
    target = tmp_path / "h.tif"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    from osgeo import gdal

    monkeypatch.setattr(gdal.Band, "WriteArray", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_heatmap(target, store, s)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.tif"]
    with pytest.raises(InputError, match="shape"):
        write_heatmap(tmp_path / "x.tif", store, s[:2])


def _greedy_reference(scores, k, r):
    s = np.where(np.isnan(scores), -np.inf, scores).astype(np.float64)
    out = []
    while len(out) < k and np.isfinite(s).any() and s.max() > -np.inf:
        i, j = np.unravel_index(np.argmax(s), s.shape)
        out.append((i, j))
        s[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1] = -np.inf
    return out


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_top_k_ranks_and_nms_spacing(fx, rng, radius):
    store = _random_store(fx, rng, rows=20, cols=25, invalid=[(0, 1), (10, 10)])
    scores = similarity(store, rng.standard_normal(16))
    hits = top_k(store, scores, k=12, min_distance_tiles=radius)
    assert [h.rank for h in hits] == list(range(1, 13))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert [(h.row, h.col) for h in hits] == _greedy_reference(scores, 12, radius)
    for i, a in enumerate(hits):
        for b in hits[i + 1 :]:
            assert max(abs(a.row - b.row), abs(a.col - b.col)) > radius
    pct = calibrate(scores)
    h = hits[0]
    assert h.percentile == pytest.approx(pct[h.row, h.col]) and h.percentile == 100.0
    assert (h.x, h.y) == store.grid.tile_center(h.row, h.col)
    assert h.bounds == store.grid.tile_bounds(h.row, h.col)
    if radius == 0:
        flat = np.sort(scores[np.isfinite(scores)])[::-1][:12]
        np.testing.assert_array_equal([x.score for x in hits], flat)


def test_top_k_runs_out_of_area(fx, rng):
    store = _random_store(fx, rng, rows=3, cols=3)
    scores = similarity(store, np.ones(16))
    assert len(top_k(store, scores, k=5, min_distance_tiles=1)) <= 4
    assert len(top_k(store, scores, k=50, min_distance_tiles=0)) == 9
    with pytest.raises(InputError):
        top_k(store, scores, k=0)


@pytest.mark.parametrize("ext,as_polygons", [(".gpkg", False), (".geojson", True)])
def test_write_hits_readable_with_crs(fx, rng, tmp_path, ext, as_polygons):
    store = _random_store(fx, rng, rows=10, cols=10)
    hits = top_k(store, similarity(store, np.ones(16)), k=4)
    path = write_hits(
        tmp_path / f"hits{ext}", hits, store.crs, as_polygons, provenance={"query": "point"}
    )
    info = pyogrio.read_info(path)
    assert info["features"] == 4
    assert info["geometry_type"] == ("Polygon" if as_polygons else "Point")
    # GeoJSON is always WGS84 (RFC 7946); a GeoPackage keeps the store's CRS
    want = "EPSG:4326" if ext == ".geojson" else fx.UTM
    assert CRS.from_user_input(info["crs"]) == CRS.from_user_input(want)
    assert {"rank", "score", "percentile"} <= set(info["fields"])
    _, _, geom, fields = pyogrio.raw.read(path)
    names = list(info["fields"])
    ranks = fields[names.index("rank")]
    scores = fields[names.index("score")]
    np.testing.assert_array_equal(ranks, [1, 2, 3, 4])
    np.testing.assert_allclose(scores, [h.score for h in hits], rtol=1e-6)
    import shapely

    g = shapely.from_wkb(geom[0])
    if ext == ".geojson":  # back to the store's CRS to compare
        from pyproj import Transformer

        tr = Transformer.from_crs("EPSG:4326", fx.UTM, always_xy=True)
        g = shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    if as_polygons:
        assert g.bounds == pytest.approx(hits[0].bounds, abs=0.05)  # 7 GeoJSON decimals
    else:
        assert (g.x, g.y) == pytest.approx((hits[0].x, hits[0].y))
    if ext == ".gpkg":
        meta = pyogrio.read_info(path)["layer_metadata"]
        assert meta["UNIGEO_QUERY"] == "point"


def test_write_hits_failure_and_bad_extension(fx, rng, tmp_path, monkeypatch):
    store = _random_store(fx, rng)
    hits = top_k(store, similarity(store, np.ones(16)), k=2)
    with pytest.raises(InputError, match=r"\.gpkg, \.geojson or \.shp"):
        write_hits(tmp_path / "hits.kml", hits, store.crs)
    from engine.geo import vector

    real = vector._write_ogr

    def half_then_fail(path, *a, **k):
        real(path, *a, **k)  # the temporary file exists, then the writer fails
        raise RuntimeError("interrupted")

    monkeypatch.setattr(vector, "_write_ogr", half_then_fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_hits(tmp_path / "hits.gpkg", hits, store.crs)
    assert list(tmp_path.iterdir()) == []
    assert vector.vector_driver("a.GeoJSON") == "GeoJSON"


@pytest.mark.slow
def test_similarity_speed_million_tiles(fx):
    """10^6 tiles x D=256 float16: median of 5 runs must stay well under a second."""
    rng = np.random.default_rng(0)
    emb = (rng.standard_normal((1000, 1000, 256), dtype=np.float32) / 16).astype(np.float16)
    store = fx.FakeStore(fx.make_grid(1000, 1000), emb, np.ones((1000, 1000), bool))
    q = rng.standard_normal(256)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        similarity(store, q)
        times.append(time.perf_counter() - t)
    print(f"similarity 1e6 x 256 fp16: median {np.median(times) * 1000:.0f} ms")
    assert np.median(times) < 1.0  # ~0.14 s on an idle core; headroom for a shared CPU


def test_works_on_a_real_memory_mapped_store(fx, rng, tmp_path):
    """The engine's own EmbeddingStore (float16 memmap on disk) gives the same heatmap."""
    store_mod = pytest.importorskip("engine.store.npy")
    fake = _random_store(fx, rng, rows=9, cols=11, invalid=[(4, 4)])
    st = store_mod.EmbeddingStore.create(
        tmp_path / "s", fake.grid, 16, fake.model_hash, "src", block_tiles=4
    )
    for i, (r0, c0, nr, nc) in enumerate(st.blocks()):
        sl = (slice(r0, r0 + nr), slice(c0, c0 + nc))
        st.write_block(r0, c0, fake.embeddings[sl], fake.valid[sl])
        st.mark_done(i)
    real = st.finalize()
    assert isinstance(real.embeddings, np.memmap)
    q = rng.standard_normal(16)
    np.testing.assert_allclose(similarity(real, q, chunk_rows=2), similarity(fake, q), atol=1e-7)
    path = write_heatmap(tmp_path / "h.tif", real, similarity(real, q))
    with rasterio.open(path) as ds:
        assert ds.tags()["UNIGEO_MODEL_HASH"] == fake.model_hash


def test_real_naip_scene_point_query_end_to_end(fx, shared_data, tmp_path):
    """Real NAIP imagery (EPSG:26914), tiles described by band statistics: a point query's best
    hit is the clicked tile itself, and the outputs carry the scene's CRS."""
    from engine.grid import TileGrid
    from engine.search.query import point_query

    path = sorted((shared_data / "naip_north_dakota").glob("*.tif"))[-1]
    with rasterio.open(path) as ds:
        img = ds.read().astype(np.float64)
        left, top, crs = ds.bounds.left, ds.bounds.top, ds.crs.to_wkt()
        assert ds.res == (5.0, 5.0)
    t = 8  # 8 x 8 px tiles aligned to the raster's top-left corner
    rows, cols = img.shape[1] // t, img.shape[2] // t
    grid = TileGrid(crs, 5.0, t, t, 0, 0, rows, cols, left, top)
    blocks = img[:, : rows * t, : cols * t].reshape(4, rows, t, cols, t)
    feats = np.concatenate([blocks.mean(axis=(2, 4)), blocks.std(axis=(2, 4))]).transpose(1, 2, 0)
    feats -= feats.reshape(-1, 8).mean(axis=0)
    store = fx.make_store(feats, blocks.min(axis=(0, 2, 4)) > 0, grid)
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(*grid.tile_center(40, 60))
    q = point_query(store, lon, lat, crs="EPSG:4326")
    scores = similarity(store, q)
    hits = top_k(store, scores, k=5, min_distance_tiles=3)
    assert (hits[0].row, hits[0].col) == (40, 60) and hits[0].score > 0.999
    assert 0.0 < np.nanmedian(scores) < hits[-1].score < 1.0
    out = write_heatmap(tmp_path / "naip.tif", store, scores, provenance=q.provenance())
    with rasterio.open(out) as ds:
        assert CRS.from_user_input(ds.crs.to_wkt()) == CRS.from_user_input(crs)
        assert ds.shape == (rows, cols) and ds.transform.c == left and ds.transform.f == top
    info = pyogrio.read_info(write_hits(tmp_path / "naip.gpkg", hits, crs, as_polygons=True))
    assert info["features"] == 5 and CRS.from_user_input(info["crs"]).to_epsg() == 26914


# -- threaded scoring and the histogram calibration ---------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 4, None])
def test_threaded_scoring_is_identical_to_single_threaded(fx, rng, chunk_rows):
    store = _random_store(fx, rng, rows=61, cols=37, d=24, invalid=[(0, 0), (60, 36)])
    q = rng.standard_normal(24)
    one = similarity(store, q, chunk_rows=chunk_rows, workers=1)
    for workers in (2, 4):
        many = similarity(store, q, chunk_rows=chunk_rows, workers=workers)
        assert np.array_equal(one, many, equal_nan=True)
    mat = rng.standard_normal((24, 3)).astype(np.float32)
    a = [b for _, _, b in chunked_dot(store, mat, chunk_rows, workers=1)]
    b = [b for _, _, b in chunked_dot(store, mat, chunk_rows, workers=3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_threaded_scoring_propagates_read_errors(fx, rng):
    store = _random_store(fx, rng, rows=20, cols=5)
    emb = store.embeddings

    class Broken:
        shape, dtype = emb.shape, emb.dtype

        def __getitem__(self, key):
            if key.start >= 8:
                raise OSError("read error on the store")
            return emb[key]

    store.embeddings = Broken()
    with pytest.raises(OSError, match="read error"):
        similarity(store, np.ones(16), chunk_rows=2, workers=2)


def _tied_scores(rng, n):
    """Scores with a continuous part and many exact ties (rounded values), plus NaN."""
    s = rng.normal(0.2, 0.1, n).astype(np.float32)
    s[: n // 20] = np.round(s[: n // 20], 4)
    s[rng.random(n) < 0.05] = np.nan
    return s


def test_calibrate_histogram_within_bound_of_exact(rng):
    scores = _tied_scores(rng, 300_000).reshape(600, 500)
    ok = np.isfinite(scores)
    cal = Calibration.from_scores(scores[ok])
    assert cal.max_error <= CAL_MAX_ERROR  # so calibrate took the histogram path
    fast, exact = calibrate(scores), calibrate_exact(scores)
    assert np.array_equal(np.isnan(fast), ~ok)
    assert np.max(np.abs(fast[ok] - exact[ok])) <= cal.max_error
    v, p = scores[ok], fast[ok]
    assert p[v == v.min()][0] == 0.0 and p[v == v.max()][0] == 100.0
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(p[order]) >= 0)  # monotone
    tied = np.round(v, 4) == v
    for a in np.unique(v[tied])[:50]:  # ties share one percentile
        assert np.ptp(p[v == a]) == 0


def test_calibrate_falls_back_to_exact_on_heavy_ties(rng):
    scores = _tied_scores(rng, 100_000)
    scores[::2] = 0.25  # half the area has one score: no histogram bound holds
    assert Calibration.from_scores(scores[np.isfinite(scores)]).max_error > CAL_MAX_ERROR
    np.testing.assert_array_equal(calibrate(scores), calibrate_exact(scores))


def test_calibration_edge_cases():
    one = Calibration.from_scores(np.array([0.3], np.float32))
    assert one.percentiles(np.array([0.3, np.nan, 0.9], np.float32))[0] == 100.0
    same = Calibration.from_scores(np.full(10, 0.3, np.float32))
    np.testing.assert_array_equal(same.percentiles(np.full(3, 0.3, np.float32)), 50.0)
    two = Calibration.from_scores(np.array([0.1, 0.5], np.float32), bins=16)
    np.testing.assert_allclose(two.percentiles(np.array([0.0, 0.1, 0.5, 0.9])), [0, 0, 100, 100])
    with pytest.raises(InputError, match="no valid tile"):
        Calibration.from_scores(np.array([np.nan], np.float32))


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_top_k_ties_at_the_candidate_cut_resolve_row_major(fx, radius):
    # 3 distinct scores over 12 x 12 tiles: the k(2r+1)^2-th candidate always falls in a tie
    vals = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    pick = np.random.default_rng(3).integers(0, 3, (12, 12))
    store = fx.make_store(vals[pick])
    scores = similarity(store, np.array([1.0, 0.2]))
    hits = top_k(store, scores, 5, radius)
    assert [(h.row, h.col) for h in hits] == _greedy_reference(scores, 5, radius)
