"""Reading batches of grid tiles from a raster: one window per rectangle of neighbouring tiles.

:func:`read_batch` is how both the single-process pipeline (:mod:`~engine.embed.job`) and the Dask task
(:mod:`~engine.scale.distributed`) read their tiles, so the two produce the same chips. A window never holds
more than ``WINDOW_MAX_VALUES`` values, so memory stays bounded whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import RasterInputError
from ..grid import TileGrid
from .layout import BandLayout
from .reader import RasterReader

Cell = tuple[int, int]
# values (bands x pixels) one window read may hold: 32 MB of float32, e.g. 55 tiles of 224 px x 3
WINDOW_MAX_VALUES = 1 << 23


def read_batch(
    reader: RasterReader, grid: TileGrid, bands: Sequence[str], cells: Sequence[Cell]
) -> tuple[np.ndarray, np.ndarray]:
    """Chips ``[n, C, H, W]`` (float32) of grid ``cells`` and each chip's fraction of NaN values.

    A reader with ``read_window`` reads each rectangle of neighbouring cells at once and the
    chips are cut out of it (tiles of one lattice are contiguous in the grid CRS); others are
    read tile by tile. Thread-safe when the reader is; the pipeline and the Dask task both read
    their batches with it.

    Raises:
        RasterInputError: the reader returned a chip or window of the wrong shape.
    """
    size = grid.tile_px
    chips = np.empty((len(cells), len(bands), size, size), dtype=np.float32)
    read_window = getattr(reader, "read_window", None)
    if read_window is None:
        for i, (r, c) in enumerate(cells):
            tile = reader.read_tile(grid.tile_bounds(r, c), grid.crs, grid.gsd, size, bands)
            _put(chips, i, tile)
    else:
        s = grid.stride_px
        for r0, c0, nr, nc, members in rectangles(cells, _max_tiles(grid, len(bands))):
            x0, _, _, y1 = grid.tile_bounds(r0, c0)
            _, y0, x1, _ = grid.tile_bounds(r0 + nr - 1, c0 + nc - 1)
            win = read_window((x0, y0, x1, y1), grid.crs, grid.gsd, bands)
            want = (len(bands), (nr - 1) * s + size, (nc - 1) * s + size)
            if win.shape != want:
                raise RasterInputError(
                    f"the raster reader returned a {win.shape} window, expected {want}"
                )
            for i, r, c in members:
                y, x = (r - r0) * s, (c - c0) * s
                chips[i] = win[:, y : y + size, x : x + size]
    nan = np.count_nonzero(np.isnan(chips).reshape(len(cells), -1), axis=1)
    return chips, nan / (len(bands) * size * size)


def read_chips(
    reader: RasterReader,
    grid: TileGrid,
    bands: Sequence[str] | BandLayout,
    cells: Sequence[Cell],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_batch`, with the tiles that overhang the raster's edge read shifted inside.

    With a :class:`~.layout.BandLayout`, only the bands the raster has are read and the others
    come back as NaN planes (the no-data fraction counts the bands read). What the embedding
    pipeline and the Dask task read, so their stores agree.
    """
    layout = bands if isinstance(bands, BandLayout) else BandLayout(tuple(bands), tuple(bands))
    chips, frac = read_batch(reader, grid, layout.read, cells)
    shift_edge_tiles(reader, grid, layout.read, cells, chips, frac)
    return layout.scatter(chips), frac


def shift_edge_tiles(
    reader: RasterReader,
    grid: TileGrid,
    bands: Sequence[str],
    cells: Sequence[Cell],
    chips: np.ndarray,
    frac: np.ndarray,
) -> None:
    """Tiles that reach past the raster's edge are read shifted inwards, whole pixels at a time.

    The tile lattice is anchored far away, so the tiles along a raster's edges hang over it:
    read where they are, they are part empty (and were skipped past half empty, leaving the
    raster's last strip uncovered, or embedded as half-blank chips that won queries). Read
    shifted just inside the raster's extent instead, each edge cell gets a full chip of the
    ground next to it. The shift depends on the raster and the cell only, so a cell gets the
    same chip whatever extent is embedded. ``chips`` and ``frac`` are updated in place.
    """
    todo = np.flatnonzero(frac > 0)
    box = _raster_box(reader, grid.crs) if todo.size else None
    if box is None:
        return
    size, pixels = grid.tile_px, len(bands) * grid.tile_px * grid.tile_px
    for i in todo:
        tb = grid.tile_bounds(*cells[i])
        moved = edge_shift(tb, box, grid.gsd)
        if moved == tb:
            continue
        tile = reader.read_tile(moved, grid.crs, grid.gsd, size, bands)
        if tile.shape != chips.shape[1:]:
            continue
        f = np.count_nonzero(np.isnan(tile)) / pixels
        if f < frac[i]:
            chips[i], frac[i] = tile, f


