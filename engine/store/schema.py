"""The store description's types and ranges, checked when a store is opened.

A hand-edited or damaged ``store.json`` (``"dim": "abc"``, ``"block_tiles": 0``, a grid of 1.5
rows, an unknown CRS) used to surface as a ``ValueError`` or ``ZeroDivisionError`` traceback
somewhere deep in a query, or worse, to be accepted. :func:`check_description` refuses it with
one :class:`~.errors.StoreError` that names the file, the key and what was found. Keys it does
not know are left alone (newer writers may add some).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import InputError, StoreError
from ..geo import crs as C

_MAX_DIM = 1 << 16  # no embedding has more dimensions; a larger value is damage
_MAX_TILES_SIDE = 1 << 31


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int_in(v: Any, lo: int, hi: int = _MAX_TILES_SIDE) -> bool:
    return _is_int(v) and lo <= v <= hi


def _problems(info: dict[str, Any]) -> list[str]:
    """``"key: what is wrong"`` for every top-level key of the wrong type or range."""
    bad = []
    if not _int_in(info.get("format_version"), 1):
        bad.append("format_version must be a whole number >= 1")
    if not _int_in(info.get("dim"), 1, _MAX_DIM):
        bad.append(f"dim must be a whole number from 1 to {_MAX_DIM}")
    if not _int_in(info.get("block_tiles"), 1):
        bad.append("block_tiles must be a whole number >= 1")
    for key in ("model_hash", "source_fingerprint"):
        if not (isinstance(info.get(key), str) and info[key]):
            bad.append(f"{key} must be a non-empty text")
    optional = {
        "n_blocks": (lambda v: _int_in(v, 0), "a whole number >= 0"),
        "complete": (lambda v: isinstance(v, bool), "true or false"),
        "meta": (lambda v: isinstance(v, dict), "an object"),
        "crs": (lambda v: isinstance(v, str), "a text"),
        "bands": (
            lambda v: v is None or (isinstance(v, list) and all(isinstance(b, str) for b in v)),
            "a list of band names",
        ),
    }
    for key, (ok, what) in optional.items():
        if key in info and not ok(info[key]):
            bad.append(f"{key} must be {what}")
    return bad


def _grid_problems(grid: Any) -> list[str]:
    """What is wrong with the ``grid`` object (types and ranges; the CRS is checked after)."""
    if not isinstance(grid, dict):
        return ["grid must be an object"]
    bad = []
    if not (isinstance(grid.get("crs"), str) and grid["crs"].strip()):
        bad.append("grid.crs must be a CRS text (e.g. EPSG:32633)")
    gsd = grid.get("gsd")
    if not (_is_number(gsd) and gsd > 0):
        bad.append("grid.gsd must be a positive number")
    if not _int_in(grid.get("tile_px"), 1, 1 << 16):
        bad.append("grid.tile_px must be a whole number >= 1")
    stride = grid.get("stride_px")
    if not (
        _int_in(stride, 1, 1 << 16)
        and (not _is_int(grid.get("tile_px")) or stride <= grid["tile_px"])
    ):
        bad.append("grid.stride_px must be a whole number from 1 to tile_px")
    for key in ("row0", "col0"):
        if not _int_in(grid.get(key), -_MAX_TILES_SIDE):
            bad.append(f"grid.{key} must be a whole number")
    for key in ("rows", "cols"):
        if not _int_in(grid.get(key), 1):
            bad.append(f"grid.{key} must be a whole number >= 1")
    for key in ("origin_x", "origin_y"):
        if key in grid and not _is_number(grid[key]):
            bad.append(f"grid.{key} must be a finite number")
    return bad


def check_description(info: dict[str, Any], where: Path) -> None:
    """Refuse a store description with a key of the wrong type or range, or an unknown CRS.

    Args:
        info: the description (store.json, or a Zarr store's ``unigeo`` attributes).
        where: the file it came from, for the message.

    Raises:
        StoreError: naming ``where``, the first problems found and what to do.
    """
    bad = _problems(info) + _grid_problems(info.get("grid"))
    if not bad:
        try:
            C.check_crs(info["grid"]["crs"])
        except InputError:
            bad.append(f"grid.crs '{info['grid']['crs'][:60]}' is not a CRS GDAL/PROJ knows")
    if bad:
        shown = "; ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
        raise StoreError(
            f"{where} is damaged: {shown}; embed the raster again into a new store (the store "
            "cannot be read as it is)"
        )
