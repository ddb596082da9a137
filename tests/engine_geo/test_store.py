"""Tests of engine/store.py: round trip, atomic finalise, resume, refusal to mix, LRU cache."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from engine.errors import InputError, StoreError
from engine.grid import TileGrid
from engine.store.base import partial_path
from engine.store.cache import StoreCache
from engine.store.npy import EmbeddingStore

GRID = TileGrid.for_extent("EPSG:32633", 1.0, 16, None, (500_000, 5_000_000, 500_100, 5_000_070))
DIM = 6


def random_embeddings(seed: int, shape=GRID.shape) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((*shape, DIM)).astype(np.float32)
    valid = rng.random(shape) > 0.2
    emb[~valid] = 0
    return emb, valid


def fill_store(
    store: EmbeddingStore, emb: np.ndarray, valid: np.ndarray, stop: int | None = None
) -> None:
    for bid, (r0, c0, nr, nc) in enumerate(store.blocks()):
        if stop is not None and bid >= stop:
            return
        store.write_block(
            r0, c0, emb[r0 : r0 + nr, c0 : c0 + nc], valid[r0 : r0 + nr, c0 : c0 + nc]
        )
        store.mark_done(bid)


def new_store(
    path, model_hash="m1", source="s1", block_tiles=3, grid=GRID, **meta
) -> EmbeddingStore:
    meta = {
        "model_name": "unigeo",
        "model_version": "1",
        "bands": ["red"],
        "scaling": "uint8/255",
        **meta,
    }
    return EmbeddingStore.create(path, grid, DIM, model_hash, source, meta, block_tiles=block_tiles)


def test_round_trip(tmp_path):
    path = tmp_path / "s"
    emb, valid = random_embeddings(0)
    store = new_store(path, note="hello")
    assert GRID.shape == (5, 7) and len(store.blocks()) == 6
    fill_store(store, emb, valid)
    assert not path.exists()  # nothing final before finalize
    out = store.finalize()
    assert path.is_dir() and not partial_path(path).exists()
    again = EmbeddingStore.open(path)
    for s in (out, again):
        assert s.grid == GRID and s.crs == "EPSG:32633" and s.dim == DIM and s.model_hash == "m1"
        assert s.embeddings.dtype == np.float16 and s.embeddings.shape == (5, 7, DIM)
        np.testing.assert_array_equal(s.embeddings, emb.astype(np.float16))
        np.testing.assert_array_equal(s.valid, valid)
        assert s.meta == {"note": "hello"} and s.complete
    info = json.loads((path / "store.json").read_text())
    assert (
        info["model_name"] == "unigeo"
        and info["bands"] == ["red"]
        and info["scaling"] == "uint8/255"
    )
    assert info["block_tiles"] == 3 and info["source_fingerprint"] == "s1" and info["complete"]
    assert sorted(p.name for p in path.iterdir()) == [
        "done.npy",
        "embeddings.npy",
        "nodata.npy",  # per-tile no-data fraction
        "store.json",
        "valid.npy",
    ]
    with pytest.raises(StoreError, match="read-only"):
        again.write_block(0, 0, emb[:1, :1], valid[:1, :1])


def test_finalize_needs_every_block_and_a_crash_keeps_the_old_store(tmp_path):
    path = tmp_path / "s"
    old_emb, old_valid = random_embeddings(1)
    s = new_store(path)
    fill_store(s, old_emb, old_valid)
    s.finalize()
    new = new_store(path)
    fill_store(new, *random_embeddings(2), stop=4)
    with pytest.raises(StoreError, match="2 block"):
        new.finalize()
    new.close()  # "crash": the .partial stays, the old store is untouched
    kept = EmbeddingStore.open(path)
    np.testing.assert_array_equal(kept.embeddings, old_emb.astype(np.float16))
    assert partial_path(path).is_dir()
    # finishing the new one replaces the old at the very end
    again = EmbeddingStore.resume(path, GRID, DIM, "m1", "s1", block_tiles=3)
    assert again.remaining_blocks() == [4, 5]
    emb2, valid2 = random_embeddings(2)
    fill_store(again, emb2, valid2)
    again.finalize()
    np.testing.assert_array_equal(EmbeddingStore.open(path).embeddings, emb2.astype(np.float16))
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_resume_equals_fresh(tmp_path):
    emb, valid = random_embeddings(3)
    fresh = new_store(tmp_path / "fresh")
    fill_store(fresh, emb, valid)
    fresh.finalize()
    part = new_store(tmp_path / "res")
    fill_store(part, emb, valid, stop=2)
    part.close()
    res = EmbeddingStore.resume(tmp_path / "res", GRID, DIM, "m1", "s1", block_tiles=3)
    assert res.remaining_blocks() == [2, 3, 4, 5]
    for bid in res.remaining_blocks():
        r0, c0, nr, nc = res.blocks()[bid]
        res.write_block(r0, c0, emb[r0 : r0 + nr, c0 : c0 + nc], valid[r0 : r0 + nr, c0 : c0 + nc])
        res.mark_done(bid)
    res.finalize()
    for name in ("embeddings.npy", "valid.npy", "done.npy"):
        assert (tmp_path / "res" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


@pytest.mark.parametrize(
    "change",
    [
        {"model_hash": "other"},
        {"source": "other"},
        {"block_tiles": 2},
        {"grid": GRID.subgrid((500_000, 5_000_000, 500_050, 5_000_050))},
    ],
)
def test_resume_refuses_to_mix(tmp_path, change):
    path = tmp_path / "s"
    s = new_store(path)
    fill_store(s, *random_embeddings(4), stop=1)
    s.close()
    kw = {"model_hash": "m1", "source": "s1", "block_tiles": 3, "grid": GRID} | change
    args = (path, kw["grid"], DIM, kw["model_hash"], kw["source"])
    with pytest.raises(StoreError, match="never mixed"):
        EmbeddingStore.resume(*args, block_tiles=kw["block_tiles"])
    rebuilt = EmbeddingStore.resume(*args, block_tiles=kw["block_tiles"], rebuild=True)
    assert not rebuilt.done.any() and rebuilt.model_hash == kw["model_hash"]


def test_resume_without_partial_creates_one(tmp_path):
    s = EmbeddingStore.resume(tmp_path / "s", GRID, DIM, "m1", "s1", block_tiles=3)
    assert s.remaining_blocks() == list(range(6)) and partial_path(tmp_path / "s").is_dir()


def test_bad_stores_are_refused(tmp_path):
    with pytest.raises(StoreError, match="embed the raster first"):
        EmbeddingStore.open(tmp_path / "none")
    s = new_store(tmp_path / "s")
    with pytest.raises(StoreError, match="resume it"):
        EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(InputError, match="shape"):
        s.write_block(0, 0, np.zeros((2, 2, DIM + 1)), np.zeros((2, 2), bool))
    with pytest.raises(InputError, match="outside"):
        s.write_block(4, 6, np.zeros((2, 2, DIM)), np.zeros((2, 2), bool))
    fill_store(s, *random_embeddings(5))
    s.finalize()
    meta = tmp_path / "s" / "store.json"
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps(info | {"dim": DIM + 1}))
    with pytest.raises(StoreError, match="does not match"):
        EmbeddingStore.open(tmp_path / "s")
    meta.write_text(json.dumps(info | {"format_version": 99}))
    with pytest.raises(StoreError, match="newer"):
        EmbeddingStore.open(tmp_path / "s")
    meta.write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        EmbeddingStore.open(tmp_path / "s")
    meta.write_text(json.dumps(info | {"complete": False}))
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore.open(tmp_path / "s")
    empty = TileGrid("EPSG:32633", 1.0, 16, 16, 0, 0, 0, 0)
    with pytest.raises(InputError, match="empty"):
        new_store(tmp_path / "e", grid=empty)


def _cached(cache: StoreCache, source: str) -> tuple[str, int]:
    key = cache.key(source, "m1", GRID)
    s = new_store(cache.path_for(key), source=source)
    fill_store(s, *random_embeddings(6))
    s.finalize()
    return key, sum(f.stat().st_size for f in cache.path_for(key).iterdir())


def _age(cache: StoreCache, key: str, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(cache.path_for(key) / "store.json", (t, t))


def test_cache_key_and_lookup(tmp_path):
    cache = StoreCache(tmp_path / "c", max_bytes=10**9)
    k = cache.key("s1", "m1", GRID)
    assert k == cache.key("s1", "m1", GRID) and len(k) == 64
    others = {cache.key("s2", "m1", GRID), cache.key("s1", "m2", GRID)}
    others.add(cache.key("s1", "m1", GRID.subgrid((500_000, 5_000_000, 500_050, 5_000_050))))
    others.add(cache.key("s1", "m1", TileGrid.from_dict(GRID.to_dict() | {"stride_px": 8})))
    assert k not in others and len(others) == 4
    assert cache.get_or_none(k) is None
    _cached(cache, "s1")
    got = cache.get_or_none(k)
    assert got is not None and got.grid == GRID


def test_cache_evicts_least_recently_used_but_never_a_partial(tmp_path):
    cache = StoreCache(tmp_path / "c", max_bytes=0)
    (ka, size), (kb, _), (kc, _) = (_cached(cache, s) for s in ("a", "b", "c"))
    _age(cache, ka, 300)
    _age(cache, kb, 200)
    _age(cache, kc, 100)
    assert cache.get_or_none(ka) is not None  # a is now the most recently used
    writing = new_store(cache.path_for(cache.key("d", "m1", GRID)), source="d")
    cache.max_bytes = 3 * size + 10
    assert cache.total_bytes() > cache.max_bytes
    removed = cache.evict()
    assert [p.name for p in removed] == [kb]
    assert cache.get_or_none(ka) and cache.get_or_none(kc) and writing.folder.is_dir()
    cache.max_bytes = 0
    assert set(p.name for p in cache.evict(keep=(ka,))) == {kc}
    assert writing.folder.is_dir() and cache.path_for(ka).is_dir()


def test_failed_final_move_keeps_the_old_store_and_can_finish_later(tmp_path, monkeypatch):
    path = tmp_path / "s"
    old_emb, old_valid = random_embeddings(7)
    s = new_store(path)
    fill_store(s, old_emb, old_valid)
    s.finalize()
    new = new_store(path)
    new_emb, new_valid = random_embeddings(8)
    fill_store(new, new_emb, new_valid)
    real_replace, calls = os.replace, []

    def flaky(a, b):
        calls.append(a)
        if str(a).endswith(".partial"):  # moving the .partial in fails (a locked file on Windows)
            raise PermissionError("locked")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(StoreError, match="locked"):
        new.finalize()
    monkeypatch.setattr(os, "replace", real_replace)
    assert any(".old-" in str(a) for a in calls)  # the old store was moved aside, then back
    np.testing.assert_array_equal(EmbeddingStore.open(path).embeddings, old_emb.astype(np.float16))
    again = EmbeddingStore.resume(path, GRID, DIM, "m1", "s1", block_tiles=3)
    assert again.remaining_blocks() == []
    again.finalize()
    np.testing.assert_array_equal(EmbeddingStore.open(path).embeddings, new_emb.astype(np.float16))
