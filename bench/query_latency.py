"""Heatmap query latency (``similarity`` + ``calibrate``) and ``top_k`` from cached stores.

Synthetic float16 memmap stores of 10^4, 10^5 and 10^6 tiles (D = 128, as the default bundle)
are built with ``EmbeddingStore.create``, finalised, reopened and queried warm (page cache hot,
as a cached store is in an interactive session). Besides the in-memory path (threaded scoring +
histogram calibration) each row reports its parts, the single-threaded scoring and the exact
(argsort) calibration for reference, the GeoTIFF write of both heatmap paths, and the streamed
(chunk-by-chunk) top-k. Variants are timed round-robin, so machine load hits them alike.

    .venv/bin/python bench/query_latency.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    from .common import time_interleaved
except ImportError:  # run as a script
    from common import time_interleaved  # type: ignore[no-redef]

from engine.grid import TileGrid
from engine.search.calibration import calibrate, calibrate_exact
from engine.search.hits import top_k
from engine.search.similarity import similarity, write_heatmap
from engine.search.streaming import top_k_chunked, write_heatmap_chunked
from engine.store.npy import EmbeddingStore

CRS = "EPSG:32614"


def make_store(path: Path, n_tiles: int, dim: int = 128, seed: int = 0) -> EmbeddingStore:
    """A finalised store of about ``n_tiles`` unit vectors (square grid, 2 % invalid tiles)."""
    side = max(1, math.isqrt(n_tiles))
    gsd, px = 5.0, 64
    span, x0, y0 = side * gsd * px, 512_000.0, 5_120_000.0  # x0, y0 on the tile lattice
    grid = TileGrid.for_extent(
        CRS, gsd, px, None, (x0, y0, x0 + span - 1, y0 + span - 1), max_tiles=max(n_tiles, 10)
    )
    store = EmbeddingStore.create(path, grid, dim, "bench-model", "bench-source")
    rng = np.random.default_rng(seed)
    try:
        for r0 in range(0, grid.rows, 64):  # in slabs so 10^6 tiles never need fp32 in memory
            r1 = min(r0 + 64, grid.rows)
            v = rng.standard_normal((r1 - r0, grid.cols, dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=2, keepdims=True)
            valid = rng.random((r1 - r0, grid.cols)) > 0.02
            v[~valid] = 0.0
            store.write_block(r0, 0, v, valid)
        for b in range(store.info["n_blocks"]):
            store.mark_done(b)
        final = store.finalize()
    finally:
        store.close()
    return final


def _cpu_ms(fn: Any, repeats: int) -> float:
    """Median process CPU time (ms, all threads) of ``fn()``: what a busy machine cannot hide.

    On a shared machine wall time mostly measures the neighbours; CPU time is the work done.
    On idle cores the wall time of threaded scoring is about CPU time / cores.
    """
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return 1e3 * statistics.median(times)


def bench_store(
    store: EmbeddingStore, repeats: int = 5, k: int = 20, workdir: Path | None = None
) -> dict[str, Any]:
    """Median latency (ms) of a heatmap (similarity + calibrate), its parts, variants and top_k."""
    q = np.random.default_rng(1).standard_normal(store.dim).astype(np.float32)
    scores = similarity(store, q)
    pct = calibrate(scores)
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-tif-", dir=workdir) as tmp:
        fns = {
            "heatmap": lambda: calibrate(similarity(store, q)),
            "similarity": lambda: similarity(store, q),
            "calibrate": lambda: calibrate(scores),
            f"top{k}": lambda: top_k(store, scores, k, percentiles=pct),
            "similarity_1thread": lambda: similarity(store, q, workers=1),
            "calibrate_exact": lambda: calibrate_exact(scores),
            "heatmap_tif": lambda: write_heatmap(Path(tmp) / "a.tif", store, similarity(store, q)),
            "chunked_heatmap_tif": lambda: write_heatmap_chunked(Path(tmp) / "b.tif", store, q),
            f"chunked_top{k}": lambda: top_k_chunked(store, q, k),
        }
        t = time_interleaved(fns, 1, repeats)
    n = store.grid.n_tiles
    row: dict[str, Any] = {"tiles": n, "dim": store.dim, "store_mb": n * store.dim * 2 / 1e6}
    row.update({f"{name}_ms": 1e3 * t[name].median for name in fns})
    row["heatmap_best_ms"] = 1e3 * t["heatmap"].best
    row["heatmap_cpu_ms"] = _cpu_ms(fns["heatmap"], repeats)
    row["GB_per_s"] = n * store.dim * 2 / t["similarity"].median / 1e9
    return row


def run(
    sizes: list[int] | None = None, dim: int = 128, repeats: int = 5,
    workdir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Build and query one store per size; each store is removed before the next is built."""
    sizes = sizes or [10_000, 100_000, 1_000_000]
    rows = []
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-query-", dir=workdir) as tmp:
        for n in sizes:
            path = Path(tmp) / f"store_{n}"
            store = make_store(path, n, dim)
            rows.append(bench_store(store, repeats, workdir=workdir))
            store.close()
            shutil.rmtree(path, ignore_errors=True)
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(json.dumps(run(a.sizes, a.dim, a.repeats), indent=1))


if __name__ == "__main__":
    main()
