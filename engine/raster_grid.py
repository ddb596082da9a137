"""Choosing the tile grid for a raster: its grid CRS, its ground sample distance, its tiles.

The grid CRS is the raster's own when it is a true-scale metric CRS, else the UTM zone of its
centre; the GSD is the encoder's or, when it has none, the raster's own pixel size in that CRS.
Works on any :class:`~.raster_io.RasterReader` (a file, a mosaic, a QGIS layer).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .contract import Preprocess
from .errors import RasterInputError
from .grid import DEFAULT_MAX_TILES, Bounds, TileGrid

if TYPE_CHECKING:  # raster_io re-exports this module's names: a runtime import would be a cycle
    from .raster_io import RasterReader


def choose_grid_crs(reader: RasterReader) -> str:
    """The raster's CRS when it is projected in metres, else the UTM zone of its centre."""
    from pyproj import CRS, Transformer

    crs = CRS.from_wkt(reader.crs)
    x0, y0, x1, y1 = reader.bounds
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise RasterInputError("cannot locate the raster's centre on the globe to pick a UTM zone")
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        # A "metre" CRS is only a true-scale grid when its scale factor is ~1 here: Web Mercator
        # (XYZ/WMS layers) is 1/cos(lat) off, so such rasters are tiled in their UTM zone instead.
        if _true_scale(crs, lon, lat):
            code = crs.to_epsg(min_confidence=100)
            return f"EPSG:{code}" if code else reader.crs
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _true_scale(crs: Any, lon: float, lat: float, tolerance: float = 0.01) -> bool:
    """Whether ``crs`` (a pyproj CRS) scales distances by 1 within ``tolerance`` at lon/lat."""
    from pyproj import Proj

    try:
        f = Proj(crs).get_factors(lon, lat)
    except Exception:  # noqa: BLE001 - pyproj raises several types for odd CRSs; assume true scale
        return True
    scale = max(abs(f.meridional_scale - 1.0), abs(f.parallel_scale - 1.0))
    return not math.isfinite(scale) or scale <= tolerance


def raster_gsd_m(reader: RasterReader, grid_crs: str) -> float:
    """The raster's own pixel size expressed in the grid CRS (metres), rounded to 4 digits."""
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = reader.bounds
    gx0, gy0, gx1, gy1 = transform_bounds(reader.crs, grid_crs, x0, y0, x1, y1, densify_pts=21)
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
    from rasterio.warp import transform_bounds

    crs = choose_grid_crs(reader)
    gsd = preprocess.gsd_m if preprocess.gsd_m > 0 else raster_gsd_m(reader, crs)
    full = transform_bounds(reader.crs, crs, *reader.bounds, densify_pts=21)
    box = full
    if extent is not None:
        e = transform_bounds(extent_crs or reader.crs, crs, *extent, densify_pts=21)
        box = (max(e[0], full[0]), max(e[1], full[1]), min(e[2], full[2]), min(e[3], full[3]))
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RasterInputError(
                f"the extent {tuple(extent)} does not overlap the raster (raster bounds "
                f"{tuple(round(v, 6) for v in reader.bounds)} in its own CRS)"
            )
    return TileGrid.for_extent(crs, gsd, preprocess.size, stride_px, box, max_tiles=max_tiles)
