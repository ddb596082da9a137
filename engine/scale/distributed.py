"""Distributed embedding: blocks of a tile grid as Dask tasks, written into a Zarr store.

The client (:func:`embed_distributed`) validates the model and the inputs, opens (or resumes) a
:class:`~engine.store.zarr.ZarrEmbeddingStore` and submits one task per remaining resume block. Each
worker process keeps one model (one onnxruntime session, warmed once) and one reader in a
module-level cache, so a task costs only its own reads and inference. A task writes its block's
chunks and then its ``done`` marker; a block whose marker is missing after a worker loss or a
restart is simply computed again. The task itself lives in :mod:`.worker` and the Dask client in :class:`~.cluster.DaskCluster`, which connects
over TLS or to loopback only unless told otherwise (:mod:`.security`).
``dask.distributed`` is imported inside functions so that ``engine`` imports without it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embed.job import check_model
from ..errors import CancelledError, InputError, StoreError
from ..geo.render import footprint_meta
from ..grid import TileGrid
from ..model.contract import Modality
from ..raster.layout import BandLayout, band_layout, optional_bands
from ..raster.mosaic import SourceSpec, source_spec
from ..store.guard import check_target
from ..store.zarr import ZarrEmbeddingStore, is_zarr_store
from .cluster import DaskCluster
from .security import check_address, client_security, local_dashboard
from .worker import (
    BlockJob,
    run_block,
    warm,
)


def _prepare(
    bundle_dir: str | Path,
    sources: SourceSpec | str | Path | Sequence[str | Path],
    grid: TileGrid,
    modality: Modality,
    provider: str | None,
    threads: int,
) -> tuple[Any, SourceSpec, str, dict[str, Any], BandLayout]:
    """Validate model and inputs on the client: (model, spec, fingerprint, meta, band layout)."""
    from ..model.core import UniGeoModel

    model = UniGeoModel.load(bundle_dir, providers=provider, threads=threads)
    spec = check_model(model, modality, grid)
    bands = tuple(spec.preprocess.bands or ("height",))
    src = sources if isinstance(sources, SourceSpec) else source_spec(sources)
    reader = src.open()
    try:
        layout = band_layout(reader, bands, optional_bands(spec.inputs, bands))
        # one probe read fails fast (bands, CRS) before anything is written
        reader.read_tile(grid.tile_bounds(0, 0), grid.crs, grid.gsd, grid.tile_px, layout.read)
        fp, scaling = reader.fingerprint(), reader.scaling
        outline = footprint_meta(reader, grid)
    finally:
        reader.close()
    info = {"model_name": spec.model_name, "model_version": spec.model_version}
    info.update(bands=list(bands), scaling=scaling, **outline)
    if not layout.complete:  # the encoder masks them (contract version 2)
        info.update(absent_bands=list(layout.absent))
    return model, src, fp, info, layout


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
    security: Any = None,
    insecure: bool = False,
) -> ZarrEmbeddingStore:
    """Embed every tile of ``grid`` on a Dask cluster into the Zarr store at ``store_path``.

    Args:
        bundle_dir: the model bundle folder; every worker must see it at this path.
        sources: a :class:`~engine.raster.mosaic.SourceSpec`, a raster path, several paths or a STAC-like
            JSON collection; every worker must see the files at the same paths.
        grid: the tiles to embed (e.g. from :func:`~engine.raster.mosaic.grid_for_sources`).
        store_path: the Zarr store folder to produce (written in ``<store_path>.partial``).
        scheduler: ``"local:N"`` (a local cluster of N worker processes on 127.0.0.1, closed at
            the end) or the address of a running scheduler: ``"tls://host:8786"``, or
            ``"tcp://127.0.0.1:8786"`` (plain TCP to another host needs ``insecure``).
        modality: ``Modality.AERIAL`` or ``Modality.DSM``.
        batch_size: tiles per read batch and inference call.
        block_tiles: side of a block (= one task = one Zarr chunk), in tiles.
        max_nodata: tiles with a larger fraction of no-data values are skipped.
        provider: onnxruntime provider pin for the workers (None: best available).
        threads_per_worker: onnxruntime intra-op threads per worker process (each process runs
            one task at a time).
        progress: True for a text progress bar, a callable taking the fraction done, or False.
        meta: extra entries for the store's ``meta``.
        dashboard_address: the local cluster's dashboard, on 127.0.0.1 (``":0"``: a free
            port; None: off).
        resume: continue a matching ``.partial`` store (only its unmarked blocks are computed;
            a mismatching one is discarded) and return a finished store of the same job as is;
            False starts over.
        security: a ``distributed.security.Security``: the client's TLS credentials for a
            ``tls://`` scheduler (None: Dask's configuration, ``distributed.comm.tls.*``), or
            a local cluster's (None: temporary ones made for this job).
        insecure: allow plain ``tcp://`` to a host other than this one; a warning names the
            risk (anyone who reaches the scheduler can run code on its workers).

    Returns:
        The finalised read-only store; ``meta`` records throughput and the worker count.

    Raises:
        InputError: a bad argument, a refused scheduler address or missing TLS credentials,
            before any store is written or any connection made.
        CancelledError: interrupted (Ctrl+C); the ``.partial`` store is kept for resuming.
    """
    _check_args(batch_size, block_tiles, threads_per_worker, max_nodata)
    _check_scheduler(scheduler, dashboard_address, security, insecure)
    connect = {"dashboard_address": dashboard_address, "security": security, "insecure": insecure}
    model, src, fp, info, bands = _prepare(
        bundle_dir, sources, grid, modality, provider, threads_per_worker
    )
    try:
        info.update(meta or {}, modality=modality.value, max_nodata=max_nodata)
        path = Path(store_path)
        check_target(path, [Path(p) for p in src.paths])
        if resume and (finished := _existing(path, grid, model.model_hash, fp)) is not None:
            return finished
        args = (path, grid, model.dim, model.model_hash, fp, info, block_tiles)
        if resume:
            store = ZarrEmbeddingStore.resume(*args, rebuild=True)
        else:
            store = ZarrEmbeddingStore.create(*args)
        job = BlockJob(
            str(Path(bundle_dir).resolve()), model.model_hash, provider, threads_per_worker,
            modality.value, src, fp, grid.to_dict(), str(store.folder.resolve()), block_tiles,
            bands.wanted, batch_size, max_nodata, bands.read,
        )  # fmt: skip
    finally:
        model.close()  # the workers load their own; this one only validated the bundle
    try:
        store.update_meta(**_execute(job, store, scheduler, connect, progress))
        return store.finalize()
    finally:
        store.close()  # releases the single-writer lock also when the job fails


def _check_args(
    batch_size: int, block_tiles: int, threads_per_worker: int, max_nodata: float
) -> None:
    """InputError for a bad argument, before any model is loaded or store exists."""
    if batch_size < 1 or block_tiles < 1 or threads_per_worker < 1:
        raise InputError("need batch_size, block_tiles and threads_per_worker >= 1")
    if not 0.0 <= max_nodata <= 1.0:
        raise InputError(f"max_nodata must be within 0..1, got {max_nodata}")


def _check_scheduler(
    scheduler: str, dashboard_address: str | None, security: Any, insecure: bool
) -> None:
    """InputError for a refused address or unusable credentials, before any store exists."""
    if check_address(scheduler, insecure):
        local_dashboard(dashboard_address)
    else:
        client_security(scheduler, security)  # loads the credentials; connects nowhere


def _execute(
    job: BlockJob,
    store: ZarrEmbeddingStore,
    scheduler: str,
    connect: dict[str, Any],
    progress: bool | Callable[[float], None],
) -> dict[str, Any]:
    """Compute the store's remaining blocks on a cluster; return the figures for its ``meta``."""
    todo = store.remaining_blocks()
    stats: dict[str, Any] = {"blocks_this_run": len(todo), "tiles_this_run": 0}
    t0 = time.perf_counter()
    compute = 0.0
    if todo:
        cluster = DaskCluster(scheduler, **connect)
        stats["startup_s"] = round(time.perf_counter() - t0, 3)
        try:
            t1 = time.perf_counter()
            stats.update(_run(cluster, job, store, todo, progress))
            compute = time.perf_counter() - t1 - stats["warmup_s"]
        finally:
            cluster.close()
    stats.update(wall_s=round(time.perf_counter() - t0, 3), compute_s=round(compute, 3))
    stats.update(scheduler=scheduler, block_tiles=job.block_tiles)
    # throughput of the running cluster: start-up is paid once per job, not per tile
    stats["tiles_per_s"] = round(stats["tiles_this_run"] / compute, 2) if compute > 0 else None
    stats["valid_tiles"] = int(np.count_nonzero(store._valid_arr[...]))
    return stats


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
    cluster: DaskCluster,
    job: BlockJob,
    store: ZarrEmbeddingStore,
    todo: list[int],
    progress: bool | Callable[[float], None],
) -> dict[str, Any]:
    """Submit a task per block, follow them as they finish; return this run's figures."""
    blocks, total = store.blocks(), store.grid.n_tiles
    done = total - sum(blocks[b][2] * blocks[b][3] for b in todo)
    futures, warmup = _submit(cluster.client, job, todo)
    bar, update = _progress(progress, total, done)
    try:
        tiles, encoded, pids = _collect(futures, store, update)
    finally:
        cluster.client.cancel(futures)  # release the results so closing the cluster loses nothing
        if bar is not None:
            bar.close()
    return {
        "tiles_this_run": tiles,
        "tiles_encoded_this_run": encoded,
        "workers": cluster.n_workers(),
        "worker_processes_used": len(pids),
        "warmup_s": round(warmup, 3),
        "tls": cluster.address.startswith("tls://"),
        "dashboard": cluster.client.dashboard_link if cluster.cluster is None else None,
    }


def _submit(client: Any, job: BlockJob, todo: list[int]) -> tuple[list[Any], float]:
    """Warm every worker, then submit one task per block; return the futures and warm-up time."""
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
    return futures, warmup


def _collect(
    futures: list[Any], store: ZarrEmbeddingStore, update: Callable[[int], None]
) -> tuple[int, int, set[int]]:
    """Follow the tasks as they finish: ``(tiles, tiles encoded, worker pids)``.

    Raises:
        CancelledError: interrupted (Ctrl+C); finished blocks stay marked for a resume.
    """
    from distributed import as_completed

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
    return tiles, encoded, pids


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
