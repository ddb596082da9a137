"""The tile grid: a lattice anchored at a fixed origin, so any sub-extent gives the same tiles.

Tiles are squares of ``tile_px`` pixels at ``gsd`` (CRS units per pixel), stepped by
``stride_px``. Global tile (i, j) has its top-left corner at
``(origin_x + j * S - off, origin_y - i * S + off)`` where ``S = stride_px * gsd`` and
``off = (tile_px - stride_px) * gsd / 2``. Each tile "owns" one S × S cell centred on the tile
(its heatmap pixel). A grid over an extent holds the tiles whose cell intersects the extent; the
indices are global, so a sub-extent selects exactly the same tiles (and so the same embeddings)
as the full extent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError

Bounds = tuple[float, float, float, float]  # (minx, miny, maxx, maxy) in the grid CRS

DEFAULT_MAX_TILES = 50_000_000
_EPS = 1e-9


def _snap(v: float) -> float:
    """``v`` rounded to the nearest integer when it is one up to float error (relative to |v|:
    far from the origin a cell index of 2.6e7 carries errors of ~1e-8 cells)."""
    r = round(v)
    return float(r) if abs(v - r) <= _EPS * max(1.0, abs(v)) else v


def _floor(v: float) -> int:
    return math.floor(_snap(v))


def _ceil(v: float) -> int:
    return math.ceil(_snap(v))


@dataclass(frozen=True)
class TileGrid:
    """A rectangular block of the anchored tile lattice, in one CRS."""

    crs: str  # CRS of the grid as WKT or "EPSG:n"
    gsd: float  # pixel size in CRS units (metres for projected CRSs)
    tile_px: int  # tile side in pixels (the encoder's input size)
    stride_px: int  # step between neighbouring tiles in pixels (= tile_px: no overlap)
    row0: int  # global row index of local row 0
    col0: int  # global column index of local column 0
    rows: int  # number of tile rows
    cols: int  # number of tile columns
    origin_x: float = 0.0  # lattice anchor x (fixed; changing it changes every tile)
    origin_y: float = 0.0  # lattice anchor y

    def __post_init__(self) -> None:
        if not (self.gsd > 0 and math.isfinite(self.gsd)):
            raise InputError(f"grid GSD must be a positive number, got {self.gsd}")
        if self.tile_px < 1 or not 1 <= self.stride_px <= self.tile_px:
            raise InputError(
                f"need tile_px >= 1 and 1 <= stride_px <= tile_px (got {self.tile_px}, {self.stride_px})"
            )
        if self.rows < 0 or self.cols < 0:
            raise InputError("grid rows and cols must be >= 0")

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def for_extent(
        cls,
        crs: str,
        gsd: float,
        tile_px: int,
        stride_px: int | None,
        bounds: Bounds,
        origin: tuple[float, float] = (0.0, 0.0),
        max_tiles: int = DEFAULT_MAX_TILES,
    ) -> TileGrid:
        """The tiles whose cell intersects ``bounds`` (a non-empty box in ``crs``)."""
        stride_px = tile_px if stride_px is None else stride_px
        minx, miny, maxx, maxy = (float(b) for b in bounds)
        if not all(map(math.isfinite, (minx, miny, maxx, maxy))):
            raise InputError(f"extent {bounds} is not finite")
        if not (maxx > minx and maxy > miny):
            raise InputError(f"extent {bounds} is empty")
        probe = cls(crs, gsd, tile_px, stride_px, 0, 0, 0, 0, *origin)
        s, off = probe.cell_size, probe._cell_offset
        ox, oy = origin
        c0 = _floor((minx - ox - off) / s)
        c1 = _ceil((maxx - ox - off) / s)
        r0 = _floor((oy - off - maxy) / s)
        r1 = _ceil((oy - off - miny) / s)
        rows, cols = max(r1 - r0, 0), max(c1 - c0, 0)
        if rows * cols > max_tiles:
            raise InputError(
                f"the extent needs {rows * cols:,} tiles (> {max_tiles:,}); choose a smaller "
                "extent, a larger stride, or raise max_tiles"
            )
        return cls(crs, gsd, tile_px, stride_px, r0, c0, rows, cols, *origin)

    def subgrid(self, bounds: Bounds) -> TileGrid:
        """The part of this grid whose cells intersect ``bounds`` (same CRS, same lattice)."""
        # clip first: a box much larger than the grid must not trip for_extent's tile cap
        gx0, gy0, gx1, gy1 = self.bounds
        bx0, by0, bx1, by1 = (float(b) for b in bounds)
        if not all(map(math.isfinite, (bx0, by0, bx1, by1))) or not (bx1 > bx0 and by1 > by0):
            raise InputError(f"extent {bounds} is empty or not finite")
        box = (max(bx0, gx0), max(by0, gy0), min(bx1, gx1), min(by1, gy1))
        if not (box[2] > box[0] and box[3] > box[1]):
            return TileGrid(
                self.crs, self.gsd, self.tile_px, self.stride_px, self.row0, self.col0, 0, 0,
                self.origin_x, self.origin_y,
            )  # fmt: skip
        g = TileGrid.for_extent(
            self.crs, self.gsd, self.tile_px, self.stride_px, box, (self.origin_x, self.origin_y)
        )
        r0, c0 = max(g.row0, self.row0), max(g.col0, self.col0)
        r1 = min(g.row0 + g.rows, self.row0 + self.rows)
        c1 = min(g.col0 + g.cols, self.col0 + self.cols)
        return TileGrid(
            self.crs,
            self.gsd,
            self.tile_px,
            self.stride_px,
            r0,
            c0,
            max(r1 - r0, 0),
            max(c1 - c0, 0),
            self.origin_x,
            self.origin_y,
        )

    # -- geometry ---------------------------------------------------------------------------
    @property
    def cell_size(self) -> float:
        """Side of a tile's cell (= heatmap pixel) in CRS units."""
        return self.stride_px * self.gsd

    @property
    def tile_size(self) -> float:
        """Side of a tile's footprint in CRS units."""
        return self.tile_px * self.gsd

    @property
    def _cell_offset(self) -> float:
        return (self.tile_px - self.stride_px) * self.gsd / 2.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    def cell_bounds(self, row: int, col: int) -> Bounds:
        """Bounds of the cell owned by local tile (row, col)."""
        s, off = self.cell_size, self._cell_offset
        x0 = self.origin_x + (self.col0 + col) * s + off
        y1 = self.origin_y - (self.row0 + row) * s - off
        return (x0, y1 - s, x0 + s, y1)

    def tile_bounds(self, row: int, col: int) -> Bounds:
        """Bounds of the footprint the encoder sees for local tile (row, col)."""
        x0, y0, x1, y1 = self.cell_bounds(row, col)
        off = self._cell_offset
        return (x0 - off, y0 - off, x1 + off, y1 + off)

    def tile_center(self, row: int, col: int) -> tuple[float, float]:
        x0, y0, x1, y1 = self.cell_bounds(row, col)
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Arrays ``(x, y)`` of shape (rows, cols) with every tile centre."""
        s = self.cell_size
        x0, _, _, y1 = self.cell_bounds(0, 0)
        xs = x0 + s / 2.0 + np.arange(self.cols) * s
        ys = y1 - s / 2.0 - np.arange(self.rows) * s
        return np.meshgrid(xs, ys)

    @property
    def bounds(self) -> Bounds:
        """Union of the cells (the extent of the heatmap raster)."""
        x0, _, _, y1 = self.cell_bounds(0, 0)
        return (x0, y1 - self.rows * self.cell_size, x0 + self.cols * self.cell_size, y1)

    @property
    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL geotransform of a raster with one pixel per tile cell."""
        x0, _, _, y1 = self.cell_bounds(0, 0)
        s = self.cell_size
        return (x0, s, 0.0, y1, 0.0, -s)

    def cell_of(self, x: float, y: float) -> tuple[int, int] | None:
        """Local (row, col) of the cell containing (x, y), or None outside the grid."""
        x0, _, _, y1 = self.cell_bounds(0, 0)
        c = math.floor((x - x0) / self.cell_size)
        r = math.floor((y1 - y) / self.cell_size)
        if 0 <= r < self.rows and 0 <= c < self.cols:
            return r, c
        return None

    def iter_blocks(self, block: int) -> Iterator[tuple[int, int, int, int]]:
        """Row-major blocks ``(r0, c0, nrows, ncols)`` of at most ``block`` × ``block`` tiles."""
        for r in range(0, self.rows, block):
            for c in range(0, self.cols, block):
                yield r, c, min(block, self.rows - r), min(block, self.cols - c)

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TileGrid:
        try:
            return cls(
                crs=str(d["crs"]),
                gsd=float(d["gsd"]),
                tile_px=int(d["tile_px"]),
                stride_px=int(d["stride_px"]),
                row0=int(d["row0"]),
                col0=int(d["col0"]),
                rows=int(d["rows"]),
                cols=int(d["cols"]),
                origin_x=float(d.get("origin_x", 0.0)),
                origin_y=float(d.get("origin_y", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a tile-grid description ({e})") from None

    def lattice_key(self) -> tuple:
        """What identifies the lattice (not the extent): equal keys mean compatible grids."""
        return (self.crs, self.gsd, self.tile_px, self.stride_px, self.origin_x, self.origin_y)
