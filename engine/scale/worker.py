"""The Dask task of a distributed embedding job: what runs in each worker process.

Each worker process keeps its models (one onnxruntime session each, warmed once) and readers in
module-level LRU caches, so a task costs only its own reads and inference. A task
(:func:`run_block`) reads its block's batches with :func:`~engine.raster.batch.read_chips` in a small thread
pool, encodes them with :func:`~engine.embed.job.encode_into`, writes the block's chunks and only then
its ``done`` marker. The client side is :mod:`.distributed`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embed.job import encode_into
from ..errors import InputError, ModelContractError, RasterInputError
from ..grid import TileGrid
from ..model.contract import Modality
from ..raster.batch import read_chips
from ..raster.layout import BandLayout
from ..raster.mosaic import SourceSpec
from ..store.zarr import mark_done_at, write_block_at

_READERS_PER_WORKER = 2  # read threads per worker process, overlapping reads with inference
_MAX_CACHED = 4  # models / readers kept per worker process (a worker may serve several jobs)


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to embed a block; small and picklable."""

    bundle_dir: str
    model_hash: str
    provider: str | None
    threads: int
    modality: str
    sources: SourceSpec
    source_fingerprint: str
    grid: dict
    folder: str  # the store's ``.partial`` folder
    block_tiles: int
    bands: tuple[str, ...]  # the encoder's bands
    batch_size: int
    max_nodata: float
    read_bands: tuple[str, ...] | None = None  # those the rasters have (None: all of them)


_lock = threading.Lock()
_models: OrderedDict[tuple, Any] = OrderedDict()
_readers: OrderedDict[SourceSpec, Any] = OrderedDict()
_pool: ThreadPoolExecutor | None = None
MODEL_LOADS = {"count": 0}  # per process; read back by tests with client.run


def _cached(cache: OrderedDict, key: Any, make: Callable[[], Any], close: str) -> Any:
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        while len(cache) > _MAX_CACHED:
            getattr(cache.popitem(last=False)[1], close)()
        return value


def _load_model(job: BlockJob) -> Any:
    from ..model.core import UniGeoModel

    model = UniGeoModel.load(job.bundle_dir, providers=job.provider, threads=job.threads)
    if model.model_hash != job.model_hash:
        raise ModelContractError(
            f"the bundle {job.bundle_dir} on worker pid {os.getpid()} differs from the client's "
            "(model hash mismatch); give every worker the same bundle files"
        )
    model.encoder_session(Modality(job.modality))  # warm once, here, not in the first task
    MODEL_LOADS["count"] += 1
    return model


def _open_reader(job: BlockJob) -> Any:
    reader = job.sources.open()
    if reader.fingerprint() != job.source_fingerprint:
        reader.close()
        raise RasterInputError(
            f"the input rasters on worker pid {os.getpid()} differ from the client's (size, time "
            "or path); give every worker the same files at the same paths"
        )
    return reader


def worker_state(job: BlockJob) -> tuple[Any, Any]:
    """This process's model and reader for ``job``: created on first use, then reused."""
    global _pool
    key = (job.bundle_dir, job.model_hash, job.provider, job.threads)
    model = _cached(_models, key, lambda: _load_model(job), "close")
    reader = _cached(_readers, job.sources, lambda: _open_reader(job), "close")
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_READERS_PER_WORKER, thread_name_prefix="unigeo-read")
    return model, reader


def warm(job: BlockJob) -> int:
    """Load this process's model and reader for ``job`` now; return the process id."""
    worker_state(job)
    return os.getpid()


def model_loads() -> tuple[int, int]:
    """``(pid, models loaded in this process)``; run on every worker with ``client.run``."""
    return os.getpid(), MODEL_LOADS["count"]


def block_of(grid: TileGrid, block_tiles: int, bid: int) -> tuple[int, int, int, int]:
    """Block ``bid`` of ``grid.iter_blocks(block_tiles)`` without listing them all."""
    per_row = -(-grid.cols // block_tiles)
    r0, c0 = (bid // per_row) * block_tiles, (bid % per_row) * block_tiles
    if not (0 <= r0 < grid.rows and 0 <= c0 < grid.cols):
        raise InputError(f"block {bid} lies outside the grid")
    return r0, c0, min(block_tiles, grid.rows - r0), min(block_tiles, grid.cols - c0)


def encode_block(
    model: Any, reader: Any, job: BlockJob, grid: TileGrid, block: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Embeddings ``[nr, nc, D]`` (float32), validity, no-data fractions and the encoded count.

    Batches are those of :func:`~engine.embed.job.embed_raster` (same cells per batch) and each is encoded by the
    same :func:`~engine.embed.job.encode_into`, so the result matches the single-process store.
    """
    r0, c0, nr, nc = block
    cells = [(r0 + i, c0 + j) for i in range(nr) for j in range(nc)]
    emb, valid = np.zeros((nr, nc, model.dim), np.float32), np.zeros((nr, nc), bool)
    fraction = np.ones((nr, nc), np.float32)
    modality, encoded = Modality(job.modality), 0
    layout = BandLayout(job.bands, job.read_bands or job.bands)
    batches = [cells[k : k + job.batch_size] for k in range(0, len(cells), job.batch_size)]
    queue: deque = deque()
    todo = iter(batches)
    while True:
        while len(queue) < 2 * _READERS_PER_WORKER and (b := next(todo, None)) is not None:
            queue.append((b, _pool.submit(read_chips, reader, grid, layout, b)))
        if not queue:
            return emb, valid, fraction, encoded
        batch, fut = queue.popleft()
        chips, nodata = fut.result()
        encoded += encode_into(
            model, modality, batch, chips, nodata, (r0, c0), emb, valid,
            job.max_nodata, job.batch_size, fraction,
        )  # fmt: skip


def run_block(job: BlockJob, bid: int) -> dict[str, Any]:
    """The Dask task: embed block ``bid``, write its chunks, then its done marker."""
    t0 = time.perf_counter()
    model, reader = worker_state(job)
    grid = TileGrid.from_dict(job.grid)
    r0, c0, nr, nc = block = block_of(grid, job.block_tiles, bid)
    emb, valid, fraction, encoded = encode_block(model, reader, job, grid, block)
    # chunk-aligned blocks: no two tasks write the same chunk file, so no locks; the done marker
    # goes last, so a worker killed at any point leaves a marked, complete block or an unmarked
    # one that the next run recomputes
    write_block_at(Path(job.folder), r0, c0, emb, valid, fraction)
    mark_done_at(Path(job.folder), bid)
    return {
        "block": bid,
        "tiles": nr * nc,
        "encoded": encoded,
        "pid": os.getpid(),
        "seconds": time.perf_counter() - t0,
    }
