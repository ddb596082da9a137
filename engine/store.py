"""The embedding store (embed once, query many times) and its size-capped LRU cache.

A store is a folder:

- ``store.json``: ``format_version``, ``grid`` (``TileGrid.to_dict()``), ``crs``, ``dim``,
  ``model_hash``, ``model_name``, ``model_version``, ``source_fingerprint``, ``bands``,
  ``scaling``, ``created`` (UTC ISO time), ``complete`` (true once finalised), ``block_tiles``
  (side of a resume block in tiles), ``n_blocks`` and ``meta`` (free-form: throughput, modality, ...).
- ``embeddings.npy``: float16 ``[rows, cols, D]``; rows of skipped tiles stay 0.
- ``valid.npy``: bool ``[rows, cols]``; False where a tile was skipped (no data).
- ``done.npy``: bool ``[n_blocks]``; block ``i`` of ``grid.iter_blocks(block_tiles)`` is written.

A store is written in ``<path>.partial/`` and renamed to ``<path>`` by :meth:`finalize`, so a
reader never sees a half-written store; an interrupted ``.partial`` can be resumed when its
grid, model and source still match.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from .atomic import atomic_write_text
from .errors import InputError, StoreError
from .grid import TileGrid

log = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
META_FILE = "store.json"
_ARRAYS = ("embeddings.npy", "valid.npy", "done.npy")
_MATCH_KEYS = ("grid", "dim", "model_hash", "source_fingerprint", "block_tiles")


def partial_path(path: str | Path) -> Path:
    """Where the store for ``path`` is written before it is finalised."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


class StoreBase:
    """What every embedding store kind shares: its description, blocks, resume and finalise.

    A subclass sets ``folder``, ``info``, ``grid``, ``block_tiles``, ``_writable`` and ``done``
    in ``__init__(folder, info, mode)``, and implements ``create``, ``_read_info`` (the
    description of a folder, None when absent), ``_mark_complete`` and ``close``.
    """

    folder: Path
    info: dict[str, Any]
    grid: TileGrid
    block_tiles: int
    _writable: bool
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
        return cls.create(path, grid, dim, model_hash, source_fingerprint, meta, block_tiles)

    # -- finishing --------------------------------------------------------------------------
    def _need_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"the embedding store {self.folder} is open read-only")

    def _mark_complete(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def finalize(self):
        """Flush, mark complete and move ``<path>.partial`` to ``<path>``; return it read-only.

        An existing store at ``<path>`` is replaced only at the very end.
        """
        self._need_writable()
        left = self.remaining_blocks()
        if left:
            raise StoreError(f"cannot finalise {self.folder}: {len(left)} block(s) not written")
        self.close()
        self.info["complete"] = True
        self._mark_complete()
        final = self.folder.with_name(self.folder.name[: -len(".partial")])
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
        return type(self).open(final)


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


class EmbeddingStore(StoreBase):
    """Embeddings of one tile grid on disk, memory-mapped. Use the class methods to get one."""

    def __init__(self, folder: Path, info: dict[str, Any], mode: str) -> None:
        self.folder = folder
        self.info = info
        self.grid = TileGrid.from_dict(info["grid"])
        self.block_tiles = int(info["block_tiles"])
        self._writable = mode == "r+"
        try:
            self.embeddings = np.load(folder / "embeddings.npy", mmap_mode=mode)
            self.valid = np.load(folder / "valid.npy", mmap_mode=mode)
            self.done = np.load(folder / "done.npy", mmap_mode=mode)
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
        ):
            raise StoreError(
                f"the embedding store {folder} does not match its store.json; embed again"
            )

    @staticmethod
    def _read_info(folder: Path) -> dict[str, Any] | None:
        return _read_info(folder)

    # -- creation ---------------------------------------------------------------------------
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
    ) -> EmbeddingStore:
        """Start a new store in ``<path>.partial/`` (an old ``.partial`` is discarded).

        ``meta`` may carry ``model_name``, ``model_version``, ``bands`` and ``scaling`` (copied
        to the top level of store.json); everything else stays under ``meta``.
        """
        info = new_info(grid, dim, model_hash, source_fingerprint, meta, block_tiles)
        folder = partial_path(path)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        open_memmap = np.lib.format.open_memmap
        for name, dtype, shape in (
            ("embeddings.npy", np.float16, (grid.rows, grid.cols, dim)),
            ("valid.npy", np.bool_, (grid.rows, grid.cols)),
            ("done.npy", np.bool_, (info["n_blocks"],)),
        ):
            arr = open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape)
            arr.flush()
            del arr
        # store.json last: a .partial without it is never resumed
        atomic_write_text(folder / META_FILE, json.dumps(info, indent=1))
        return cls(folder, info, "r+")

    # -- writing ----------------------------------------------------------------------------
    def write_block(self, r0: int, c0: int, emb: np.ndarray, valid: np.ndarray) -> None:
        """Write embeddings ``[nr, nc, D]`` and validity ``[nr, nc]`` at local tile (r0, c0)."""
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

    def mark_done(self, block_id: int) -> None:
        """Record block ``block_id`` as written (its data is flushed first)."""
        self._need_writable()
        self.embeddings.flush()
        self.valid.flush()
        self.done[block_id] = True
        self.done.flush()

    def update_meta(self, **meta: Any) -> None:
        """Merge ``meta`` into store.json's ``meta`` (written atomically)."""
        self._need_writable()
        self.info.setdefault("meta", {}).update(meta)
        atomic_write_text(self.folder / META_FILE, json.dumps(self.info, indent=1))

    def close(self) -> None:
        """Flush and release the memory maps."""
        for name in ("embeddings", "valid", "done"):
            arr = getattr(self, name, None)
            if arr is not None and self._writable:
                arr.flush()
            setattr(self, name, None)

    def _mark_complete(self) -> None:
        atomic_write_text(self.folder / META_FILE, json.dumps(self.info, indent=1))


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
    except (OSError, ValueError) as e:
        raise StoreError(f"{f} is unreadable ({e}); delete the store and embed again") from None
    info = pick(doc)
    if not isinstance(info, dict) or not all(k in info for k in (*_MATCH_KEYS, "format_version")):
        raise StoreError(
            not_store or f"{f} is not an embedding store description; delete it and embed again"
        )
    if info["format_version"] > STORE_FORMAT_VERSION:
        raise StoreError(f"{f} was written by a newer UniGeo (format {info['format_version']})")
    return info


