"""The Zarr embedding store written by distributed jobs, and ``open_store`` for either kind.

A Zarr store is a Zarr v3 group folder with the same content and read interface as the npy
:class:`~.store.EmbeddingStore`, so queries, the CLI and the plugin work on both:

- group attribute ``"unigeo"``: the same dict as ``store.json`` (grid, CRS, dim, model hash,
  source fingerprint, bands, scaling, ``complete``, ``block_tiles``, ``n_blocks``, ``meta``).
- ``embeddings``: float16 ``[rows, cols, D]``, one chunk per resume block
  (``block_tiles × block_tiles × D``), uncompressed: float16 embeddings barely compress and
  queries read them at memory speed.
- ``valid``: bool ``[rows, cols]``, chunks ``block_tiles × block_tiles``.
- ``done``: uint8 ``[n_blocks]``, one chunk (one tiny file) per block. A worker sets it only
  after the block's data chunks are written: it is the chunk-level resume marker.

Like the npy store it is written in ``<path>.partial`` and renamed on :meth:`finalize`. ``zarr``
is imported inside functions so that ``engine`` imports without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import STORE_ATTR, ZARR_JSON
from ..errors import InputError, StoreError
from ..grid import TileGrid
from .base import StoreBase, new_info, partial_path, read_description
from .guard import mark_partial, remove_partial, unmark_partial

log = logging.getLogger(__name__)


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise StoreError(
            "reading or writing a Zarr embedding store needs the 'zarr' package (>= 3.1); "
            "install the project's 'scale' extra"
        ) from None
    return zarr


class ZarrEmbeddings:
    """A read view of the ``embeddings`` Zarr array that also takes NumPy fancy indexing.

    ``store.embeddings[rows, cols]`` with integer arrays (used by region queries and few-shot
    classification) is routed to Zarr's ``vindex``; slices go to the array as they are.

    Attributes:
        array: the underlying ``zarr.Array``.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        items = key if isinstance(key, tuple) else (key,)
        if not any(isinstance(k, (np.ndarray, list)) for k in items):
            return np.asarray(self.array[key])
        arrays = [np.asarray(k) for k in items]
        if len(arrays) == 1 and arrays[0].dtype == bool and arrays[0].ndim == 2:
            arrays = list(np.nonzero(arrays[0]))  # a [rows, cols] tile mask
        if len(arrays) == 2 and self.ndim == 3 and all(a.dtype.kind in "iu" for a in arrays):
            # Zarr's vindex wants one coordinate per axis: spell out the embedding axis
            r, c = np.broadcast_arrays(*arrays)
            d = self.shape[2]
            flat = self.array.vindex[
                np.repeat(r.ravel(), d), np.repeat(c.ravel(), d), np.tile(np.arange(d), r.size)
            ]
            return np.asarray(flat).reshape(*r.shape, d)
        return np.asarray(self.array.vindex[key])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self.array[...])
        return out if dtype is None else out.astype(dtype)


