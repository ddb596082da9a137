"""Coordinate reference systems through GDAL's OSR: parse, compare, transform points and boxes.

Every CRS the engine meets is a string (``"EPSG:32614"``, WKT, a PROJ string): this module turns
it into an ``osr.SpatialReference`` with a clear error when it is invalid, and transforms
coordinates with x = easting / longitude and y = northing / latitude whatever the CRS's
official axis order (GDAL's "traditional GIS order"). OSR objects are not safe to share between
threads, so parsed CRSs and transformations are cached per thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .gdal_errors import gdal_errors, osgeo

WGS84 = "EPSG:4326"
_local = threading.local()
_WGS84_A = 6378137.0  # WGS84 semi-major axis (m)
_WGS84_E2 = 6.69437999014e-3  # WGS84 first eccentricity squared


def _cache(name: str) -> dict:
    c = getattr(_local, name, None)
    if c is None:
        c = {}
        setattr(_local, name, c)
    return c


def srs(text: str) -> Any:
    """The ``osr.SpatialReference`` of ``text`` (cached per thread); InputError when invalid."""
    cache = _cache("srs")
    if text in cache:
        return cache[text]
    osr = osgeo()[2]
    if not isinstance(text, str) or not text.strip():
        raise InputError("a CRS is missing: give one such as EPSG:32633 or a WKT string")
    ref = osr.SpatialReference()
    with gdal_errors("reading a CRS", raise_on_failure=False):
        code = ref.SetFromUserInput(text.strip())
    if code != 0 or not ref.ExportToWkt():
        shown = text.strip().replace("\n", " ")
        raise InputError(
            f"'{shown[:80]}' is not a CRS GDAL/PROJ knows; give an EPSG code (e.g. EPSG:32633) "
            "or a valid WKT"
        )
    ref.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    cache[text] = ref
    return ref


def check_crs(text: str) -> str:
    """``text`` itself when it names a valid CRS; InputError otherwise."""
    srs(text)
    return text


def to_wkt(text: str) -> str:
    """The WKT (WKT1 as GDAL writes it to GeoTIFFs and GeoPackages) of ``text``."""
    return srs(text).ExportToWkt()


def same_crs(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` describe the same CRS (axis order and names ignored)."""
    if a == b:
        return True
    key = (a, b)
    cache = _cache("same")
    if key not in cache:
        opts = ["IGNORE_DATA_AXIS_TO_SRS_AXIS_MAPPING=YES", "CRITERION=EQUIVALENT"]
        cache[key] = bool(srs(a).IsSame(srs(b), opts))
    return cache[key]


def is_geographic(text: str) -> bool:
    """True for a longitude/latitude CRS."""
    return bool(srs(text).IsGeographic())


def is_projected(text: str) -> bool:
    """True for a projected CRS."""
    return bool(srs(text).IsProjected())


def linear_unit_m(text: str) -> float:
    """Metres per unit of a projected CRS's axes (1.0 for metres, 0.3048 for feet)."""
    return float(srs(text).GetLinearUnits())


def epsg_code(text: str) -> int | None:
    """The EPSG code of ``text`` when it is exactly an EPSG CRS, else None."""
    ref = srs(text).Clone()
    with gdal_errors("identifying a CRS", raise_on_failure=False):
        if ref.GetAuthorityName(None) != "EPSG":
            ref.AutoIdentifyEPSG()
    if ref.GetAuthorityName(None) == "EPSG" and ref.GetAuthorityCode(None):
        code = int(ref.GetAuthorityCode(None))
        # accept the code only if it round-trips to the same CRS
        return code if same_crs(text, f"EPSG:{code}") else None
    return None


def transformation(src: str, dst: str) -> Any:
    """The ``osr.CoordinateTransformation`` from ``src`` to ``dst`` (x = east/lon), cached per
    thread; InputError when PROJ has none."""
    cache = _cache("ct")
    key = (src, dst)
    if key not in cache:
        osr = osgeo()[2]
        with gdal_errors(f"transforming from {src[:40]} to {dst[:40]}"):
            ct = osr.CoordinateTransformation(srs(src), srs(dst))
        if ct is None:
            raise InputError(f"no transformation from {src[:60]} to {dst[:60]}")
        cache[key] = ct
    return cache[key]


