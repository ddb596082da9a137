"""StoreCache eviction only ever counts and deletes the cache's own stores, nothing else."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from engine.store.cache import StoreCache
from tests.engine_geo.test_store import GRID, fill_store, new_store, random_embeddings


def _cached(cache: StoreCache, source: str, age_s: float) -> tuple[str, int]:
    """A finalised npy store of ``source`` in the cache, last used ``age_s`` seconds ago."""
    key = cache.key(source, "m1", GRID)
    store = new_store(cache.path_for(key), source=source)
    fill_store(store, *random_embeddings(3))
    store.finalize()
    t = time.time() - age_s
    os.utime(cache.path_for(key) / "store.json", (t, t))
    return key, sum(f.stat().st_size for f in cache.path_for(key).iterdir())


def _zarr_cached(cache: StoreCache, source: str, age_s: float) -> tuple[str, int]:
    """A finalised Zarr store of ``source`` in the cache, last used ``age_s`` seconds ago."""
    pytest.importorskip("zarr")
    from engine.store.zarr import ZarrEmbeddingStore

    key = cache.key(source, "m1", GRID)
    store = ZarrEmbeddingStore.create(cache.path_for(key), GRID, 6, "m1", source, None, 3)
    for bid, (r0, c0, nr, nc) in enumerate(store.blocks()):
        store.write_block(r0, c0, np.ones((nr, nc, 6), np.float32), np.ones((nr, nc), bool))
        store.mark_done(bid)
    store.finalize()
    t = time.time() - age_s
    os.utime(cache.path_for(key) / "zarr.json", (t, t))
    size = sum(f.stat().st_size for f in cache.path_for(key).rglob("*") if f.is_file())
    return key, size


def _write(path: Path, n_bytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(n_bytes))
    return path


def test_outputs_and_foreign_folders_survive_an_overflowing_cache(tmp_path):
    """The unsaved-project scenario: outputs inside the cache folder are never evicted."""
    cache = StoreCache(tmp_path / "c", max_bytes=0)
    (ka, size), (kb, _) = (_cached(cache, s, age) for s, age in (("a", 300), ("b", 100)))
    heat = _write(cache.root / "outputs" / "text_wetlands_20260101-120000.tif", 3 * size)
    own = new_store(cache.root / "my.store", source="mine")  # a user's store, not named by a key
    fill_store(own, *random_embeddings(4))
    own = own.finalize()
    odd = _write(cache.root / ("f" * 64) / "notes.txt", 10)  # key-like name, no store inside
    loose = _write(cache.root / "readme.txt", 5)
    assert cache.total_bytes() == 2 * size  # only the two stores count
    cache.max_bytes = size  # one store too many: the older one goes
    assert cache.evict() == [cache.path_for(ka)]
    assert not cache.path_for(ka).exists() and cache.path_for(kb).is_dir()
    cache.max_bytes = 0
    assert cache.evict() == [cache.path_for(kb)] and cache.total_bytes() == 0
    for f in (heat, odd, loose, own.folder / "store.json", own.folder / "embeddings.npy"):
        assert f.is_file(), f
    assert heat.stat().st_size == 3 * size
    assert cache.evict() == []  # nothing left that is the cache's to delete


def test_partials_count_but_are_never_evicted(tmp_path):
    cache = StoreCache(tmp_path / "c", max_bytes=0)
    ka, size = _cached(cache, "a", 50)
    writing = new_store(cache.path_for(cache.key("w", "m1", GRID)), source="w")
    part_bytes = sum(f.stat().st_size for f in writing.folder.iterdir())
    assert writing.folder.name.endswith(".partial")
    assert cache.total_bytes() == size + part_bytes
    assert cache.evict(keep=(ka,)) == []  # the only other entry is unfinished
    assert cache.evict() == [cache.path_for(ka)]
    assert writing.folder.is_dir() and cache.total_bytes() == part_bytes


def test_zarr_stores_are_counted_whole_and_evicted_by_last_use(tmp_path):
    cache = StoreCache(tmp_path / "c", max_bytes=0)
    kz, zsize = _zarr_cached(cache, "z", 400)  # oldest
    kn, nsize = _cached(cache, "n", 10)
    nested = [f for f in cache.path_for(kz).rglob("*") if f.is_file() and f.parent.name != kz]
    assert nested  # chunk files sit in sub-folders: they must be counted too
    assert cache.total_bytes() == zsize + nsize
    # a Zarr group that is not a UniGeo store (no "unigeo" attributes) is not the cache's
    foreign = _write(cache.root / ("0" * 64) / "zarr.json", 0)
    foreign.write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    cache.max_bytes = nsize
    assert cache.evict() == [cache.path_for(kz)]
    assert cache.path_for(kn).is_dir() and foreign.is_file()


def test_a_folder_swapped_after_listing_is_not_deleted(tmp_path, monkeypatch):
    """evict re-checks the store marker right before deleting (a folder replaced meanwhile)."""
    cache = StoreCache(tmp_path / "c", max_bytes=0)
    ka, _ = _cached(cache, "a", 100)
    entries = cache._entries()
    (cache.path_for(ka) / "store.json").unlink()  # no longer a store
    monkeypatch.setattr(StoreCache, "_entries", lambda self: entries)
    assert cache.evict() == [] and (cache.path_for(ka) / "embeddings.npy").is_file()
