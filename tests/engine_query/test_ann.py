"""The FAISS ANN index: recall against brute force, hits like top_k, save/load, stale refusal."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("faiss")

from engine.errors import CancelledError, EngineError, InputError, StoreError  # noqa: E402
from engine.search.ann import AnnIndex, default_folder, top_k_ann  # noqa: E402
from engine.search.hits import Hit, top_k  # noqa: E402
from engine.search.similarity import similarity  # noqa: E402
from engine.search.streaming import top_k_chunked  # noqa: E402
from engine.store.npy import EmbeddingStore  # noqa: E402

ROWS, COLS, D = 200, 100, 32  # 20,000 tiles


def _clustered(rng, n, d, clusters=200, spread=0.35):
    """Unit vectors around random unit centres (a von Mises-Fisher-like mixture)."""
    centres = rng.standard_normal((clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.integers(0, clusters, n)
    v = centres[label] + spread * rng.standard_normal((n, d)) / np.sqrt(d)
    return v / np.linalg.norm(v, axis=1, keepdims=True), centres


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real on-disk store of 20k clustered tiles (2 % invalid) and an IVF index over it."""
    rng = np.random.default_rng(7)
    vec, centres = _clustered(rng, ROWS * COLS, D)
    vec = vec.reshape(ROWS, COLS, D)
    valid = rng.random((ROWS, COLS)) > 0.02
    vec[~valid] = 0.0
    from engine.grid import TileGrid

    grid = TileGrid("EPSG:32633", 1.0, 10, 10, 0, 0, ROWS, COLS, 500_000.0, 5_000_000.0)
    path = tmp_path_factory.mktemp("ann") / "store"
    st = EmbeddingStore.create(path, grid, D, "modelA", "sourceA", block_tiles=64)
    for i, (r0, c0, nr, nc) in enumerate(st.blocks()):
        st.write_block(r0, c0, vec[r0 : r0 + nr, c0 : c0 + nc], valid[r0 : r0 + nr, c0 : c0 + nc])
        st.mark_done(i)
    store = st.finalize()
    index = AnnIndex.build(store, kind="ivf")
    queries = centres[:20] + 0.2 * rng.standard_normal((20, D)) / np.sqrt(D)
    return store, index, queries


def test_recall_at_10_against_brute_force(built):
    store, index, queries = built
    assert index.ntotal == int(store.valid.sum()) and index.nlist == 140
    recalls = []
    for q in queries:
        truth = {(h.row, h.col) for h in top_k(store, similarity(store, q), 10, 0)}
        rows, cols, scores = index.search(q, 10)
        assert np.all(np.diff(scores) <= 1e-6)  # best first
        recalls.append(len(truth & set(zip(rows.tolist(), cols.tolist(), strict=True))) / 10)
    assert np.mean(recalls) >= 0.9, recalls
    # probing every list is exhaustive: recall 1
    rows, cols, _ = index.search(queries[0], 10, nprobe=index.nlist)
    truth = {(h.row, h.col) for h in top_k_chunked(store, queries[0], 10, 0)}
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == truth


@pytest.mark.parametrize("radius", [0, 2])
def test_top_k_ann_hits_match_top_k(built, radius):
    store, index, queries = built
    q = queries[3]
    scores = similarity(store, q)
    want = top_k(store, scores, 8, radius)
    got = top_k_ann(store, index, q, 8, radius, nprobe=index.nlist)
    assert all(isinstance(h, Hit) for h in got)
    assert [(h.rank, h.row, h.col, h.x, h.y, h.bounds) for h in got] == [
        (h.rank, h.row, h.col, h.x, h.y, h.bounds) for h in want
    ]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-6)
    # percentiles estimated from the index's sample of 16384 of the 19602 valid tiles
    np.testing.assert_allclose([h.percentile for h in got], [h.percentile for h in want], atol=0.05)
    with pytest.raises(InputError):
        top_k_ann(store, index, q, 0)


def test_save_load_round_trip(built):
    store, index, queries = built
    folder = index.save(default_folder(store))
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "index.json", "sample.npy"]
    info = json.loads((folder / "index.json").read_text())
    assert info["model_hash"] == "modelA" and info["source_fingerprint"] == "sourceA"
    assert info["valid_count"] == int(store.valid.sum()) and info["grid"]["cols"] == COLS
    again = AnnIndex.load(store)
    for q in queries[:3]:
        a, b = index.search(q, 10, 8), again.search(q, 10, 8)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert again.kind == "ivf" and again.ntotal == index.ntotal


def test_stale_or_damaged_index_is_refused(built, tmp_path):
    store, index, _ = built
    folder = index.save(tmp_path / "ann")
    for key, value in (("model_hash", "modelB"), ("source_fingerprint", "sourceB")):
        old = store.info[key]
        store.info[key] = value
        try:
            with pytest.raises(StoreError, match=key):
                AnnIndex.load(store, folder)
        finally:
            store.info[key] = old
    store.valid = store.valid.copy()
    store.valid[0, 0] = not store.valid[0, 0]
    with pytest.raises(StoreError, match="valid_count"):
        AnnIndex.load(store, folder)
    store.valid[0, 0] = not store.valid[0, 0]
    blob = bytearray((folder / "index.faiss").read_bytes())
    blob[-5] ^= 0xFF
    (folder / "index.faiss").write_bytes(bytes(blob))
    with pytest.raises(StoreError, match="damaged"):
        AnnIndex.load(store, folder)
    with pytest.raises(StoreError, match="no ANN index"):
        AnnIndex.load(store, tmp_path / "nowhere")


def test_flat_kind_is_exact_and_bad_arguments(built):
    store, _, queries = built
    flat = AnnIndex.build(store, kind="flat", sample_size=1000)
    q = queries[5]
    want = top_k(store, similarity(store, q), 5, 1)
    got = top_k_ann(store, flat, q, 5, 1)
    assert [(h.row, h.col) for h in got] == [(h.row, h.col) for h in want]
    with pytest.raises(InputError, match="kind"):
        AnnIndex.build(store, kind="lsh")
    with pytest.raises(InputError, match="nlist"):
        AnnIndex.build(store, nlist=10**6)
    with pytest.raises(InputError, match="dimension"):
        flat.search(np.ones(D + 1), 3)
    seen = []
    with pytest.raises(CancelledError):
        AnnIndex.build(store, progress=seen.append, is_canceled=lambda: len(seen) >= 2)
    assert seen and max(seen) < 0.5  # stopped in the sampling pass


def test_missing_faiss_names_the_scale_extra(built, monkeypatch):
    store, _, _ = built
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(EngineError, match="scale"):
        AnnIndex.build(store)
