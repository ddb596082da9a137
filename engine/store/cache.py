"""The store cache: a folder of embedding stores, keyed by source, model and grid, capped in size.

Embed once, query many times: the GUI and Processing share one cache, so a raster embedded by
either is found by both. :class:`StoreCache` keeps stores under ``<cache>/<key>`` and evicts
only those, least recently used first (never other files or folders in the cache folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from ..atomic import STORE_JSON, store_marker
from ..errors import StoreError
from ..grid import TileGrid
from .npy import EmbeddingStore

log = logging.getLogger(__name__)


class StoreCache:
    """A folder of stores keyed by source, model and grid, capped at ``max_bytes`` (LRU).

    Only folders this cache made are ever counted or evicted: a folder named like a cache key
    (64 hex digits, see :meth:`key`) holding an npy store's ``store.json`` or a Zarr store's
    ``zarr.json`` with UniGeo attributes (plus the ``<key>.partial`` of a store being written,
    which is counted but never evicted). Anything else in the folder (output rasters, a user's
    own files or stores) is left alone, so pointing the cache at a shared folder loses nothing.
    """

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
        if not (path / STORE_JSON).is_file():
            return None
        try:
            store = EmbeddingStore.open(path)
        except StoreError as e:
            log.warning("ignoring cached store %s: %s", path, e)
            return None
        os.utime(path / STORE_JSON)  # last-access time drives eviction
        return store

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last used, bytes, folder) of every finalised store of this cache, oldest first."""
        out = []
        for d in self._children():
            marker = _store_marker(d)
            if marker is not None:
                out.append((marker.stat().st_mtime, _tree_bytes(d), d))
        return sorted(out)

    def _children(self) -> list[Path]:
        try:
            return [d for d in self.root.iterdir() if _KEY_NAME.fullmatch(d.name) and d.is_dir()]
        except FileNotFoundError:
            return []

    def total_bytes(self) -> int:
        """Bytes held by the cache's stores, unfinished ones (``<key>.partial``) included."""
        total = 0
        for d in self._children():
            if d.name.endswith(".partial") or _store_marker(d) is not None:
                total += _tree_bytes(d)
        return total

    def evict(self, keep: tuple[str, ...] = ()) -> list[Path]:
        """Delete least recently used stores until the cache fits; never an unfinished one.

        Only finalised stores of this cache are candidates (see the class docstring); the
        stores named in ``keep`` (keys) stay.
        """
        removed = []
        total = self.total_bytes()
        for _, size, d in self._entries():
            if total <= self.max_bytes:
                break
            if d.name in keep:
                continue
            # re-check right before deleting: the folder may have been replaced meanwhile
            if _store_marker(d) is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(d)
            total -= size
            removed.append(d)
        return removed


# a cache entry's name: a key (sha256 hex), optionally with the .partial of a store in progress
_KEY_NAME = re.compile(r"[0-9a-f]{64}(\.partial)?")


def _store_marker(folder: Path) -> Path | None:
    """The file that makes ``folder`` a finalised cache store (its last-use time), else None.

    ``.partial`` folders are never finalised stores.
    """
    return None if folder.name.endswith(".partial") else store_marker(folder)


def _tree_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (Zarr chunks sit in nested folders)."""
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.stat(os.path.join(base, name)).st_size
    return total
