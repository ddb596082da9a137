"""The embedding pipeline: raster tiles -> encoder -> embedding store, resumable and cancellable.

Reader threads fetch and preprocess batches of tiles while the calling thread runs inference, so
reading overlaps inference. A batch is read (:func:`~engine.raster.batch.read_chips`) as a few windows
when the reader has ``read_window``, tile by tile otherwise. At most ``2 * workers`` batches are
in flight, so memory stays bounded whatever the raster size; how many readers run beside
onnxruntime's threads is :func:`reader_threads`'s measured rule. Blocks of ``block_tiles`` ×
``block_tiles`` tiles are written in a fixed row-major order and marked done one by one, which
is what makes a cancelled or crashed run resumable with byte-identical results.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import CancelledError, InputError, ModelContractError, StoreError
from ..geo.render import footprint_meta
from ..grid import TileGrid
from ..model.contract import EncoderSpec, Modality
from ..raster.batch import Cell, read_chips
from ..raster.layout import BandLayout, band_layout, optional_bands
from ..raster.reader import RasterReader
from ..store.guard import check_target, input_files
from ..store.npy import EmbeddingStore

log = logging.getLogger(__name__)


class TileEncoder(Protocol):
    """The part of ``engine.model.UniGeoModel`` the pipeline uses."""

    dim: int
    model_hash: str

    def has(self, modality: Modality) -> bool: ...

    def spec(self, modality: Modality) -> EncoderSpec: ...

    def encode_tiles(
        self, modality: Modality, chips: np.ndarray, batch_size: int = 32
    ) -> np.ndarray: ...


def check_model(model: TileEncoder, modality: Modality, grid: TileGrid) -> EncoderSpec:
    """Check that ``model`` can embed ``grid``'s tiles with ``modality``; return its spec.

    Used by :func:`embed_raster` and by the Dask client before any store is written. A model
    with ``encoder_session`` has its ONNX session loaded here, so a broken encoder fails now.

    Raises:
        InputError: ``modality`` is not aerial or DSM, the grid's tile size is not the
            encoder's input size, or the grid is empty.
        ModelContractError: the model has no encoder for ``modality``.
    """
    if modality not in (Modality.AERIAL, Modality.DSM):
        raise InputError(
            f"rasters are embedded with the aerial or dsm encoder, not {modality.value}"
        )
    if not model.has(modality):
        raise ModelContractError(f"the model has no {modality.value} encoder; pick another model")
    spec = model.spec(modality)
    p = spec.preprocess
    if grid.tile_px != p.size:
        raise InputError(
            f"the grid has {grid.tile_px}-px tiles but the {modality.value} encoder needs "
            f"{p.size}-px tiles; build the grid with grid_for_raster()"
        )
    if p.gsd_m > 0 and abs(grid.gsd - p.gsd_m) > 1e-6 * p.gsd_m:
        log.warning("grid GSD %.4g differs from the encoder's %.4g m", grid.gsd, p.gsd_m)
    if grid.n_tiles == 0:
        raise InputError("the tile grid is empty; choose an extent that overlaps the raster")
    if hasattr(model, "encoder_session"):
        # load and check the ONNX session now, so a broken encoder fails before a store exists
        model.encoder_session(modality)
    return spec


def _batches(
    store: EmbeddingStore, block_ids: Sequence[int], batch_size: int
) -> Iterator[tuple[int, list[Cell], bool]]:
    """``(block_id, cells, last_batch_of_block)`` for every remaining block, in a fixed order."""
    blocks = store.blocks()
    for bid in block_ids:
        r0, c0, nr, nc = blocks[bid]
        cells = [(r0 + i, c0 + j) for i in range(nr) for j in range(nc)]
        for k in range(0, len(cells), batch_size):
            yield bid, cells[k : k + batch_size], k + batch_size >= len(cells)


def _open_store(
    store_path: Path,
    grid: TileGrid,
    model: TileEncoder,
    fp: str,
    meta: dict,
    block_tiles: int,
    resume: bool,
) -> EmbeddingStore:
    args = (store_path, grid, model.dim, model.model_hash, fp, meta, block_tiles)
    if resume:
        return EmbeddingStore.resume(*args, rebuild=True)
    return EmbeddingStore.create(*args)


def _existing(
    store_path: Path, grid: TileGrid, model: TileEncoder, fp: str
) -> EmbeddingStore | None:
    """The finalised store at ``store_path`` if it already holds exactly this job."""
    if not (store_path / "store.json").is_file():
        return None
    try:
        s = EmbeddingStore.open(store_path)
    except StoreError:
        return None
    same = (s.grid, s.model_hash, s.source_fingerprint) == (grid, model.model_hash, fp)
    return s if same else None


def encode_into(
    model: TileEncoder,
    modality: Modality,
    cells: Sequence[Cell],
    chips: np.ndarray,
    nodata: np.ndarray,
    origin: Cell,
    emb: np.ndarray,
    valid: np.ndarray,
    max_nodata: float,
    batch_size: int,
    fraction: np.ndarray | None = None,
) -> int:
    """Encode the usable chips of one batch into a block's buffers; return how many were encoded.

    A chip with more than ``max_nodata`` (or all) of its values missing is skipped and stays
    invalid. ``cells`` are grid cells, ``origin`` the block's first cell, ``emb`` ``[nr, nc, D]``
    and ``valid`` ``[nr, nc]``. The single-process pipeline and the Dask task both use this, so
    their stores agree. ``fraction`` (``[nr, nc]``), when given, receives every chip's no-data
    fraction, encoded or not.
    """
    if fraction is not None and len(cells):
        rr = np.array([c[0] - origin[0] for c in cells])
        cc = np.array([c[1] - origin[1] for c in cells])
        fraction[rr, cc] = nodata
    keep = (nodata <= max_nodata) & (nodata < 1.0)
    if not keep.any():
        return 0
    usable = chips if keep.all() else chips[keep]  # no copy in the common case
    out = model.encode_tiles(modality, usable, batch_size=batch_size)
    if out.shape != (int(keep.sum()), model.dim):
        raise ModelContractError(f"the encoder returned shape {out.shape}")
    idx = np.flatnonzero(keep)
    rows = np.array([cells[i][0] - origin[0] for i in idx])
    cols = np.array([cells[i][1] - origin[1] for i in idx])
    emb[rows, cols] = out
    valid[rows, cols] = True
    return len(out)


class _Pipeline:
    """One run over the remaining blocks of a store: reads in threads, inference here."""

    def __init__(
        self,
        model: TileEncoder,
        modality: Modality,
        reader: RasterReader,
        store: EmbeddingStore,
        bands: Sequence[str] | BandLayout,
        batch_size: int,
        max_nodata: float,
    ) -> None:
        self.model, self.modality, self.reader, self.store = model, modality, reader, store
        self.bands, self.batch_size, self.max_nodata = bands, batch_size, max_nodata
        self.blocks = store.blocks()
        self.buf: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.tiles = self.encoded = 0
        self.io_wait = self.infer = 0.0

    def consume(self, bid: int, cells: list[Cell], chips: np.ndarray, nodata: np.ndarray) -> None:
        """Encode the usable chips of one batch into its block's buffer."""
        r0, c0, nr, nc = self.blocks[bid]
        if bid not in self.buf:
            self.buf[bid] = (
                np.zeros((nr, nc, self.model.dim), np.float32),
                np.zeros((nr, nc), bool),
                np.ones((nr, nc), np.float32),
            )
        emb, valid, fraction = self.buf[bid]
        self.tiles += len(cells)
        t = time.perf_counter()
        self.encoded += encode_into(
            self.model, self.modality, cells, chips, nodata, (r0, c0), emb, valid,
            self.max_nodata, self.batch_size, fraction,
        )  # fmt: skip
        self.infer += time.perf_counter() - t

    def flush_block(self, bid: int) -> int:
        """Write a finished block and mark it done; return its tile count."""
        r0, c0, nr, nc = self.blocks[bid]
        emb, valid, fraction = self.buf.pop(bid)
        self.store.write_block(r0, c0, emb, valid, fraction)
        self.store.mark_done(bid)
        return nr * nc

    def run(
        self,
        workers: int,
        progress: Callable[[float], None] | None,
        is_canceled: Callable[[], bool] | None,
    ) -> None:
        """Process every remaining block with at most ``2 * workers`` batches in flight."""
        store, grid = self.store, self.store.grid
        remaining = store.remaining_blocks()
        done = grid.n_tiles - sum(self.blocks[b][2] * self.blocks[b][3] for b in remaining)
        jobs = _batches(store, remaining, self.batch_size)
        queue: deque[tuple[int, list[Cell], bool, Future]] = deque()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unigeo-read") as pool:
            try:
                while True:
                    while len(queue) < 2 * workers and (job := next(jobs, None)) is not None:
                        fut = pool.submit(read_chips, self.reader, grid, self.bands, job[1])
                        queue.append((*job, fut))
                    if not queue:
                        return
                    if is_canceled is not None and is_canceled():
                        raise CancelledError(
                            f"embedding cancelled; {len(store.remaining_blocks())} block(s) "
                            f"remain in {store.folder}, run again to resume"
                        )
                    bid, cells, last, fut = queue.popleft()
                    t = time.perf_counter()
                    chips, nodata = fut.result()
                    self.io_wait += time.perf_counter() - t
                    self.consume(bid, cells, chips, nodata)
                    if last:
                        done += self.flush_block(bid)
                        if progress:
                            progress(min(done / grid.n_tiles, 1.0))
            finally:
                for *_, fut in queue:
                    fut.cancel()


