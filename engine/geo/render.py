"""Output rasters drawn inside the raster they came from, finer than one pixel per tile.

A store has one embedding per tile cell of a lattice anchored far away, so along the raster's
edges (and all around a raster in another CRS, whose outline is skewed in the grid CRS) cells
reach past the raster, and the part of a cell left uncovered by a skipped tile shows nothing.
Heatmaps and class maps are therefore written on a finer grid (each cell split into ``k x k``
pixels), cropped to the raster's outline and with every pixel outside it set to no data; the
scores themselves stay one per tile.

The outline (the source raster's bounds, densified and transformed to the grid CRS) and the
source's pixel size are recorded in the store's metadata when it is embedded
(:func:`footprint_meta`); stores without them are written one pixel per cell as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..grid import TileGrid
from . import crs as C

MAX_FACTOR = 8
"""At most 8 x 8 output pixels per tile cell (40 m pixels for the 320 m cells of 64-px tiles at 5 m)."""
MAX_PIXELS = 16_000_000
"""The finer grid never holds more pixels than this (the factor drops instead)."""
_EDGE_POINTS = 21  # points per edge of the densified outline


def footprint_meta(reader: Any, grid: TileGrid) -> dict[str, Any]:
    """``{"footprint_wkt": ..., "source_gsd_m": ...}`` of ``reader`` in ``grid``'s CRS, for the store.

    Empty when the reader has no extent or CRS, or its outline cannot be placed in the grid CRS.
    """
    if getattr(reader, "bounds", None) is None or not getattr(reader, "crs", None):
        return {}
    x0, y0, x1, y1 = (float(v) for v in reader.bounds)
    t = np.linspace(0.0, 1.0, _EDGE_POINTS)[:-1]
    xs = np.concatenate(
        [x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)]
    )
    ys = np.concatenate(
        [np.full_like(t, y1), y1 - (y1 - y0) * t, np.full_like(t, y0), y0 + (y1 - y0) * t]
    )
    gx, gy = C.transform_xy(xs, ys, reader.crs, grid.crs)
    if not (np.isfinite(gx).all() and np.isfinite(gy).all()):
        return {}
    ring = ", ".join(f"{x:.3f} {y:.3f}" for x, y in zip([*gx, gx[0]], [*gy, gy[0]], strict=True))
    res = getattr(reader, "res", None)
    out: dict[str, Any] = {"footprint_wkt": f"POLYGON (({ring}))"}
    if res:
        # the source pixel in grid units: the outline's size over the raster's pixel count
        nx = max((x1 - x0) / float(res[0]), 1.0)
        out["source_gsd_m"] = round(float((gx.max() - gx.min()) / nx), 4)
    return out


@dataclass(frozen=True)
class Render:
    """How cell rasters of ``grid`` are drawn on the finer, cropped ``out`` grid."""

    grid: TileGrid  # the store's (or window's) grid: one value per cell
    k: int  # output pixels per cell along each axis
    out: TileGrid  # the output grid: cells of size grid.cell_size / k, cropped to the outline
    r_off: int  # row of out's first row in the k-times finer version of grid
    c_off: int  # column of out's first column there
    inside: np.ndarray  # bool [out.rows, out.cols]: pixel centre inside the raster's outline
    # [rows, cols] flat cell index whose value each cell shows: itself, or for a skipped cell on
    # the outline (mostly outside the raster) its valid neighbour, so the raster's last strip is
    # drawn too; -1 where nothing is known
    source: np.ndarray | None = None

    def fill(self, band: np.ndarray) -> np.ndarray:
        """``band`` (``grid.shape``) with each edge cell showing its neighbour's value."""
        if self.source is None:
            return band
        flat = np.asarray(band).reshape(-1)
        return flat[self.source.reshape(-1)].reshape(band.shape)

    def expand(self, rows: np.ndarray, r0: int, nodata: float | int) -> tuple[np.ndarray, int]:
        """Cell rows ``r0..`` (``[h, grid.cols]``) as output rows; ``(pixels, first out row)``.

        Rows of the finer grid that the crop removed are dropped, so the result may be empty.
        """
        k = self.k
        fine = np.repeat(np.repeat(np.asarray(rows), k, axis=0), k, axis=1)
        f0 = r0 * k - self.r_off
        lo, hi = max(0, -f0), min(fine.shape[0], self.out.rows - f0)
        part = fine[lo:hi, self.c_off : self.c_off + self.out.cols]
        if part.size:
            part = np.where(self.inside[f0 + lo : f0 + hi], part, nodata).astype(part.dtype)
        return part, max(f0, 0)


