"""Reading a raster through GDAL's warper, onto the tile lattice in the grid CRS at the grid GSD.

The reference read path of :class:`~.raster_io.RasterioReader` (and its only path for rasters in
another CRS or at another pixel size): a ``rasterio.vrt.WarpedVRT`` whose pixel lattice is
snapped to the tile lattice, so every tile is an integer window of it, read the same way
whatever extent it belongs to. :mod:`.native_read` is the fast path that skips the warper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .grid import Bounds

FILL = -3.0e38  # the VRT's nodata; NaN there makes GDAL's warper return NaN everywhere


def open_warped_vrt(
    path: Path,
    grid_crs: str,
    gsd: float,
    phase_xy: tuple[float, float],
    alpha: Sequence[int],
    nodata: float | None,
    resampling: Any,
) -> tuple[Any, Any]:
    """A WarpedVRT of ``path`` on the lattice ``x = px + k * gsd`` (likewise y), and its source.

    Args:
        path: the raster file.
        grid_crs: the grid CRS.
        gsd: the grid's pixel size in grid CRS units.
        phase_xy: ``(px, py)``, a lattice point in the grid CRS.
        alpha: 1-based alpha (mask) bands; the first one masks the warp.
        nodata: no-data value overriding the file's own, or None.
        resampling: a ``rasterio.enums.Resampling``.

    Returns:
        ``(vrt, src)``: the caller owns both and must close both.
    """
    import rasterio
    from affine import Affine
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    src = rasterio.open(path)
    box = transform_bounds(src.crs, grid_crs, *src.bounds, densify_pts=21)
    left, top, width, height = _snap(box, phase_xy, gsd)
    kw: dict[str, Any] = {}
    if alpha:
        kw["src_alpha"] = alpha[0]
    if nodata is not None:
        kw["src_nodata"] = nodata
    vrt = WarpedVRT(
        src,
        crs=grid_crs,
        transform=Affine(gsd, 0.0, left, 0.0, -gsd, top),
        width=width,
        height=height,
        resampling=resampling,
        dtype="float32",
        nodata=FILL,
        **kw,
    )
    return vrt, src


def _snap(box: Bounds, phase_xy: tuple[float, float], gsd: float) -> tuple[float, float, int, int]:
    """(left, top, width, height) of ``box`` snapped outwards onto the lattice, plus a margin."""
    px, py = phase_xy
    x0, y0, x1, y1 = box
    # snap outwards onto the lattice x = px + k * gsd, with a one-pixel margin
    left = px + (math.floor((x0 - px) / gsd) - 1) * gsd
    bottom = py + (math.floor((y0 - py) / gsd) - 1) * gsd
    width = math.ceil((x1 - left) / gsd) + 1
    height = math.ceil((y1 - bottom) / gsd) + 1
    return left, bottom + height * gsd, width, height


def read_warped(
    vrt: Any, bounds: Bounds, gsd: float, idx: list[int], h: int, w: int, resampling: Any
) -> np.ndarray:
    """Raw float32 values of ``bounds`` from ``vrt``, resampled to ``h`` x ``w``, NaN = no data.

    Raises:
        rasterio.errors.RasterioIOError: the file cannot be read there (truncated or damaged).
    """
    out = np.full((len(idx), h, w), np.nan, dtype=np.float32)
    src_win, dst = _clip(_window(vrt.transform, bounds, gsd), vrt.width, vrt.height, h, w)
    if src_win is not None:
        from rasterio.windows import Window

        r0, r1, c0, c1 = dst
        out[:, r0:r1, c0:c1] = vrt.read(
            idx,
            window=Window(*src_win),
            out_shape=(len(idx), r1 - r0, c1 - c0),
            resampling=resampling,
        )
        out[out <= FILL] = np.nan
    return out


def _window(transform: Any, bounds: Bounds, gsd: float) -> tuple[float, float, float, float]:
    """(col_off, row_off, width, height) of ``bounds`` in VRT pixels, snapped when integral."""
    minx, miny, maxx, maxy = bounds
    vals = (
        (minx - transform.c) / gsd,
        (transform.f - maxy) / gsd,
        (maxx - minx) / gsd,
        (maxy - miny) / gsd,
    )
    return tuple(float(round(v)) if abs(v - round(v)) < 1e-6 else v for v in vals)


def _clip(
    win: tuple[float, float, float, float], width: int, height: int, h: int, w: int
) -> tuple[tuple[float, float, float, float] | None, tuple[int, int, int, int]]:
    """Intersect a window with the VRT; return it and the output rows/cols (of h x w) it fills."""
    c, r, ww, wh = win
    c0, r0 = max(c, 0.0), max(r, 0.0)
    c1, r1 = min(c + ww, float(width)), min(r + wh, float(height))
    if c1 <= c0 or r1 <= r0:
        return None, (0, 0, 0, 0)
    sx, sy = w / ww, h / wh
    dst = (round((r0 - r) * sy), round((r1 - r) * sy), round((c0 - c) * sx), round((c1 - c) * sx))
    if dst[1] <= dst[0] or dst[3] <= dst[2]:
        return None, (0, 0, 0, 0)
    return (c0, r0, c1 - c0, r1 - r0), dst