def embed_raster(
    model: TileEncoder,
    reader: RasterReader,
    grid: TileGrid,
    store_path: str | Path,
    modality: Modality = Modality.AERIAL,
    batch_size: int = 32,
    block_tiles: int = 32,
    workers: int | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    resume: bool = True,
    max_nodata: float = 0.5,
    meta: dict[str, Any] | None = None,
) -> EmbeddingStore:
    """Embed every tile of ``grid`` over ``reader`` into the store at ``store_path``.

    Args:
        model: the encoder (``engine.model.UniGeoModel`` or anything with the same methods).
        reader: the raster (see :class:`engine.raster.reader.RasterReader`).
        grid: the tiles to embed, usually from :func:`engine.raster.tiling.grid_for_raster`.
        store_path: the store folder to produce (written in ``<store_path>.partial`` first).
        modality: ``Modality.AERIAL`` or ``Modality.DSM``.
        batch_size: tiles per read job and per inference call.
        block_tiles: side of a resumable block, in tiles.
        workers: reader threads; None: :func:`reader_threads` picks them for the model's
            provider and thread count (on 2 CPU cores running inference: 1).
        progress: called with the fraction done, ending with 1.0.
        is_canceled: polled between batches; True raises :class:`CancelledError` and leaves the
            resumable ``.partial`` store (never a half-written final store).
        resume: continue a matching ``.partial`` store (a mismatching one is discarded) and
            return an already finalised store of the same job as is.
        max_nodata: tiles with a larger fraction of no-data values are skipped (marked invalid).
        meta: extra entries for store.json's ``meta``.

    Returns:
        The finalised, read-only store; ``meta["tiles_per_s"]`` gives this run's throughput.
    """
    bad_workers = workers is not None and workers < 1
    if batch_size < 1 or block_tiles < 1 or bad_workers or not 0.0 <= max_nodata <= 1.0:
        raise InputError("need batch_size, block_tiles, workers >= 1 and 0 <= max_nodata <= 1")
    spec = check_model(model, modality, grid)
    bands = spec.preprocess.bands or ("height",)
    store_path = Path(store_path)
    check_target(store_path, input_files(reader))  # before anything is read or written
    fp = reader.fingerprint()
    if resume and (done := _existing(store_path, grid, model, fp)) is not None:
        if progress:
            progress(1.0)
        return done
    try:
        layout = band_layout(reader, bands, optional_bands(spec.inputs, bands))
        # one probe read fails fast (bands, CRS) before anything is written
        reader.read_tile(grid.tile_bounds(0, 0), grid.crs, grid.gsd, grid.tile_px, layout.read)
        info = dict(meta or {}, modality=modality.value, max_nodata=max_nodata)
        info.update(model_name=spec.model_name, model_version=spec.model_version)
        info.update(bands=list(bands), scaling=reader.scaling)
        if not layout.complete:  # the encoder masks them (contract version 2)
            info.update(absent_bands=list(layout.absent))
        info.update(footprint_meta(reader, grid))  # outputs are drawn inside the outline
        store = _open_store(store_path, grid, model, fp, info, block_tiles, resume)
        try:
            pipe = _Pipeline(model, modality, reader, store, layout, batch_size, max_nodata)
            stats = _run(pipe, workers or reader_threads(model), progress, is_canceled)
            store.update_meta(**stats)
            final = store.finalize()
        finally:
            store.close()
    finally:
        _release(reader)
    if progress:
        progress(1.0)
    return final