def _read_info(folder: Path) -> dict[str, Any] | None:
    """store.json of ``folder``, None when absent; StoreError when unreadable or too new."""
    return read_description(folder / META_FILE)


class StoreCache:
    """A folder of stores keyed by source, model and grid, capped at ``max_bytes`` (LRU)."""

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(source_fingerprint: str, model_hash: str, grid: TileGrid) -> str:
        """sha256 of source fingerprint, model hash, the grid's lattice and its extent."""
        extent = (grid.row0, grid.col0, grid.rows, grid.cols)
        text = json.dumps([source_fingerprint, model_hash, list(grid.lattice_key()), extent])
        return hashlib.sha256(text.encode()).hexdigest()

    def path_for(self, key: str) -> Path:
        """Where the store of ``key`` lives (finalised) in this cache."""
        return self.root / key

    def get_or_none(self, key: str) -> EmbeddingStore | None:
        """The finalised store of ``key`` (and mark it used), or None."""
        path = self.path_for(key)
        if not (path / META_FILE).is_file():
            return None
        try:
            store = EmbeddingStore.open(path)
        except StoreError as e:
            log.warning("ignoring cached store %s: %s", path, e)
            return None
        os.utime(path / META_FILE)  # last-access time drives eviction
        return store

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        for d in self.root.iterdir():
            if not d.is_dir() or d.name.endswith(".partial") or d.name.startswith("."):
                continue
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
            meta = d / META_FILE
            used = meta.stat().st_mtime if meta.exists() else 0.0
            out.append((used, size, d))
        return sorted(out)

    def total_bytes(self) -> int:
        """Bytes held by every store in the cache, unfinished ones included."""
        return sum(f.stat().st_size for d in self.root.iterdir() if d.is_dir() for f in d.iterdir())

    def evict(self, keep: tuple[str, ...] = ()) -> list[Path]:
        """Delete least recently used stores until the cache fits; never an unfinished one."""
        removed = []
        total = self.total_bytes()
        for _, size, d in self._entries():
            if total <= self.max_bytes:
                break
            if d.name in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(d)
            total -= size
            removed.append(d)
        return removed
