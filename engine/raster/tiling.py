"""Choosing the tile grid for a raster: its grid CRS, its ground sample distance, its tiles.

The grid CRS is the raster's own when it is a true-scale metric CRS, else the UTM zone of its
centre; the GSD is the encoder's or, when it has none, the raster's own pixel size in that CRS.
Works on any :class:`~.reader.RasterReader` (a file, a mosaic, a QGIS layer).
"""

from __future__ import annotations

import math

from ..errors import RasterInputError
from ..geo import crs as crs_mod
from ..geo.crs import WGS84
from ..grid import DEFAULT_MAX_TILES, Bounds, TileGrid
from ..model.contract import Preprocess
from .reader import RasterReader


def choose_grid_crs(reader: RasterReader) -> str:
    """The raster's CRS when it is projected in metres, else the UTM zone of its centre."""
    x0, y0, x1, y1 = reader.bounds
    lon, lat = crs_mod.transform_xy([(x0 + x1) / 2.0], [(y0 + y1) / 2.0], reader.crs, WGS84)
    lon, lat = float(lon[0]), float(lat[0])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise RasterInputError("cannot locate the raster's centre on the globe to pick a UTM zone")
    if crs_mod.is_projected(reader.crs) and crs_mod.linear_unit_m(reader.crs) == 1.0:
        # A "metre" CRS is only a true-scale grid when its scale factor is ~1 here: Web Mercator
        # (XYZ/WMS layers) is 1/cos(lat) off, so such rasters are tiled in their UTM zone instead.
        if _true_scale(reader.crs, lon, lat):
            code = crs_mod.epsg_code(reader.crs)
            return f"EPSG:{code}" if code else reader.crs
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _true_scale(crs: str, lon: float, lat: float, tolerance: float = 0.01) -> bool:
    """Whether ``crs`` scales distances by 1 within ``tolerance`` at lon/lat (unknown: True)."""
    scale = crs_mod.scale_error(crs, lon, lat)
    return not math.isfinite(scale) or scale <= tolerance


def raster_gsd_m(reader: RasterReader, grid_crs: str) -> float:
    """The raster's own pixel size expressed in the grid CRS (metres), rounded to 4 digits."""
    x0, y0, x1, y1 = reader.bounds
    gx0, gy0, gx1, gy1 = crs_mod.transform_bounds(reader.crs, grid_crs, reader.bounds, 21)
    nx, ny = (x1 - x0) / reader.res[0], (y1 - y0) / reader.res[1]
    gsd = min((gx1 - gx0) / nx, (gy1 - gy0) / ny)
    if not (gsd > 0 and math.isfinite(gsd)):
        raise RasterInputError(f"cannot derive a ground sample distance from the raster ({gsd})")
    return float(f"{gsd:.4g}")  # stable across readers that round bounds differently


def grid_for_raster(
    reader: RasterReader,
    preprocess: Preprocess,
    stride_px: int | None = None,
    extent: Bounds | None = None,
    extent_crs: str | None = None,
    max_tiles: int = DEFAULT_MAX_TILES,
) -> TileGrid:
    """The tile grid for embedding ``reader`` with an encoder of ``preprocess``.

    Args:
        reader: the raster.
        preprocess: the encoder's preprocessing (``size`` and ``gsd_m``; 0 = the raster's GSD).
        stride_px: step between tiles in pixels (default: ``size``, no overlap).
        extent: the area to embed (default: the whole raster); clipped to the raster.
        extent_crs: CRS of ``extent`` (default: the raster's CRS).
        max_tiles: refuse grids with more tiles than this.
    """
    crs = choose_grid_crs(reader)
    gsd = preprocess.gsd_m if preprocess.gsd_m > 0 else raster_gsd_m(reader, crs)
    full = crs_mod.transform_bounds(reader.crs, crs, reader.bounds, 21)
    box = full
    if extent is not None:
        e = crs_mod.transform_bounds(extent_crs or reader.crs, crs, extent, 21)
        box = (max(e[0], full[0]), max(e[1], full[1]), min(e[2], full[2]), min(e[3], full[3]))
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RasterInputError(
                f"the extent {tuple(extent)} does not overlap the raster (raster bounds "
                f"{tuple(round(v, 6) for v in reader.bounds)} in its own CRS)"
            )
    return TileGrid.for_extent(crs, gsd, preprocess.size, stride_px, box, max_tiles=max_tiles)