def _release(reader: RasterReader) -> None:
    """Close the GDAL datasets ``reader`` holds (it reopens them if it is used again).

    Now, not whenever the reader is collected: an exception's traceback can keep the reader
    alive until after the host application (QGIS's ``exitQgis``) has shut GDAL down, and a
    dataset closed after that crashes the process.
    """
    close = getattr(reader, "close", None)
    if callable(close):
        close()


def reader_threads(model: TileEncoder, cores: int | None = None) -> int:
    """Reader threads to pair with ``model``'s inference on a machine with ``cores`` cores.

    Measured on 2 cores (docs/PERFORMANCE.md, section 2): a native or windowed read costs a
    fraction of inference, so while onnxruntime's threads take every core one reader keeps it
    fed, and a second one only takes CPU from inference; cores left over go to readers (at
    most 4). On a GPU, inference leaves the CPU to the readers: 2 to 4 of them. Pass
    ``workers`` to :func:`embed_raster` to override.
    """
    cores = cores or os.cpu_count() or 1
    report = getattr(model, "provider_report", None)
    rep = report() if callable(report) else None
    if rep is not None and rep.is_gpu:
        return max(2, min(4, cores // 2))
    ort = getattr(rep, "threads", None) or getattr(model, "threads", None) or cores
    return max(1, min(cores - ort, 4))


def _run(
    pipe: _Pipeline,
    workers: int,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
) -> dict[str, Any]:
    """Run the pipeline; return this run's figures for store.json's ``meta``."""
    t0 = time.perf_counter()
    pipe.run(workers, progress, is_canceled)
    wall = time.perf_counter() - t0
    return {
        "tiles_per_s": round(pipe.tiles / wall, 2) if wall > 0 else None,
        "tiles_this_run": pipe.tiles,
        "tiles_encoded_this_run": pipe.encoded,
        "valid_tiles": int(np.count_nonzero(pipe.store.valid)),
        "wall_s": round(wall, 3),
        "io_wait_s": round(pipe.io_wait, 3),
        "inference_s": round(pipe.infer, 3),
        "workers": workers,
        "batch_size": pipe.batch_size,
    }
