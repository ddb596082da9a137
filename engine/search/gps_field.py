"""GPS fields: the GPS encoder over a regular grid of cells, with no imagery at all.

Every cell centre of an extent is encoded from its coordinates alone; the field is either the
embeddings themselves (one band per dimension) or their similarity to a text or GPS query,
written as a heatmap like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..geo.crs import WGS84, transform_xy
from ..geo.tiff import write_grid_raster
from ..grid import Bounds, TileGrid
from .similarity import write_score_map

if TYPE_CHECKING:
    from ..model.core import UniGeoModel
    from .query import Query

MAX_VALUES = 256_000_000  # cells x bands of an embedding field (1 GB of float32)
MAX_CELLS = 16_000_000  # cells of a heatmap
CHUNK = 65_536  # cells encoded at once


def field_grid(crs: str, box: Bounds, cell_size: float, dim: int, scored: bool) -> TileGrid:
    """The cells of ``box`` (in ``crs``, cells of ``cell_size``), anchored at its top-left corner.

    Raises:
        InputError: more cells than a field of that kind may hold (``scored``: a heatmap).
    """
    grid = TileGrid.for_extent(crs, cell_size, 1, 1, box, origin=(box[0], box[3]))
    limit = MAX_CELLS if scored else MAX_VALUES // dim
    if grid.n_tiles > limit:
        raise InputError(
            f"{grid.n_tiles:,} cells at this RESOLUTION exceed {limit:,}; use larger cells"
        )
    return grid


def grid_latlon(grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 latitude and longitude of every cell centre, ``[rows, cols]`` each."""
    xs, ys = grid.centers()
    lon, lat = transform_xy(xs, ys, grid.crs, WGS84)
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise InputError("part of the EXTENT has no WGS84 position; shrink it")
    return lat, lon


def encode_field(
    model: UniGeoModel,
    grid: TileGrid,
    query: Query | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> np.ndarray | None:
    """GPS embeddings ``[rows, cols, D]``, or their scores ``[rows, cols, 1]`` against ``query``.

    Returns None when ``is_canceled`` says so between chunks.
    """
    lat, lon = grid_latlon(grid)
    mat = query.vector()[:, None] if query is not None else None
    flat_lat, flat_lon = lat.reshape(-1), lon.reshape(-1)
    k = model.dim if mat is None else mat.shape[1]
    out = np.empty((flat_lat.size, k), dtype=np.float32)
    for i in range(0, flat_lat.size, CHUNK):
        if is_canceled is not None and is_canceled():
            return None
        s = slice(i, i + CHUNK)
        emb = model.encode_gps(flat_lat[s].astype(np.float32), flat_lon[s].astype(np.float32))
        out[s] = emb if mat is None else emb @ mat
        if progress is not None:
            progress(min(i + CHUNK, flat_lat.size) / flat_lat.size)
    return out.reshape(*lat.shape, k)


def write_field(
    path: str | Path,
    grid: TileGrid,
    field: np.ndarray,
    model: UniGeoModel,
    scored: bool,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """A scored field as a heatmap (cosine and percentile), else one band per dimension."""
    if scored:
        prov = {"model_hash": model.model_hash, **(provenance or {})}
        return write_score_map(path, grid, field[..., 0], provenance=prov)
    bands = [field[..., d] for d in range(field.shape[-1])]
    return write_grid_raster(
        path, grid, bands, dtype="float32", nodata=None, provenance=dict(provenance or {})
    )
