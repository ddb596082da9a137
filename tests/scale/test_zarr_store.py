"""The Zarr embedding store: layout, resume rules, finalisation, open_store dispatch, and the
worker task run in-process (one model load per process, chunk then marker)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from engine.errors import StoreError
from engine.grid import TileGrid
from engine.store import open_store
from engine.store.base import partial_path
from engine.store.npy import EmbeddingStore
from engine.store.zarr import ZarrEmbeddingStore

pytest.importorskip("zarr")

GRID = TileGrid("EPSG:32633", 10.0, 16, 16, 100, 200, 5, 7)


def _filled(path, block_tiles=2):
    """A finished store whose tile (r, c) holds (r * 10 + c) / 100 in dim 0 (c odd: invalid);
    stored rows of a real store are unit vectors or zero, so every value stays within [0, 1]."""
    import zarr

    s = ZarrEmbeddingStore.create(path, GRID, 3, "h1", "fp1", {"bands": ["red"]}, block_tiles)
    emb = np.zeros((5, 7, 3), np.float16)
    emb[..., 0] = (np.arange(5)[:, None] * 10 + np.arange(7)[None, :]) / 100
    valid = (np.arange(7)[None, :] % 2 == 0).repeat(5, 0)
    zarr.open_array(s.folder / "embeddings", mode="r+")[...] = emb
    zarr.open_array(s.folder / "valid", mode="r+")[...] = valid
    zarr.open_array(s.folder / "done", mode="r+")[...] = 1
    return s.finalize(), emb, valid


def test_layout_chunks_and_description(tmp_path):
    import zarr

    s = ZarrEmbeddingStore.create(tmp_path / "a.zarr", GRID, 3, "h1", "fp1", {"x": 1}, 2)
    assert s.folder == partial_path(tmp_path / "a.zarr")
    g = zarr.open_group(s.folder, mode="r")
    assert g["embeddings"].chunks == (2, 2, 3) and g["embeddings"].dtype == np.float16
    assert g["valid"].chunks == (2, 2) and g["done"].chunks == (1,)
    assert g["embeddings"].compressors == ()  # uncompressed: queries read at memory speed
    assert s.info["n_blocks"] == len(s.blocks()) == 3 * 4
    assert s.remaining_blocks() == list(range(12)) and s.meta == {"x": 1}
    npy = EmbeddingStore.create(tmp_path / "b.store", GRID, 3, "h1", "fp1", {"x": 1}, 2)
    assert set(s.info) == set(npy.info)  # same description keys as store.json
    with pytest.raises(StoreError, match="12 block"):
        s.finalize()


def test_finalize_open_and_fancy_indexing(tmp_path):
    s, emb, valid = _filled(tmp_path / "a.zarr")
    assert not partial_path(tmp_path / "a.zarr").exists() and s.complete
    z = open_store(tmp_path / "a.zarr")
    assert isinstance(z, ZarrEmbeddingStore) and z.crs == "EPSG:32633" and z.dim == 3
    assert isinstance(z.valid, np.ndarray) and np.array_equal(z.valid, valid)
    assert z.embeddings.shape == (5, 7, 3) and z.embeddings.dtype == np.float16
    rows, cols = np.array([0, 4, 2]), np.array([6, 0, 3])
    assert np.array_equal(z.embeddings[rows, cols], emb[rows, cols])
    assert np.array_equal(z.embeddings[1:3], emb[1:3])
    assert float(z.embeddings[4, 6][0]) == float(np.float16(0.46))
    assert np.array_equal(np.asarray(z.embeddings), emb)
    assert np.array_equal(z.embeddings[valid], emb[valid])


def test_queries_work_on_zarr(tmp_path):
    from engine.search.query import region_query
    from engine.search.similarity import similarity

    z, emb, valid = _filled(tmp_path / "a.zarr")
    scores = similarity(z, np.array([1.0, 0, 0], np.float32))
    assert np.isnan(scores[~valid]).all() and np.isfinite(scores[valid]).all()
    x0, y0, x1, y1 = z.grid.tile_bounds(1, 2)
    q = region_query(z, shapely.box(x0, y0, x1, y1))
    assert q.vector()[0] > 0


def test_resume_rules(tmp_path):
    path = tmp_path / "a.zarr"
    s = ZarrEmbeddingStore.create(path, GRID, 3, "h1", "fp1", None, 2)
    s._done_arr[3] = 1
    s.close()  # the writer ends (or dies): its single-writer lock goes with it
    again = ZarrEmbeddingStore.resume(path, GRID, 3, "h1", "fp1", None, 2)
    assert 3 not in again.remaining_blocks() and len(again.remaining_blocks()) == 11
    again.close()
    with pytest.raises(StoreError, match="model_hash"):
        ZarrEmbeddingStore.resume(path, GRID, 3, "other", "fp1", None, 2)
    with pytest.raises(StoreError, match="block_tiles"):
        ZarrEmbeddingStore.resume(path, GRID, 3, "h1", "fp1", None, 4)
    fresh = ZarrEmbeddingStore.resume(path, GRID, 3, "h1", "fp2", None, 2, rebuild=True)
    assert len(fresh.remaining_blocks()) == 12 and fresh.source_fingerprint == "fp2"


def test_open_store_dispatch_and_errors(tmp_path):
    npy = EmbeddingStore.create(tmp_path / "n.store", GRID, 3, "h", "f", None, 8)
    npy.done[:] = True
    npy.finalize()
    assert isinstance(open_store(tmp_path / "n.store"), EmbeddingStore)
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing")
    ZarrEmbeddingStore.create(tmp_path / "p.zarr", GRID, 3, "h", "f", None, 2)
    with pytest.raises(StoreError, match="unfinished.*resume"):
        open_store(tmp_path / "p.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="neither"):
        open_store(tmp_path / "empty")
    (tmp_path / "g.zarr").mkdir()
    (tmp_path / "g.zarr" / "zarr.json").write_text(json.dumps({"attributes": {}}))
    with pytest.raises(StoreError, match="not a UniGeo embedding store"):
        open_store(tmp_path / "g.zarr")


def test_damaged_store_is_refused(tmp_path):
    import shutil

    _filled(tmp_path / "a.zarr")
    shutil.rmtree(tmp_path / "a.zarr" / "valid")
    with pytest.raises(StoreError, match="damaged"):
        open_store(tmp_path / "a.zarr")
