"""A read-only window of an embedding store: the tiles of an EXTENT, on the store's own lattice.

Queries restricted to an extent (Processing algorithms given a STORE and an EXTENT) score, rank
and classify only the tiles of the extent: :func:`store_window` cuts the store's grid with ``TileGrid.subgrid`` (same
lattice, so the same tiles and embeddings as embedding that extent directly) and returns an
object with the store's interface (``grid``, ``embeddings``, ``valid``, ``crs``, ...). Nothing
is copied: an npy store's window is a view of its memory map, a Zarr store's window translates
indices into the Zarr array, so only what a query touches is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..grid import Bounds, TileGrid


class WindowedArray:
    """``base[r0:r0+rows, c0:c0+cols, ...]`` without reading it: indices are shifted on access.

    Supports what the engine uses on ``store.embeddings``: slices (step > 0), integers and
    integer arrays on the two grid axes, anything on the others, and ``np.asarray``.
    """

    def __init__(self, base: Any, r0: int, c0: int, rows: int, cols: int) -> None:
        self.base = base
        self.r0, self.c0 = r0, c0
        self.shape: tuple[int, ...] = (rows, cols, *tuple(base.shape)[2:])
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        items = list(key) if isinstance(key, tuple) else [key]
        if len(items) == 1 and np.asarray(items[0]).dtype == bool and np.ndim(items[0]) == 2:
            items = list(np.nonzero(items[0]))  # a [rows, cols] tile mask
        items += [slice(None)] * (2 - len(items))
        rows = _shift(items[0], self.r0, self.shape[0])
        cols = _shift(items[1], self.c0, self.shape[1])
        return np.asarray(self.base[(rows, cols, *items[2:])])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


def _shift(key: Any, offset: int, n: int) -> Any:
    """One grid-axis index of the window as an index of the base array."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step < 0:
            return np.arange(start, stop, step) + offset
        return slice(start + offset, max(stop, start) + offset, step)
    arr = np.asarray(key)
    if arr.dtype.kind not in "iu":
        raise InputError(f"cannot index a store window with {key!r}")
    if np.any((arr < -n) | (arr >= n)):
        raise IndexError(f"index out of the window's {n} rows/columns")
    out = np.where(arr < 0, arr + n, arr) + offset
    return int(out) if out.ndim == 0 else out


class StoreWindow:
    """The tiles of ``grid`` (a subgrid of ``store.grid``) with the store's read interface."""

    def __init__(self, store: Any, grid: TileGrid) -> None:
        self.store = store
        self.grid = grid
        r0, c0 = grid.row0 - store.grid.row0, grid.col0 - store.grid.col0
        rows, cols = grid.rows, grid.cols
        if isinstance(store.embeddings, np.ndarray):  # npy memory map: a view, no copy
            self.embeddings = store.embeddings[r0 : r0 + rows, c0 : c0 + cols]
        else:
            self.embeddings = WindowedArray(store.embeddings, r0, c0, rows, cols)
        self.valid = np.asarray(store.valid[r0 : r0 + rows, c0 : c0 + cols], dtype=bool)
        frac = getattr(store, "nodata", None)
        self.nodata = None if frac is None else np.asarray(frac[r0 : r0 + rows, c0 : c0 + cols])

    @property
    def crs(self) -> str:
        return self.grid.crs

    def __getattr__(self, name: str) -> Any:
        # everything else (dim, model_hash, folder, info, meta, ...) is the whole store's
        if name == "store":  # not set yet (a failed __init__): no endless recursion
            raise AttributeError(name)
        return getattr(self.store, name)


def store_window(store: Any, bounds: Bounds) -> StoreWindow | None:
    """The window of ``store`` over ``bounds`` (in the store's CRS); None when they miss.

    Raises:
        InputError: ``bounds`` is empty or not finite.
    """
    sub = store.grid.subgrid(bounds)
    if sub.rows == 0 or sub.cols == 0:
        return None
    return StoreWindow(store, sub)


DEFAULT_MAX_NODATA = 0.25
"""Queries skip tiles with more than this fraction of no data (raster edges, nodata collars).

Such tiles are embedded (up to the store's own ``max_nodata``, 0.5 by default) but their
embeddings describe a part-empty chip: they won too often as top hits along raster edges.
"""


def restrict_nodata(store: Any, max_nodata: float | None = DEFAULT_MAX_NODATA) -> Any:
    """``store`` with tiles whose no-data fraction exceeds ``max_nodata`` marked invalid.

    Returns the store itself when there is nothing to restrict (``None`` or ``>= 1``, or a
    store written before per-tile fractions were recorded), else a :class:`StoreWindow` over the
    whole grid whose ``valid`` leaves those tiles out: heatmaps show them as no data, and hits
    and classifications never pick them.

    Raises:
        InputError: ``max_nodata`` is not a number in [0, 1].
    """
    if max_nodata is None:
        return store
    t = float(max_nodata)
    if not 0.0 <= t <= 1.0:
        raise InputError(f"max_nodata must be a fraction in [0, 1], got {max_nodata}")
    if t >= 1.0 or getattr(store, "nodata", None) is None:
        return store
    view = StoreWindow(store, store.grid)
    view.valid = view.valid & (np.asarray(view.nodata, dtype=np.float32) <= t)
    return view


def keep_tiles(store: Any, keep: np.ndarray) -> StoreWindow:
    """``store`` with only the tiles where ``keep`` (bool ``[rows, cols]``) holds left valid.

    For an area's polygons: heatmaps show the other tiles as no data and rank percentiles within
    the area, in memory and chunk by chunk alike; nothing is copied but the validity mask.
    """
    view = StoreWindow(store, store.grid)
    view.valid = view.valid & np.asarray(keep, dtype=bool)
    return view
