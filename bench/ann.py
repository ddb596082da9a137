"""ANN (FAISS IVF) vs brute-force top-k on a synthetic clustered store: recall@10 and latency.

Data: N unit vectors (D = 128, float16 memmap store, as the default bundle) drawn from a mixture
of C clusters on the sphere, each a von Mises-Fisher-like cloud (centre + isotropic Gaussian
noise, renormalised; within-cluster cosine to the centre ~0.7), plus 10 % uniform background.
Clusters are laid out in 8 x 8-tile patches, so neighbouring tiles look alike as land cover
does. Queries are 50 cluster centres with noise (cosine ~0.9 to the centre). This is a
realistic shape for tile embeddings, not real embeddings: recall on real stores may differ.

Brute force is the exact streamed :func:`engine.search.streaming.top_k_chunked` (NMS off) and the
in-memory ``top_k(similarity)``; the ground truth is one exact batched pass over the store.
The ANN rows are :func:`engine.search.ann.top_k_ann` (index search + exact re-score) at several nprobe.

    .venv/bin/python bench/ann.py --tiles 1000000 --json /tmp/ann.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    from .common import md_table
except ImportError:  # run as a script
    from common import md_table  # type: ignore[no-redef]

from engine.grid import TileGrid
from engine.search.ann import AnnIndex, top_k_ann
from engine.search.hits import top_k
from engine.search.scoring import chunked_dot
from engine.search.similarity import similarity
from engine.search.streaming import top_k_chunked
from engine.store.npy import EmbeddingStore

CRS = "EPSG:32614"


def _centres(rng: np.random.Generator, clusters: int, dim: int) -> np.ndarray:
    c = rng.standard_normal((clusters, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def make_clustered_store(
    path: Path, n_tiles: int, dim: int = 128, clusters: int = 2000, seed: int = 0
) -> tuple[EmbeddingStore, np.ndarray]:
    """A finalised store of ~``n_tiles`` clustered unit vectors and the cluster centres."""
    side = max(8, math.isqrt(n_tiles))
    grid = TileGrid(CRS, 5.0, 64, 64, 0, 0, side, side, 512_000.0, 5_120_000.0)
    rng = np.random.default_rng(seed)
    centres = _centres(rng, clusters, dim)
    patch_ids = rng.integers(0, clusters, (side // 8 + 1, side // 8 + 1))
    store = EmbeddingStore.create(path, grid, dim, "bench-ann-model", "bench-ann-source")
    try:
        for r0 in range(0, side, 64):  # slabs: 10^7 tiles never need float32 in memory
            r1 = min(r0 + 64, side)
            rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(side), indexing="ij")
            v = centres[patch_ids[rr // 8, cc // 8]]
            v += rng.standard_normal(v.shape, dtype=np.float32) / np.float32(math.sqrt(dim))
            background = rng.random((r1 - r0, side)) < 0.1
            v[background] = rng.standard_normal((int(background.sum()), dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=2, keepdims=True)
            store.write_block(r0, 0, v, np.ones((r1 - r0, side), bool))
        for b in range(store.info["n_blocks"]):
            store.mark_done(b)
        final = store.finalize()
    finally:
        store.close()
    return final, centres


def make_queries(centres: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """``n`` queries near random cluster centres (cosine ~0.9)."""
    rng = np.random.default_rng(seed)
    q = centres[rng.integers(0, len(centres), n)]
    q = q + 0.5 * rng.standard_normal(q.shape).astype(np.float32) / math.sqrt(q.shape[1])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top(store: EmbeddingStore, queries: np.ndarray, k: int) -> list[set[int]]:
    """The flat ids of each query's exact top-k, from one batched pass over the store."""
    best = [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in queries]
    cols = store.grid.cols
    for r0, _r1, block in chunked_dot(store, queries.T):
        flat = block.reshape(-1, len(queries))
        top = np.argpartition(-flat, k - 1, axis=0)[:k]
        for i in range(len(queries)):
            ids = np.concatenate([best[i][0], top[:, i] + r0 * cols])
            vals = np.concatenate([best[i][1], flat[top[:, i], i]])
            keep = np.argsort(-vals, kind="stable")[:k]
            best[i] = (ids[keep], vals[keep])
    return [set(ids.tolist()) for ids, _ in best]


