"""What every embedding store kind shares: the description, resume/finalise, ``partial_path``.

:class:`StoreBase` holds the logic common to the npy :class:`~.npy.EmbeddingStore` and the
Zarr :class:`~.zarr.ZarrEmbeddingStore`: the description's properties, block bookkeeping,
resuming a matching ``<path>.partial`` and the atomic rename on finalise. :func:`new_info`
builds a new store's description and :func:`read_description` reads one back (from
``store.json`` or from a Zarr group's attributes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, StoreError, output_errors
from ..grid import TileGrid
from .guard import StoreLock, check_target
from .schema import check_description

log = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
_MATCH_KEYS = ("grid", "dim", "model_hash", "source_fingerprint", "block_tiles")


def partial_path(path: str | Path) -> Path:
    """Where the store for ``path`` is written before it is finalised."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


class StoreBase:
    """What every embedding store kind shares: its description, blocks, resume and finalise.

    A subclass sets ``folder``, ``info``, ``grid``, ``block_tiles``, ``_writable`` and ``done``
    in ``__init__(folder, info, mode)``, and implements ``_create`` (a new ``.partial``),
    ``_read_info`` (the description of a folder, None when absent), ``_mark_complete`` and
    ``_close_data``.

    Writing is guarded (:mod:`.guard`): :meth:`create` and :meth:`resume` refuse a target
    that is not a store, and hold the store's single-writer lock until :meth:`finalize` or
    :meth:`close`, so a second writer gets a clear error instead of destroying the store.
    """

    folder: Path
    info: dict[str, Any]
    grid: TileGrid
    block_tiles: int
    _writable: bool
    _lock: StoreLock | None = None
    KIND = "embedding store"

    # -- properties -------------------------------------------------------------------------
    @property
    def crs(self) -> str:
        return self.grid.crs

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def model_hash(self) -> str:
        return str(self.info["model_hash"])

    @property
    def source_fingerprint(self) -> str:
        return str(self.info["source_fingerprint"])

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.get("meta", {})

    @property
    def complete(self) -> bool:
        return bool(self.info.get("complete"))

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """Blocks ``(r0, c0, nrows, ncols)``; a block's id is its index in this list."""
        return list(self.grid.iter_blocks(self.block_tiles))

    def remaining_blocks(self) -> list[int]:
        """Ids of the blocks not marked done yet."""
        return [int(i) for i in np.flatnonzero(~np.asarray(self.done, dtype=bool))]

    # -- opening ----------------------------------------------------------------------------
    @staticmethod
    def _read_info(folder: Path) -> dict[str, Any] | None:
        raise NotImplementedError

    @classmethod
    def open(cls, path: str | Path):
        """Open a finalised store read-only."""
        folder = Path(path)
        info = cls._read_info(folder)
        if info is None:
            hint = " (an unfinished one exists: resume it)" if partial_path(folder).exists() else ""
            raise StoreError(f"no {cls.KIND} at {folder}{hint}; embed the raster first")
        if not info.get("complete"):
            raise StoreError(f"the {cls.KIND} {folder} is incomplete; embed again")
        return cls(folder, info, "r")

    @classmethod
    def resume(
        cls,
        path: str | Path,
        grid: TileGrid,
        dim: int,
        model_hash: str,
        source_fingerprint: str,
        meta: dict[str, Any] | None = None,
        block_tiles: int = 32,
        rebuild: bool = False,
    ):
        """Reopen ``<path>.partial`` if it was started for the same grid, model and source.

        With no usable ``.partial`` a new one is created. A ``.partial`` written for another
        grid, model, source or block size raises :class:`StoreError` (embeddings are never
        mixed), unless ``rebuild`` is True: then it is discarded and a new one started.
        """
        lock = cls._lock_target(path)
        try:
            with output_errors(path, "write the store"):
                store = cls._resume_locked(
                    path, grid, dim, model_hash, source_fingerprint, meta, block_tiles, rebuild
                )
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    @classmethod
    def create(
        cls,
        path: str | Path,
        grid: TileGrid,
        dim: int,
        model_hash: str,
        source_fingerprint: str,
        meta: dict[str, Any] | None = None,
        block_tiles: int = 32,
    ):
        """Start a new store in ``<path>.partial/`` (an old ``.partial`` of ours is discarded).

        ``meta`` may carry ``model_name``, ``model_version``, ``bands`` and ``scaling`` (copied
        to the top level of the description); everything else stays under ``meta``.

        Raises:
            StoreError: ``path`` is not a store (a file, a folder of other files), or another
                job is writing it.
        """
        lock = cls._lock_target(path)
        try:
            with output_errors(path, "write the store"):
                store = cls._create(
                    path, grid, dim, model_hash, source_fingerprint, meta, block_tiles
                )
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    @classmethod
    def _lock_target(cls, path: str | Path) -> StoreLock:
        """Take the single-writer lock of ``path``, then check it is ours to write."""
        lock = StoreLock.acquire(path)
        try:
            check_target(path)
        except BaseException:
            lock.release()
            raise
        return lock

    @classmethod
    def _create(cls, path, grid, dim, model_hash, source_fingerprint, meta, block_tiles):
        raise NotImplementedError

    @classmethod
    def _resume_locked(
        cls, path, grid, dim, model_hash, source_fingerprint, meta, block_tiles, rebuild
    ):
        folder = partial_path(path)
        info = cls._read_info(folder)
        want = {
            "grid": grid.to_dict(),
            "dim": int(dim),
            "model_hash": model_hash,
            "source_fingerprint": source_fingerprint,
            "block_tiles": int(block_tiles),
        }
        if info is not None:
            diff = [k for k in _MATCH_KEYS if info.get(k) != want[k]]
            if not diff:
                try:
                    store = cls(folder, info, "r+")
                    log.info("resuming %s: %d blocks left", folder, len(store.remaining_blocks()))
                    return store
                except StoreError:
                    diff = ["arrays"]
            if not rebuild:
                raise StoreError(
                    f"the unfinished store {folder} was started with a different "
                    f"{', '.join(diff)}; delete it or embed with rebuild=True (it is never mixed)"
                )
            log.warning("discarding unfinished store %s (different %s)", folder, diff)
        return cls._create(path, grid, dim, model_hash, source_fingerprint, meta, block_tiles)

    # -- finishing --------------------------------------------------------------------------
    def _need_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"the embedding store {self.folder} is open read-only")

    def _mark_complete(self) -> None:
        raise NotImplementedError

    def _close_data(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release the data, and the single-writer lock if this store holds it."""
        self._close_data()
        if self._lock is not None:
            self._lock.release()

    def finalize(self):
        """Flush, mark complete and move ``<path>.partial`` to ``<path>``; return it read-only.

        An existing store at ``<path>`` is replaced only at the very end, and only when it is
        a store; the single-writer lock is released after the move.
        """
        self._need_writable()
        left = self.remaining_blocks()
        if left:
            raise StoreError(f"cannot finalise {self.folder}: {len(left)} block(s) not written")
        self._close_data()
        self.info["complete"] = True
        self._mark_complete()
        final = self.folder.with_name(self.folder.name[: -len(".partial")])
        try:
            check_target(final)  # the target may have changed while the job ran
            self._replace(final)
        finally:
            if self._lock is not None:
                self._lock.release()
        return type(self).open(final)

    def _replace(self, final: Path) -> None:
        """Move this ``.partial`` to ``final``; an old store there is deleted only afterwards."""
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            if final.exists():
                os.replace(final, old)
            os.replace(self.folder, final)
        except OSError as e:
            # e.g. Windows refuses to move a store another layer still has memory-mapped
            if old.exists() and not final.exists():
                os.replace(old, final)
            raise StoreError(
                f"cannot move the finished store into {final} ({e}); close whatever uses the "
                f"old store and embed again to resume from {self.folder}"
            ) from None
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)


def new_info(
    grid: TileGrid,
    dim: int,
    model_hash: str,
    source_fingerprint: str,
    meta: dict[str, Any] | None,
    block_tiles: int,
) -> dict[str, Any]:
    """A new store's description (store.json, or a Zarr store's attributes).

    ``meta`` may carry ``model_name``, ``model_version``, ``bands`` and ``scaling`` (moved to
    the top level); everything else stays under ``meta``.
    """
    if grid.n_tiles == 0:
        raise InputError("the tile grid is empty; choose an extent that overlaps the raster")
    if dim < 1 or block_tiles < 1:
        raise InputError(f"need dim >= 1 and block_tiles >= 1 (got {dim}, {block_tiles})")
    meta = dict(meta or {})
    return {
        "format_version": STORE_FORMAT_VERSION,
        "grid": grid.to_dict(),
        "crs": grid.crs,
        "dim": int(dim),
        "model_hash": model_hash,
        "model_name": meta.pop("model_name", None),
        "model_version": meta.pop("model_version", None),
        "source_fingerprint": source_fingerprint,
        "bands": meta.pop("bands", None),
        "scaling": meta.pop("scaling", None),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
        "block_tiles": int(block_tiles),
        "n_blocks": len(list(grid.iter_blocks(block_tiles))),
        "meta": meta,
    }


def read_description(
    f: Path, pick: Callable[[Any], Any] = lambda doc: doc, not_store: str = ""
) -> dict[str, Any] | None:
    """The store description in JSON file ``f`` (``pick`` finds it in the document).

    None when ``f`` is absent; StoreError when it is unreadable, not a store description
    (``not_store`` is that message) or written by a newer UniGeo.
    """
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise StoreError(f"{f} is unreadable ({e}); delete the store and embed again") from None
    info = pick(doc)
    if not isinstance(info, dict) or not all(k in info for k in (*_MATCH_KEYS, "format_version")):
        raise StoreError(
            not_store or f"{f} is not an embedding store description; delete it and embed again"
        )
    version = info["format_version"]
    if isinstance(version, int) and version > STORE_FORMAT_VERSION:
        raise StoreError(f"{f} was written by a newer UniGeo (format {info['format_version']})")
    check_description(info, f)  # types and ranges: a damaged value is refused here, by name
    return info
