"""Load: 1,000 heatmap queries on one store with no growth in memory or open files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.grid import TileGrid

N_QUERIES = 1000
WRITE_EVERY = 50  # write_heatmap for every 50th query: 20 GeoTIFFs
ROWS, COLS, DIM = 200, 200, 32  # 40,000 tiles: 2.5 MB of float16 embeddings
RSS_BOUND_KB = 16 * 1024  # 16 MB: far below 1,000 leaked score arrays (1,000 × 160 KB)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    from engine.store.npy import EmbeddingStore

    rng = np.random.default_rng(7)
    grid = TileGrid("EPSG:32633", 10.0, 16, 16, -31_250, 3_125, ROWS, COLS)
    path = tmp_path_factory.mktemp("load") / "big.store"
    store = EmbeddingStore.create(path, grid, DIM, "hash-load", "fp-load", block_tiles=COLS)
    emb = rng.standard_normal((ROWS, COLS, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    valid = rng.random((ROWS, COLS)) > 0.05
    for bid, (r0, c0, nr, nc) in enumerate(store.blocks()):
        store.write_block(
            r0, c0, emb[r0 : r0 + nr, c0 : c0 + nc], valid[r0 : r0 + nr, c0 : c0 + nc]
        )
        store.mark_done(bid)
    final = store.finalize()
    return final


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_thousand_heatmap_queries_do_not_grow_memory_or_fds(big_store, tmp_path):
    from engine.search.calibration import calibrate
    from engine.search.similarity import similarity, write_heatmap

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((N_QUERIES, DIM)).astype(np.float32)

    def one(i: int) -> None:
        scores = similarity(big_store, queries[i])
        pct = calibrate(scores)
        assert scores.shape == (ROWS, COLS) and np.nanmax(pct) == 100.0
        if i % WRITE_EVERY == 0:
            out = tmp_path / f"h{i // WRITE_EVERY % 2}.tif"  # overwrite two files in turn
            write_heatmap(out, big_store, scores, provenance={"query": f"q{i}"})

    for i in range(50):  # warm-up: allocator pools, GDAL driver and cache settle
        one(i)
    rss0, fds0 = _rss_kb(), _open_fds()
    for i in range(50, N_QUERIES):
        one(i)
    rss1, fds1 = _rss_kb(), _open_fds()
    print(f"RSS {rss0} -> {rss1} kB ({rss1 - rss0:+d}), fds {fds0} -> {fds1}")
    assert rss1 - rss0 < RSS_BOUND_KB
    assert fds1 <= fds0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h0.tif", "h1.tif"]