def _median_ms(fn: Any, items: Any) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(
    tiles: int = 1_000_000,
    dim: int = 128,
    clusters: int = 2000,
    n_queries: int = 50,
    kind: str = "ivf",
    nlist: int | None = None,
    nprobes: tuple[int, ...] = (1, 4, 8, 16, 32, 64),
    brute_queries: int = 5,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Build the store and the index, then time brute force and ANN on the same queries."""
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-ann-", dir=workdir) as tmp:
        t0 = time.perf_counter()
        store, centres = make_clustered_store(Path(tmp) / "store", tiles, dim, clusters)
        make_s = time.perf_counter() - t0
        queries = make_queries(centres, n_queries)
        truth = exact_top(store, queries, 10)
        bq = queries[:brute_queries]
        rows = [
            {"method": "brute force, top_k_chunked (streamed)", "nprobe": "-", "recall@10": 1.0,
             "median_ms": _median_ms(lambda q: top_k_chunked(store, q, 10, 0), bq)},
            {"method": "brute force, top_k(similarity) (in memory)", "nprobe": "-",
             "recall@10": 1.0,
             "median_ms": _median_ms(lambda q: top_k(store, similarity(store, q), 10, 0), bq)},
        ]  # fmt: skip
        t0 = time.perf_counter()
        index = AnnIndex.build(store, kind=kind, nlist=nlist)
        build_s = time.perf_counter() - t0
        index_mb = index.save(Path(tmp) / "ann").joinpath("index.faiss").stat().st_size / 1e6
        cols = store.grid.cols
        for nprobe in [p for p in nprobes if p <= index.nlist]:
            recalls, times = [], []
            for q, want in zip(queries, truth, strict=True):
                t0 = time.perf_counter()
                hits = top_k_ann(store, index, q, 10, 0, nprobe=nprobe)
                times.append(time.perf_counter() - t0)
                recalls.append(len({h.row * cols + h.col for h in hits} & want) / 10)
            rows.append({"method": f"ANN {kind}, top_k_ann", "nprobe": nprobe,
                         "recall@10": float(np.mean(recalls)),
                         "median_ms": 1e3 * statistics.median(times)})  # fmt: skip
        meta = {
            "tiles": store.grid.n_tiles, "dim": dim, "clusters": clusters, "queries": n_queries,
            "kind": kind, "nlist": index.nlist, "default_nprobe": index.default_nprobe,
            "store_mb": store.grid.n_tiles * dim * 2 / 1e6, "make_store_s": make_s,
            "build_s": build_s, "index_mb": index_mb, "peak_rss_mb": _peak_rss_mb(),
        }  # fmt: skip
        store.close()
        shutil.rmtree(Path(tmp) / "store", ignore_errors=True)
    return {"meta": meta, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--kind", default="ivf", help="ivf, ivf-sq8 or flat")
    ap.add_argument("--nlist", type=int, default=None, help="default ~sqrt(valid tiles)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    ap.add_argument("--brute-queries", type=int, default=5, help="queries timed brute force")
    ap.add_argument("--workdir", type=Path, default=None, help="where the store is built")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    res = run(a.tiles, a.dim, a.clusters, a.queries, a.kind, a.nlist, tuple(a.nprobe),
              a.brute_queries, a.workdir)  # fmt: skip
    print(md_table([{"key": k, "value": v} for k, v in res["meta"].items()]))
    print(md_table(res["rows"]))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    print(f"[ann] done; peak RSS {res['meta']['peak_rss_mb']:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
