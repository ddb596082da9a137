"""Distributed embedding: blocks of a tile grid as Dask tasks, written into a Zarr store.

The client validates the model and the inputs, opens (or resumes) a
:class:`~.zarr_store.ZarrEmbeddingStore` and submits one task per remaining resume block. Each
worker process keeps one model (one onnxruntime session, warmed once) and one reader in a
module-level cache, so a task costs only its own reads and inference. A task writes its block's
chunks and then its ``done`` marker; a block whose marker is missing after a worker loss or a
restart is simply computed again. ``dask.distributed`` is imported inside functions so that
``engine`` imports without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contract import Modality
from .embed import _check_model, _read_batch, encode_into
from .errors import (
    CancelledError,
    EngineError,
    InputError,
    ModelContractError,
    RasterInputError,
    StoreError,
)
from .grid import TileGrid
from .mosaic import SourceSpec, source_spec
from .zarr_store import ZarrEmbeddingStore, is_zarr_store, mark_done_at, write_block_at

log = logging.getLogger(__name__)

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
    bands: tuple[str, ...]
    batch_size: int
    max_nodata: float


# -- worker side ----------------------------------------------------------------------------
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
    from .model import UniGeoModel

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
) -> tuple[np.ndarray, np.ndarray, int]:
    """Embeddings ``[nr, nc, D]`` (float32), validity ``[nr, nc]`` and the encoded count.

    Batches are those of ``embed._Pipeline`` (same cells per batch) and each is encoded by the
    same :func:`~.embed.encode_into`, so the result matches the single-process store.
    """
    r0, c0, nr, nc = block
    cells = [(r0 + i, c0 + j) for i in range(nr) for j in range(nc)]
    emb, valid = np.zeros((nr, nc, model.dim), np.float32), np.zeros((nr, nc), bool)
    modality, encoded = Modality(job.modality), 0
    batches = [cells[k : k + job.batch_size] for k in range(0, len(cells), job.batch_size)]
    queue: deque = deque()
    todo = iter(batches)
    while True:
        while len(queue) < 2 * _READERS_PER_WORKER and (b := next(todo, None)) is not None:
            queue.append((b, _pool.submit(_read_batch, reader, grid, job.bands, b)))
        if not queue:
            return emb, valid, encoded
        batch, fut = queue.popleft()
        chips, nodata = fut.result()
        encoded += encode_into(
            model, modality, batch, chips, nodata, (r0, c0), emb, valid,
            job.max_nodata, job.batch_size,
        )  # fmt: skip


def run_block(job: BlockJob, bid: int) -> dict[str, Any]:
    """The Dask task: embed block ``bid``, write its chunks, then its done marker."""
    t0 = time.perf_counter()
    model, reader = worker_state(job)
    grid = TileGrid.from_dict(job.grid)
    r0, c0, nr, nc = block = block_of(grid, job.block_tiles, bid)
    emb, valid, encoded = encode_block(model, reader, job, grid, block)
    # chunk-aligned blocks: no two tasks write the same chunk file, so no locks; the done marker
    # goes last, so a worker killed at any point leaves a marked, complete block or an unmarked
    # one that the next run recomputes
    write_block_at(Path(job.folder), r0, c0, emb, valid)
    mark_done_at(Path(job.folder), bid)
    return {
        "block": bid,
        "tiles": nr * nc,
        "encoded": encoded,
        "pid": os.getpid(),
        "seconds": time.perf_counter() - t0,
    }


# -- client side ----------------------------------------------------------------------------
def local_workers(scheduler: str) -> int:
    """N for ``"local:N"``, 0 for a scheduler address; InputError for anything else."""
    if scheduler.startswith("local:"):
        n = scheduler[len("local:") :]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"scheduler '{scheduler}': use local:N with N >= 1 workers")
        return int(n)
    if "://" not in scheduler:
        raise InputError(f"scheduler '{scheduler}': use local:N or tcp://HOST:PORT")
    return 0


class _Cluster:
    """A Dask client for ``"local:N"`` (a LocalCluster it owns) or ``"tcp://host:port"``."""

    def __init__(self, scheduler: str, dashboard_address: str | None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise EngineError(
                "distributed embedding needs dask[distributed]; install the 'scale' extra"
            ) from None
        self.cluster = None
        self._level = logging.getLogger("distributed").level
        n = local_workers(scheduler)
        if n:
            # the scheduler and nannies of a local cluster live in this process: keep their
            # start/stop chatter out of the user's terminal
            logging.getLogger("distributed").setLevel(logging.WARNING)
            try:
                self.cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=dashboard_address,
                    silence_logs=logging.WARNING,
                )
            except RuntimeError as e:
                raise EngineError(
                    f"cannot start {n} local Dask worker process(es) ({e}); from a Python "
                    "script, call embed_distributed under `if __name__ == '__main__':`"
                ) from None
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(scheduler, timeout="30s")
            except OSError as e:
                raise EngineError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
        if self.cluster is not None and dashboard_address is not None:
            # WARNING level so that the CLI (quiet by default) shows where to watch the job
            if importlib.util.find_spec("bokeh") is None:
                log.warning("no Dask dashboard: it needs bokeh (in the project's 'scale' extra)")
            else:
                log.warning("Dask dashboard: %s", self.client.dashboard_link)
        else:
            log.info("Dask scheduler %s, dashboard %s", scheduler, self.client.dashboard_link)

    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        if self.cluster is not None:
            # workers first, then the scheduler: closing both at once makes the workers log
            # heartbeat errors against a scheduler that is already gone
            with contextlib.suppress(OSError, TimeoutError):
                self.client.retire_workers(close_workers=True)
            self.client.close()
            self.cluster.close()
            logging.getLogger("distributed").setLevel(self._level)
        else:
            self.client.close()


def _prepare(
    bundle_dir: str | Path,
    sources: SourceSpec | str | Path | Sequence[str | Path],
    grid: TileGrid,
    modality: Modality,
    provider: str | None,
    threads: int,
) -> tuple[Any, SourceSpec, str, dict[str, Any], tuple[str, ...]]:
    """Validate model and inputs on the client: (model, spec, fingerprint, meta, bands)."""
    from .model import UniGeoModel

    model = UniGeoModel.load(bundle_dir, providers=provider, threads=threads)
    spec = _check_model(model, modality, grid)
    bands = tuple(spec.preprocess.bands or ("height",))
    src = sources if isinstance(sources, SourceSpec) else source_spec(sources)
    reader = src.open()
    try:
        # one probe read fails fast (bands, CRS) before anything is written
        reader.read_tile(grid.tile_bounds(0, 0), grid.crs, grid.gsd, grid.tile_px, bands)
        fp, scaling = reader.fingerprint(), reader.scaling
    finally:
        reader.close()
    info = {"model_name": spec.model_name, "model_version": spec.model_version}
    info.update(bands=list(bands), scaling=scaling)
    return model, src, fp, info, bands


def embed_distributed(
    bundle_dir: str | Path,
    sources: SourceSpec | str | Path | Sequence[str | Path],
    grid: TileGrid,
    store_path: str | Path,
    scheduler: str = "local:2",
    modality: Modality = Modality.AERIAL,
    batch_size: int = 32,
    block_tiles: int = 32,
    max_nodata: float = 0.5,
    provider: str | None = None,
    threads_per_worker: int = 1,
    progress: bool | Callable[[float], None] = True,
    meta: dict[str, Any] | None = None,
    dashboard_address: str | None = ":0",
    resume: bool = True,
) -> ZarrEmbeddingStore:
    """Embed every tile of ``grid`` on a Dask cluster into the Zarr store at ``store_path``.

    Args:
        bundle_dir: the model bundle folder; every worker must see it at this path.
        sources: a :class:`~.mosaic.SourceSpec`, a raster path, several paths or a STAC-like
            JSON collection; every worker must see the files at the same paths.
        grid: the tiles to embed (e.g. from :func:`~.mosaic.grid_for_sources`).
        store_path: the Zarr store folder to produce (written in ``<store_path>.partial``).
        scheduler: ``"local:N"`` (a local cluster of N worker processes, closed at the end) or
            the address of a running scheduler (``"tcp://host:8786"``).
        modality: ``Modality.AERIAL`` or ``Modality.DSM``.
        batch_size: tiles per read batch and inference call.
        block_tiles: side of a block (= one task = one Zarr chunk), in tiles.
        max_nodata: tiles with a larger fraction of no-data values are skipped.
        provider: onnxruntime provider pin for the workers (None: best available).
        threads_per_worker: onnxruntime intra-op threads per worker process (each process runs
            one task at a time).
        progress: True for a text progress bar, a callable taking the fraction done, or False.
        meta: extra entries for the store's ``meta``.
        dashboard_address: the local cluster's dashboard (``":0"``: a free port; None: off).
        resume: continue a matching ``.partial`` store (only its unmarked blocks are computed;
            a mismatching one is discarded) and return a finished store of the same job as is;
            False starts over.

    Returns:
        The finalised read-only store; ``meta`` records throughput and the worker count.

    Raises:
        CancelledError: interrupted (Ctrl+C); the ``.partial`` store is kept for resuming.
    """
    if batch_size < 1 or block_tiles < 1 or threads_per_worker < 1:
        raise InputError("need batch_size, block_tiles and threads_per_worker >= 1")
    if not 0.0 <= max_nodata <= 1.0:
        raise InputError(f"max_nodata must be within 0..1, got {max_nodata}")
    local_workers(scheduler)  # a bad address fails before any store exists
    model, src, fp, info, bands = _prepare(
        bundle_dir, sources, grid, modality, provider, threads_per_worker
    )
    info.update(meta or {}, modality=modality.value, max_nodata=max_nodata)
    args = (store_path, grid, model.dim, model.model_hash, fp, info, block_tiles)
    if not resume:
        store = ZarrEmbeddingStore.create(*args)
    elif (finished := _existing(Path(store_path), grid, model.model_hash, fp)) is not None:
        return finished
    else:
        store = ZarrEmbeddingStore.resume(*args, rebuild=True)
    job = BlockJob(
        str(Path(bundle_dir).resolve()), model.model_hash, provider, threads_per_worker,
        modality.value, src, fp, grid.to_dict(), str(store.folder.resolve()), block_tiles,
        bands, batch_size, max_nodata,
    )  # fmt: skip
    model.close()
    todo = store.remaining_blocks()
    stats: dict[str, Any] = {"blocks_this_run": len(todo), "tiles_this_run": 0}
    t0 = time.perf_counter()
    compute = 0.0
    if todo:
        cluster = _Cluster(scheduler, dashboard_address)
        stats["startup_s"] = round(time.perf_counter() - t0, 3)
        try:
            t1 = time.perf_counter()
            stats.update(_run(cluster, job, store, todo, progress))
            compute = time.perf_counter() - t1 - stats["warmup_s"]
        finally:
            cluster.close()
    stats.update(wall_s=round(time.perf_counter() - t0, 3), compute_s=round(compute, 3))
    stats.update(scheduler=scheduler, block_tiles=block_tiles)
    # throughput of the running cluster: start-up is paid once per job, not per tile
    stats["tiles_per_s"] = round(stats["tiles_this_run"] / compute, 2) if compute > 0 else None
    stats["valid_tiles"] = int(np.count_nonzero(store._valid_arr[...]))
    store.update_meta(**stats)
    return store.finalize()


def _existing(path: Path, grid: TileGrid, model_hash: str, fp: str) -> ZarrEmbeddingStore | None:
    """The finalised Zarr store at ``path`` if it already holds exactly this job."""
    if not is_zarr_store(path) or not (path / "zarr.json").is_file():
        return None
    try:
        s = ZarrEmbeddingStore.open(path)
    except StoreError:
        return None
    return s if (s.grid, s.model_hash, s.source_fingerprint) == (grid, model_hash, fp) else None


def _run(
    cluster: _Cluster,
    job: BlockJob,
    store: ZarrEmbeddingStore,
    todo: list[int],
    progress: bool | Callable[[float], None],
) -> dict[str, Any]:
    """Submit a task per block, follow them as they finish; return this run's figures."""
    from distributed import as_completed

    client, grid = cluster.client, store.grid
    blocks = store.blocks()
    total, done = grid.n_tiles, grid.n_tiles - sum(blocks[b][2] * blocks[b][3] for b in todo)
    t = time.perf_counter()
    # every worker loads its session now, in parallel, so no task pays for it (and a worker
    # that lacks the bundle or the rasters fails here, with its message, before any task)
    client.run(warm, job)
    warmup = time.perf_counter() - t
    token = uuid.uuid4().hex[:8]
    # the "embed-block" key prefix groups the tasks in the dashboard's progress panel
    futures = [
        client.submit(run_block, job, b, key=f"embed-block-{b}-{token}", pure=False, retries=2)
        for b in todo
    ]
    bar, update = _progress(progress, total, done)
    tiles = encoded = 0
    pids: set[int] = set()
    try:
        for fut in as_completed(futures):
            r = fut.result()  # re-raises a task's error (after its retries) here
            tiles, encoded = tiles + r["tiles"], encoded + r["encoded"]
            pids.add(r["pid"])
            update(r["tiles"])
    except KeyboardInterrupt:
        raise CancelledError(
            f"embedding cancelled; {len(store.remaining_blocks())} block(s) remain in "
            f"{store.folder}, run again to resume"
        ) from None
    finally:
        client.cancel(futures)  # release the results so closing the cluster loses nothing
        if bar is not None:
            bar.close()
    return {
        "tiles_this_run": tiles,
        "tiles_encoded_this_run": encoded,
        "workers": cluster.n_workers(),
        "worker_processes_used": len(pids),
        "warmup_s": round(warmup, 3),
        "dashboard": client.dashboard_link if cluster.cluster is None else None,
    }


def _progress(
    progress: bool | Callable[[float], None], total: int, done: int
) -> tuple[Any, Callable[[int], None]]:
    """A tqdm bar (or a fraction callback) advanced by tiles finished."""
    state = {"done": done}
    if callable(progress):

        def call(n: int) -> None:
            state["done"] += n
            progress(min(state["done"] / total, 1.0))

        return None, call
    if not progress:
        return None, lambda n: None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done, desc="embed (dask)", unit="tile", dynamic_ncols=True)
    return bar, bar.update