class ZarrEmbeddingStore(StoreBase):
    """Embeddings of one tile grid in a Zarr v3 group. Use the class methods to get one."""

    def __init__(self, folder: Path, info: dict[str, Any], mode: str) -> None:
        zarr = _zarr()
        self.folder = folder
        self.info = info
        self.grid = TileGrid.from_dict(info["grid"])
        self.block_tiles = int(info["block_tiles"])
        self._writable = mode == "r+"
        try:
            self._group = zarr.open_group(folder, mode=mode)
            emb, valid, done = (self._group[k] for k in ("embeddings", "valid", "done"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"the Zarr store {folder} is damaged ({e}); embed again") from None
        bt = self.block_tiles
        if (
            tuple(emb.shape) != (self.grid.rows, self.grid.cols, self.dim)
            or emb.dtype != np.float16
            or tuple(emb.chunks[:2]) != (bt, bt)
            or tuple(valid.shape) != (self.grid.rows, self.grid.cols)
            or tuple(done.shape) != (int(info["n_blocks"]),)
            or int(info["n_blocks"]) != len(self.blocks())
        ):
            raise StoreError(f"the Zarr store {folder} does not match its description; embed again")
        self.embeddings = ZarrEmbeddings(emb)
        self._valid_arr, self._done_arr = valid, done
        # 10^8 tiles is 100 MB of bools: loaded once, queries then mask at memory speed
        self.valid: np.ndarray = np.asarray(valid[...], dtype=bool)
        # per-tile no-data fraction (float16); stores written before it existed have none
        frac = self._group.get("nodata")
        self.nodata: np.ndarray | None = None if frac is None else np.asarray(frac[...])

    KIND = "Zarr embedding store"

    @staticmethod
    def _read_info(folder: Path) -> dict[str, Any] | None:
        return _read_info(folder)

    @property
    def done(self) -> np.ndarray:
        """Bool ``[n_blocks]``, read from disk now (workers write it while a job runs)."""
        return np.asarray(self._done_arr[...], dtype=bool)

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
    ) -> ZarrEmbeddingStore:
        """A new Zarr group in ``<path>.partial/`` (see ``create``)."""
        zarr = _zarr()
        info = new_info(grid, dim, model_hash, source_fingerprint, meta, block_tiles)
        folder = partial_path(path)
        remove_partial(folder)
        bt, shape = int(block_tiles), (grid.rows, grid.cols)
        mark_partial(folder)
        group = zarr.open_group(folder, mode="a")
        kw = {"compressors": None, "fill_value": 0}
        group.create_array(
            "embeddings", shape=(*shape, dim), chunks=(bt, bt, dim), dtype="f2", **kw
        )
        group.create_array("valid", shape=shape, chunks=(bt, bt), dtype="bool", **kw)
        group.create_array("done", shape=(info["n_blocks"],), chunks=(1,), dtype="u1", **kw)
        group.create_array("nodata", shape=shape, chunks=(bt, bt), dtype="f2", **kw)
        # the description last: a .partial without it is never resumed
        group.attrs[STORE_ATTR] = info
        unmark_partial(folder)  # the description now says whose folder it is
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
        write_block_at(self.folder, r0, c0, emb, valid, nodata)

    def mark_done(self, block_id: int) -> None:
        """Record block ``block_id`` as written (call after :meth:`write_block`)."""
        self._need_writable()
        mark_done_at(self.folder, block_id)

    def update_meta(self, **meta: Any) -> None:
        """Merge ``meta`` into the description's ``meta`` (zarr.json is replaced atomically)."""
        self._need_writable()
        self.info.setdefault("meta", {}).update(meta)
        self._group.attrs[STORE_ATTR] = self.info

    def _close_data(self) -> None:
        """Nothing to flush: every Zarr chunk is its own file, written when assigned."""

    def _mark_complete(self) -> None:
        self._group.attrs[STORE_ATTR] = self.info


def _read_info(folder: Path) -> dict[str, Any] | None:
    """The "unigeo" attributes of the group at ``folder``; None when there is no group."""
    return read_description(
        folder / ZARR_JSON,
        lambda doc: (doc.get("attributes") or {}).get(STORE_ATTR)
        if isinstance(doc, dict)
        else None,
        f"{folder} is a Zarr group but not a UniGeo embedding store",
    )


def is_zarr_store(path: str | Path) -> bool:
    """True when ``path`` (or its ``.partial``) looks like a Zarr group folder."""
    p = Path(path)
    return (p / ZARR_JSON).is_file() or (partial_path(p) / ZARR_JSON).is_file()


def write_block_at(
    folder: Path,
    r0: int,
    c0: int,
    emb: np.ndarray,
    valid: np.ndarray,
    nodata: np.ndarray | None = None,
) -> None:
    """Write one block into the unfinished Zarr store at ``folder`` (what a Dask worker does).

    Blocks are aligned to the chunk grid (chunk = block_tiles x block_tiles), so no two blocks
    share a chunk file and concurrent writers need no locks; zarr replaces each chunk file
    atomically (written to a temporary name, then renamed).
    """
    zarr = _zarr()
    nr, nc = valid.shape
    if emb.shape[:2] != (nr, nc):
        raise InputError(f"block embeddings have shape {emb.shape}, validity {valid.shape}")
    zarr.open_array(folder / "embeddings", mode="r+")[r0 : r0 + nr, c0 : c0 + nc] = emb.astype(
        np.float16
    )
    zarr.open_array(folder / "valid", mode="r+")[r0 : r0 + nr, c0 : c0 + nc] = valid
    if nodata is not None and (folder / "nodata").is_dir():
        zarr.open_array(folder / "nodata", mode="r+")[r0 : r0 + nr, c0 : c0 + nc] = nodata


def mark_done_at(folder: Path, block_id: int) -> None:
    """Set block ``block_id``'s done marker; written last, so a kill never marks a torn block."""
    _zarr().open_array(folder / "done", mode="r+")[block_id] = 1