def render_for(store: Any) -> Render | None:
    """The :class:`Render` of ``store`` (or a window of it), None to write one pixel per cell."""
    meta = getattr(store, "meta", None) or {}
    wkt = meta.get("footprint_wkt")
    grid = store.grid
    if not wkt or grid.n_tiles == 0:
        return None
    from .geometry import cells_inside, polygon_wkb

    outline = polygon_wkb(wkt, "the raster's outline")
    k = _factor(grid, meta.get("source_gsd_m"))
    fine = _fine_grid(grid, k)
    minx, miny, maxx, maxy = _bounds(outline)
    fx0, _, _, fy1 = fine.bounds
    s = fine.cell_size
    c_lo = max(0, math.floor((minx - fx0) / s))
    c_hi = min(fine.cols, math.ceil((maxx - fx0) / s))
    r_lo = max(0, math.floor((fy1 - maxy) / s))
    r_hi = min(fine.rows, math.ceil((fy1 - miny) / s))
    if c_hi <= c_lo or r_hi <= r_lo:
        return None
    out = TileGrid(
        fine.crs, fine.gsd, 1, 1, fine.row0 + r_lo, fine.col0 + c_lo, r_hi - r_lo, c_hi - c_lo,
        fine.origin_x, fine.origin_y,
    )  # fmt: skip
    inside = np.zeros(out.shape, dtype=bool)
    rr, cc = cells_inside(out, outline)
    inside[rr, cc] = True
    if inside.all() and out.shape == fine.shape:
        return None  # the raster covers every cell: one pixel per cell says it all
    valid = getattr(store, "valid", None)
    source = (
        None if valid is None else _edge_sources(np.asarray(valid, bool), inside, k, r_lo, c_lo)
    )
    return Render(grid, k, out, r_lo, c_lo, inside, source)


def _edge_sources(
    valid: np.ndarray, inside: np.ndarray, k: int, r_lo: int, c_lo: int
) -> np.ndarray | None:
    """Per cell, the flat index of the cell whose value it shows (see :attr:`Render.source`).

    A skipped cell that the outline cuts (some of its pixels inside the raster, some outside)
    shows the valid 4-neighbour with most of its pixels inside; every other cell shows itself.
    """
    rows, cols = valid.shape
    padded = np.zeros((rows * k, cols * k), dtype=bool)
    padded[r_lo : r_lo + inside.shape[0], c_lo : c_lo + inside.shape[1]] = inside
    share = padded.reshape(rows, k, cols, k).mean(axis=(1, 3))  # fraction of pixels inside
    edge = ~valid & (share > 0) & (share < 1)
    source = np.arange(rows * cols).reshape(rows, cols)
    if not edge.any():
        return None
    for r, c in zip(*np.nonzero(edge), strict=True):
        best, best_share = -1, 0.0
        for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            rr, cc = r + dr, c + dc
            if 0 <= rr < rows and 0 <= cc < cols and valid[rr, cc] and share[rr, cc] > best_share:
                best, best_share = rr * cols + cc, share[rr, cc]
        if best >= 0:
            source[r, c] = best
    return source


def _factor(grid: TileGrid, source_gsd: float | None) -> int:
    """Output pixels per cell: down to the source's pixel size, at most MAX_FACTOR and MAX_PIXELS."""
    cell = grid.cell_size
    src = float(source_gsd) if source_gsd else cell / MAX_FACTOR
    k = max(1, min(MAX_FACTOR, math.ceil(cell / max(src, cell / MAX_FACTOR) - 1e-9)))
    while k > 1 and grid.n_tiles * k * k > MAX_PIXELS:
        k -= 1
    return k


def _fine_grid(grid: TileGrid, k: int) -> TileGrid:
    """``grid`` with each cell split into ``k x k`` cells (1-px tiles, the same outer bounds)."""
    off = (grid.tile_px - grid.stride_px) * grid.gsd / 2.0
    return TileGrid(
        grid.crs, grid.cell_size / k, 1, 1, grid.row0 * k, grid.col0 * k, grid.rows * k,
        grid.cols * k, grid.origin_x + off, grid.origin_y - off,
    )  # fmt: skip


def _bounds(wkb: bytes) -> tuple[float, float, float, float]:
    from .geometry import bounds

    return bounds(wkb)