def edge_shift(
    tile: tuple[float, float, float, float], box: tuple[float, float, float, float], gsd: float
) -> tuple[float, float, float, float]:
    """``tile`` moved by whole ``gsd`` pixels so it lies inside ``box`` where it overhangs an edge.

    Only a tile at least half inside moves (by at most half its size): one mostly outside would
    land on its inner neighbour and duplicate it; it stays where it is (and, mostly empty, is
    skipped; outputs draw its strip of the raster with the neighbour's value, see
    :mod:`~engine.geo.render`). An axis along which the box is narrower than the tile is left as it is.
    """

    def delta(lo: float, hi: float, blo: float, bhi: float) -> float:
        if hi - lo > bhi - blo:
            return 0.0
        if lo < blo:
            d = np.ceil((blo - lo) / gsd - 1e-9) * gsd
        elif hi > bhi:
            d = -np.ceil((hi - bhi) / gsd - 1e-9) * gsd
        else:
            return 0.0
        return d if abs(d) <= (hi - lo) / 2 else 0.0

    dx = delta(tile[0], tile[2], box[0], box[2])
    dy = delta(tile[1], tile[3], box[1], box[3])
    if dx == 0.0 and dy == 0.0:
        return tile
    return (tile[0] + dx, tile[1] + dy, tile[2] + dx, tile[3] + dy)


def _raster_box(reader: RasterReader, grid_crs: str) -> tuple[float, float, float, float] | None:
    """The raster's extent in the grid CRS, or None when the reader has no extent or CRS."""
    bounds, crs = getattr(reader, "bounds", None), getattr(reader, "crs", None)
    if bounds is None or not crs:
        return None
    from ..errors import InputError
    from ..geo.crs import transform_bounds

    try:
        box = transform_bounds(crs, grid_crs, tuple(bounds), densify_pts=21)
    except InputError:
        return None
    return box if box[2] > box[0] and box[3] > box[1] else None


def _put(chips: np.ndarray, i: int, tile: np.ndarray) -> None:
    if tile.shape != chips.shape[1:]:
        raise RasterInputError(
            f"the raster reader returned a {tile.shape} chip, expected {chips.shape[1:]}"
        )
    chips[i] = tile


def _max_tiles(grid: TileGrid, bands: int) -> int:
    """Most tiles one window may cover, so that it stays under ``WINDOW_MAX_VALUES``."""
    return max(1, WINDOW_MAX_VALUES // (bands * grid.tile_px * grid.tile_px))


def rectangles(cells: Sequence[Cell], max_tiles: int) -> list[list]:
    """Cover ``cells`` with rectangles ``[r0, c0, rows, cols, [(index, r, c), ...]]``.

    Runs of consecutive columns in one row, stacked while the next row has the same run; at
    most ``max_tiles`` tiles each, so a window's memory stays bounded whatever the batch.
    """
    runs: list[list] = []
    for i, (r, c) in enumerate(cells):
        last = runs[-1] if runs else None
        if last and (r, c) == (last[0], last[1] + last[3]) and last[3] < max_tiles:
            last[3] += 1
            last[4].append((i, r, c))
        else:
            runs.append([r, c, 1, 1, [(i, r, c)]])
    rects: list[list] = []
    for run in runs:
        top = rects[-1] if rects else None
        if (
            top
            and (run[0], run[1], run[3]) == (top[0] + top[2], top[1], top[3])
            and (top[2] + 1) * top[3] <= max_tiles
        ):
            top[2] += 1
            top[4] += run[4]
        else:
            rects.append(run)
    return rects