def transform_xy(xs: Any, ys: Any, src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    """``(xs, ys)`` from ``src`` to ``dst`` (float64 arrays of the input shape); NaN where PROJ
    cannot transform a point."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    x, y = np.broadcast_arrays(x, y)
    shape = x.shape
    if same_crs(src, dst) or x.size == 0:
        return x.astype(np.float64).reshape(shape), y.astype(np.float64).reshape(shape)
    pts = np.column_stack([x.reshape(-1), y.reshape(-1)])
    ok = np.isfinite(pts).all(axis=1)
    out = np.full((pts.shape[0], 2), np.nan)
    if ok.any():
        ct = transformation(src, dst)
        with gdal_errors("transforming coordinates", raise_on_failure=False):
            res = np.asarray(ct.TransformPoints(pts[ok]), dtype=np.float64)
        res = res[:, :2]
        # PROJ marks points it cannot transform with HUGE_VAL (inf)
        res[~np.isfinite(res).all(axis=1)] = np.nan
        out[ok] = res
    return out[:, 0].reshape(shape), out[:, 1].reshape(shape)


def transform_point(x: float, y: float, src: str, dst: str) -> tuple[float, float]:
    """One point from ``src`` to ``dst``; InputError when it has no position there."""
    tx, ty = transform_xy([x], [y], src, dst)
    if not (np.isfinite(tx[0]) and np.isfinite(ty[0])):
        raise InputError(f"point ({x}, {y}) cannot be transformed from {src[:60]} to {dst[:60]}")
    return float(tx[0]), float(ty[0])


def transform_bounds(
    src: str, dst: str, bounds: Sequence[float], densify_pts: int = 21
) -> tuple[float, float, float, float]:
    """The box in ``dst`` that holds ``bounds`` (a box in ``src``), edges densified.

    Points along each edge (``densify_pts`` between corners) are transformed, so curved edges
    are covered; a box that crosses the antimeridian in a geographic ``dst`` comes back with
    ``minx > maxx`` as GDAL returns it.
    """
    x0, y0, x1, y1 = (float(v) for v in bounds)
    if same_crs(src, dst):
        return x0, y0, x1, y1
    ct = transformation(src, dst)
    with gdal_errors("transforming a bounding box", raise_on_failure=False):
        try:
            out = ct.TransformBounds(x0, y0, x1, y1, int(densify_pts))
        except (RuntimeError, TypeError):
            out = None
    if out is None or not all(math.isfinite(v) for v in out):
        raise InputError(
            f"the box {tuple(round(v, 6) for v in bounds)} cannot be transformed from "
            f"{src[:60]} to {dst[:60]}"
        )
    return tuple(float(v) for v in out)  # type: ignore[return-value]


def _radii(lat: float) -> tuple[float, float]:
    """Meridional and prime-vertical radii of curvature of WGS84 at ``lat`` degrees (m)."""
    s = math.sin(math.radians(lat))
    w = math.sqrt(1.0 - _WGS84_E2 * s * s)
    return _WGS84_A * (1.0 - _WGS84_E2) / w**3, _WGS84_A / w


def ground_m_per_degree_lon(lat: float) -> float:
    """Metres along the parallel at ``lat`` per degree of longitude (WGS84)."""
    return _radii(lat)[1] * math.cos(math.radians(lat)) * math.pi / 180.0


def scale_error(text: str, lon: float, lat: float) -> float:
    """How far a projected CRS's scale is from 1 at (lon, lat): max |k - 1| along both axes.

    Measured numerically (a step of 1e-4 degrees east and north, against the WGS84 ellipsoid),
    so it works for any CRS PROJ can transform to. NaN when the point has no position there.
    """
    d = 1e-4
    lats = np.array([lat, lat, min(lat + d, 90.0)])
    lons = np.array([lon, lon + d, lon])
    xs, ys = transform_xy(lons, lats, WGS84, text)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return math.nan
    m_rad, n_rad = _radii(lat)
    unit = linear_unit_m(text) if is_projected(text) else 1.0
    east = math.hypot(xs[1] - xs[0], ys[1] - ys[0]) * unit
    north = math.hypot(xs[2] - xs[0], ys[2] - ys[0]) * unit
    east_true = n_rad * math.cos(math.radians(lat)) * math.radians(d)
    north_true = m_rad * math.radians(lats[2] - lat)
    if east_true <= 0 or north_true <= 0:
        return math.nan
    return max(abs(east / east_true - 1.0), abs(north / north_true - 1.0))
