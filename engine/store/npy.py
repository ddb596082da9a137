"""The npy embedding store (embed once, query many times): memory-mapped arrays in a folder.

A store is a folder:

- ``store.json``: ``format_version``, ``grid`` (``TileGrid.to_dict()``), ``crs``, ``dim``,
  ``model_hash``, ``model_name``, ``model_version``, ``source_fingerprint``, ``bands``,
  ``scaling``, ``created`` (UTC ISO time), ``complete`` (true once finalised), ``block_tiles``
  (side of a resume block in tiles), ``n_blocks`` and ``meta`` (free-form: throughput,
  modality, ...).
- ``embeddings.npy``: float16 ``[rows, cols, D]``; rows of skipped tiles stay 0.
- ``valid.npy``: bool ``[rows, cols]``; False where a tile was skipped (no data).
- ``nodata.npy``: float16 ``[rows, cols]``: the fraction of each tile's values that had no data
  (stores written before it existed have none: every valid tile then counts as complete).
- ``done.npy``: bool ``[n_blocks]``; block ``i`` of ``grid.iter_blocks(block_tiles)`` is written.

A store is written in ``<path>.partial/`` and renamed to ``<path>`` by :meth:`finalize`, so a
reader never sees a half-written store; an interrupted ``.partial`` can be resumed when its
grid, model and source still match. What the npy and Zarr stores share lives in
:mod:`.base`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import STORE_JSON, atomic_write_text
from ..errors import InputError, StoreError
from ..grid import TileGrid
from .base import StoreBase, new_info, partial_path, read_description
from .guard import mark_partial, no_space_message, remove_partial, reserve, unmark_partial

log = logging.getLogger(__name__)

_ARRAYS = ("embeddings.npy", "valid.npy", "done.npy", "nodata.npy")


class EmbeddingStore(StoreBase):
    """Embeddings of one tile grid on disk, memory-mapped. Use the class methods to get one."""

    def __init__(self, folder: Path, info: dict[str, Any], mode: str) -> None:
        self.folder = folder
        self.info = info
        self.grid = TileGrid.from_dict(info["grid"])
        self.block_tiles = int(info["block_tiles"])
        self._writable = mode == "r+"
        if self._writable:
            _reserve_arrays(folder)  # a store resumed from an older, sparse .partial too
        try:
            self.embeddings = np.load(folder / "embeddings.npy", mmap_mode=mode)
            self.valid = np.load(folder / "valid.npy", mmap_mode=mode)
            self.done = np.load(folder / "done.npy", mmap_mode=mode)
            frac = folder / "nodata.npy"
            self.nodata = np.load(frac, mmap_mode=mode) if frac.is_file() else None
        except (OSError, ValueError) as e:
            raise StoreError(
                f"the embedding store {folder} is damaged ({e}); embed again"
            ) from None
        rows, cols, dim = self.grid.rows, self.grid.cols, self.dim
        if (
            self.embeddings.shape != (rows, cols, dim)
            or self.embeddings.dtype != np.float16
            or self.valid.shape != (rows, cols)
            or self.done.shape != (len(self.blocks()),)
            or (self.nodata is not None and self.nodata.shape != (rows, cols))
        ):
            raise StoreError(
                f"the embedding store {folder} does not match its store.json; embed again"
            )

    @staticmethod
    def _read_info(folder: Path) -> dict[str, Any] | None:
        return _read_info(folder)

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def _create(
        cls,
        path: str | Path,
        grid: TileGrid,
        dim: int,
        model_hash: str,
        source_fingerprint: str,
        meta: dict[str, Any] | None = None,
        block_tiles: int = 32,
    ) -> EmbeddingStore:
        """A new ``<path>.partial/`` with its arrays' disk space reserved (see ``create``)."""
        info = new_info(grid, dim, model_hash, source_fingerprint, meta, block_tiles)
        folder = partial_path(path)
        remove_partial(folder)
        arrays = (
            ("embeddings.npy", np.float16, (grid.rows, grid.cols, dim)),
            ("valid.npy", np.bool_, (grid.rows, grid.cols)),
            ("done.npy", np.bool_, (info["n_blocks"],)),
            ("nodata.npy", np.float16, (grid.rows, grid.cols)),
        )
        need = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for _, dt, shape in arrays)
        free = shutil.disk_usage(_existing_parent(folder)).free
        if need > free:  # refused before anything is written
            raise StoreError(no_space_message(folder.parent, need, free))
        mark_partial(folder)
        try:
            for name, dtype, shape in arrays:
                arr = np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape)
                arr.flush()
                del arr
            _reserve_arrays(folder)
            # store.json last: a .partial without it is never resumed
            atomic_write_text(folder / STORE_JSON, json.dumps(info, indent=1))
            unmark_partial(folder)  # store.json now says whose folder it is
        except OSError as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise StoreError(f"cannot create the embedding store in {folder}: {e}") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(folder, info, "r+")

    # -- writing ----------------------------------------------------------------------------
    def write_block(
        self,
        r0: int,
        c0: int,
        emb: np.ndarray,
        valid: np.ndarray,
        nodata: np.ndarray | None = None,
    ) -> None:
        """Write embeddings ``[nr, nc, D]``, validity and no-data fractions at tile (r0, c0)."""
        self._need_writable()
        nr, nc = valid.shape
        if emb.shape != (nr, nc, self.dim):
            raise InputError(
                f"block embeddings have shape {emb.shape}, expected {(nr, nc, self.dim)}"
            )
        if r0 < 0 or c0 < 0 or r0 + nr > self.grid.rows or c0 + nc > self.grid.cols:
            raise InputError(f"block at ({r0}, {c0}) of {nr}x{nc} tiles lies outside the grid")
        self.embeddings[r0 : r0 + nr, c0 : c0 + nc] = emb.astype(np.float16)
        self.valid[r0 : r0 + nr, c0 : c0 + nc] = valid
        if nodata is not None and self.nodata is not None:
            self.nodata[r0 : r0 + nr, c0 : c0 + nc] = nodata

    def mark_done(self, block_id: int) -> None:
        """Record block ``block_id`` as written (its data is flushed first)."""
        self._need_writable()
        self.embeddings.flush()
        self.valid.flush()
        if self.nodata is not None:
            self.nodata.flush()
        self.done[block_id] = True
        self.done.flush()

    def update_meta(self, **meta: Any) -> None:
        """Merge ``meta`` into store.json's ``meta`` (written atomically)."""
        self._need_writable()
        self.info.setdefault("meta", {}).update(meta)
        atomic_write_text(self.folder / STORE_JSON, json.dumps(self.info, indent=1))

    def _close_data(self) -> None:
        """Flush and release the memory maps."""
        for name in ("embeddings", "valid", "done", "nodata"):
            arr = getattr(self, name, None)
            if arr is not None and self._writable:
                arr.flush()
            setattr(self, name, None)

    def _mark_complete(self) -> None:
        atomic_write_text(self.folder / STORE_JSON, json.dumps(self.info, indent=1))


def _reserve_arrays(folder: Path) -> None:
    """Reserve the disk blocks of the store's memory-mapped arrays (see store_guard.reserve)."""
    files = [folder / n for n in _ARRAYS if (folder / n).is_file()]
    reserve((f, f.stat().st_size) for f in files)


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def _read_info(folder: Path) -> dict[str, Any] | None:
    """store.json of ``folder``, None when absent; StoreError when unreadable or too new."""
    return read_description(folder / STORE_JSON)
