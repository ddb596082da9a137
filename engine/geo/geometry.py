"""Geometry as plain data (WKT, WKB, GeoJSON in; WKB out) through GDAL's OGR, and polygon masks.

The engine never holds a geometry object across its API: callers pass WKT or GeoJSON text, WKB
bytes (``QgsGeometry.asWkb()``), or any object with ``__geo_interface__``, and get WKB back.
Inside, OGR parses, validates, transforms and unites them (the GDAL and GEOS that QGIS itself
loads: docs/QGIS_LIBRARIES.md). :func:`cells_inside` answers "which tile cells have their centre
inside this polygon" exactly, with a vectorised even-odd scanline over the cell centres: its cost
grows with the polygon's outline (edges x rows it spans) and the cells of its bounding box, never
with a per-point GEOS call.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from . import crs as C
from .gdal_errors import gdal_errors, osgeo

if TYPE_CHECKING:
    from ..grid import TileGrid

GeometryLike = Any
"""WKT or GeoJSON ``str``, WKB ``bytes``/``bytearray``/``memoryview``, or an object with
``__geo_interface__`` (a GeoJSON-like mapping)."""

_POLYGONAL = ("Polygon", "MultiPolygon")
# QGIS writes "PolygonZ (...)", OGR reads only the ISO spelling "Polygon Z (...)"
_WKT_DIMS = re.compile(
    r"\b(Point|LineString|Polygon|MultiPoint|MultiLineString|MultiPolygon|GeometryCollection|"
    r"CircularString|CompoundCurve|CurvePolygon|MultiCurve|MultiSurface|Triangle|Tin|"
    r"PolyhedralSurface)(ZM|Z|M)\b",
    re.IGNORECASE,
)
_EMPTY = np.empty(0, dtype=np.intp)


def _ogr_from_text(text: str) -> Any:
    ogr = osgeo()[1]
    t = text.strip()
    if not t:
        return None
    if t.startswith("{"):
        try:
            doc = json.loads(t)
        except (ValueError, RecursionError):
            return None
        if isinstance(doc, dict) and doc.get("type") == "Feature":
            doc = doc.get("geometry") or {}
        if isinstance(doc, dict) and "coordinates" in doc and not doc["coordinates"]:
            return ogr.Geometry(getattr(ogr, f"wkb{doc.get('type')}", ogr.wkbPolygon))
        return ogr.CreateGeometryFromJson(json.dumps(doc))
    return ogr.CreateGeometryFromWkt(_WKT_DIMS.sub(r"\1 \2", t))


def _ogr(geom: GeometryLike, what: str) -> Any:
    """An OGR geometry of ``geom`` (a new object), 2-D and linear; InputError when unreadable."""
    ogr = osgeo()[1]
    with gdal_errors(f"reading {what}", raise_on_failure=False) as errs:
        if isinstance(geom, ogr.Geometry):
            g = geom.Clone()
        elif isinstance(geom, (bytes, bytearray, memoryview)):
            g = ogr.CreateGeometryFromWkb(bytes(geom)) if len(geom) else None
        elif isinstance(geom, str):
            g = _ogr_from_text(geom)
        elif hasattr(geom, "__geo_interface__"):
            g = _ogr_from_text(json.dumps(geom.__geo_interface__, default=list))
        else:
            raise InputError(f"{what} must be WKT, WKB or GeoJSON, got a {type(geom).__name__}")
    if g is None:
        why = errs[-1][2].strip() if errs else "not WKT, WKB or GeoJSON"
        raise InputError(f"{what} is not a readable geometry ({why})")
    if g.HasCurveGeometry():
        g = g.GetLinearGeometry()
    g.FlattenTo2D()
    g.CloseRings()
    return g


def _type_name(g: Any) -> str:
    ogr = osgeo()[1]
    return ogr.GeometryTypeToName(ogr.GT_Flatten(g.GetGeometryType())).replace(" ", "")


def _wkb(g: Any) -> bytes:
    ogr = osgeo()[1]
    return bytes(g.ExportToIsoWkb(ogr.wkbNDR))


def to_wkb(geom: GeometryLike, what: str = "the geometry") -> bytes:
    """``geom`` as 2-D little-endian ISO WKB."""
    return _wkb(_ogr(geom, what))


def to_wkt(geom: GeometryLike, what: str = "the geometry") -> str:
    """``geom`` as 2-D WKT."""
    return str(_ogr(geom, what).ExportToIsoWkt())


def bounds(geom: GeometryLike) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of ``geom``."""
    minx, maxx, miny, maxy = _ogr(geom, "the geometry").GetEnvelope()
    return float(minx), float(miny), float(maxx), float(maxy)


def coordinates(geom: GeometryLike) -> np.ndarray:
    """Every vertex of ``geom`` as float64 ``[n, 2]`` (points, lines and rings alike)."""
    g = _ogr(geom, "the geometry")
    out: list[tuple[float, float]] = []
    stack = [g]
    while stack:
        h = stack.pop()
        if h.GetGeometryCount():
            stack.extend(h.GetGeometryRef(i) for i in reversed(range(h.GetGeometryCount())))
        elif h.GetPointCount():
            out.extend(h.GetPoints())
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def _polygonal_parts(g: Any) -> Any:
    """The polygons of ``g`` (a GeometryCollection after make-valid, say) as one geometry."""
    ogr = osgeo()[1]
    if _type_name(g) in _POLYGONAL:
        return g
    out = ogr.Geometry(ogr.wkbMultiPolygon)
    for i in range(g.GetGeometryCount()):
        part = g.GetGeometryRef(i)
        name = _type_name(part)
        if name == "Polygon":
            out.AddGeometry(part)
        elif name in ("MultiPolygon", "GeometryCollection"):
            sub = _polygonal_parts(part)
            for j in range(sub.GetGeometryCount()):
                out.AddGeometry(sub.GetGeometryRef(j))
    return out


def _make_valid(g: Any, what: str) -> Any:
    with gdal_errors(f"repairing {what}", raise_on_failure=False):
        if g.IsValid():
            return g
        fixed = g.MakeValid() if hasattr(g, "MakeValid") else None
        if fixed is None:  # GDAL built without GEOS >= 3.8: the classic zero buffer
            fixed = g.Buffer(0)
    if fixed is None:
        raise InputError(f"{what} is not a valid polygon and could not be repaired")
    return _polygonal_parts(fixed)


def _polygon(geom: GeometryLike, what: str) -> Any:
    """A valid, non-empty OGR (multi)polygon with finite coordinates; InputError otherwise."""
    g = _ogr(geom, what)
    name = _type_name(g)
    if name not in _POLYGONAL or g.IsEmpty():
        shown = "an empty geometry" if g.IsEmpty() else f"a {name}"
        raise InputError(f"{what} must be a non-empty polygon, got {shown}")
    if not np.isfinite(np.asarray(g.GetEnvelope(), dtype=np.float64)).all() or not all(
        np.isfinite(r).all() for r in _rings(_wkb(g))
    ):
        raise InputError(f"{what} has non-finite (NaN or infinite) coordinates")
    g = _make_valid(g, what)
    if g.IsEmpty():
        raise InputError(f"{what} has no area (all its rings collapse); draw a real polygon")
    return g


def polygon_wkb(geom: GeometryLike, what: str = "a region") -> bytes:
    """``geom`` checked as a non-empty polygon, made valid, as WKB."""
    return _wkb(_polygon(geom, what))


def make_valid(geom: GeometryLike, what: str = "the polygon") -> bytes:
    """A valid version of the (multi)polygon ``geom`` (its polygonal parts only), as WKB."""
    return polygon_wkb(geom, what)


def _transform(g: Any, src: str, dst: str, what: str) -> Any:
    if C.same_crs(src, dst):
        return g
    ct = C.transformation(src, dst)
    with gdal_errors(f"transforming {what}", raise_on_failure=False):
        err = g.Transform(ct)
    if err != 0 or not np.isfinite(np.asarray(g.GetEnvelope(), dtype=np.float64)).all():
        raise InputError(f"{what} cannot be transformed from {src[:60]} to {dst[:60]}")
    return g


def transform(geom: GeometryLike, src: str, dst: str, what: str = "the geometry") -> bytes:
    """``geom`` with every vertex transformed from CRS ``src`` to ``dst`` (x = east/lon), as WKB."""
    return _wkb(_transform(_ogr(geom, what), src, dst, what))


def union(geoms: Iterable[GeometryLike], what: str = "the polygons") -> bytes:
    """The union of polygons (each checked and made valid) as one (multi)polygon WKB."""
    ogr = osgeo()[1]
    parts = [_polygon(g, what) for g in geoms]
    if not parts:
        raise InputError(f"{what}: there is no polygon to unite")
    if len(parts) == 1:
        return _wkb(parts[0])
    multi = ogr.Geometry(ogr.wkbMultiPolygon)
    for p in parts:
        if _type_name(p) == "Polygon":
            multi.AddGeometry(p)
        else:
            for i in range(p.GetGeometryCount()):
                multi.AddGeometry(p.GetGeometryRef(i))
    with gdal_errors(f"uniting {what}"):
        out = multi.UnionCascaded()
    if out is None:
        raise InputError(f"{what} could not be united")
    return _wkb(_polygonal_parts(out))


def point_wkb(x: float, y: float) -> bytes:
    """A 2-D point as WKB."""
    return struct.pack("<BIdd", 1, 1, float(x), float(y))


def box_wkb(minx: float, miny: float, maxx: float, maxy: float) -> bytes:
    """An axis-aligned rectangle as a WKB polygon (counter-clockwise, starting at (maxx, miny))."""
    ring = (maxx, miny, maxx, maxy, minx, maxy, minx, miny, maxx, miny)
    return struct.pack("<BIII10d", 1, 3, 1, 5, *(float(v) for v in ring))


# -- reading WKB we wrote ourselves (2-D, little-endian, ISO) ---------------------------------
def _rings(wkb: bytes) -> list[np.ndarray]:
    """Every ring (``[n, 2]`` float64) of a 2-D little-endian WKB Polygon or MultiPolygon."""
    out: list[np.ndarray] = []

    def polygon(off: int) -> int:
        (n_rings,) = struct.unpack_from("<I", wkb, off)
        off += 4
        for _ in range(n_rings):
            (n,) = struct.unpack_from("<I", wkb, off)
            out.append(np.frombuffer(wkb, "<f8", 2 * n, off + 4).reshape(n, 2))
            off += 4 + 16 * n
        return off

    kind = struct.unpack_from("<I", wkb, 1)[0]
    if kind == 3:
        polygon(5)
    elif kind == 6:
        (n_parts,) = struct.unpack_from("<I", wkb, 5)
        off = 9
        for _ in range(n_parts):
            off = polygon(off + 5)
    return out


# -- cell centres inside a polygon ------------------------------------------------------------
def cells_inside(
    grid: TileGrid, geom: GeometryLike, crs: str | None = None, what: str = "a region"
) -> tuple[np.ndarray, np.ndarray]:
    """Local ``(rows, cols)`` (row-major) of the cells of ``grid`` whose centre lies inside.

    Args:
        grid: The tile grid.
        geom: A (multi)polygon; invalid ones are repaired first.
        crs: CRS of ``geom`` (default: the grid's); its vertices are transformed to the grid's.
        what: How an error names the polygon.

    A centre on the polygon's boundary is outside (as GEOS's ``contains``).
    """
    g = _polygon(geom, what)
    if crs and not C.same_crs(crs, grid.crs):
        g = _make_valid(_transform(g, crs, grid.crs, what), what)
    minx, maxx, miny, maxy = g.GetEnvelope()
    gx0, gy0, gx1, gy1 = grid.bounds
    if maxx < gx0 or minx > gx1 or maxy < gy0 or miny > gy1 or grid.n_tiles == 0:
        return _EMPTY, _EMPTY
    # only the rows/cols under the polygon's bounding box are tested
    s = grid.cell_size
    c0, c1 = (int(np.clip(np.floor((v - gx0) / s), 0, grid.cols - 1)) for v in (minx, maxx))
    r0, r1 = (int(np.clip(np.floor((gy1 - v) / s), 0, grid.rows - 1)) for v in (maxy, miny))
    xc = gx0 + (np.arange(c0, c1 + 1) + 0.5) * s
    yc = gy1 - (np.arange(r0, r1 + 1) + 0.5) * s
    inside = _scanline(_rings(_wkb(g)), xc, yc)
    rr, cc = np.nonzero(inside)
    return rr + r0, cc + c0


def _edges(rings: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    seg = [np.concatenate([r[:-1], r[1:]], axis=1) for r in rings if len(r) >= 2]
    e = np.concatenate(seg) if seg else np.empty((0, 4))
    return e[:, 0], e[:, 1], e[:, 2], e[:, 3]


def _scanline(rings: Sequence[np.ndarray], xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """``bool [len(yc), len(xc)]``: True where (xc, yc) lies strictly inside (even-odd rule).

    ``xc`` ascends, ``yc`` descends (map rows). Each edge crosses the scanlines with
    ``ylo <= y < yhi`` (half-open, so a vertex on a scanline counts once); the sorted crossings
    of a row pair up into inside intervals, filled with a difference array.
    """
    x0, y0, x1, y1 = _edges(rings)
    n = yc.size
    inside = np.zeros((n, xc.size + 1), dtype=np.int32)
    y_asc = yc[::-1]
    slanted = y0 != y1
    ex0, ey0, ex1, ey1 = x0[slanted], y0[slanted], x1[slanted], y1[slanted]
    lo = np.searchsorted(y_asc, np.minimum(ey0, ey1), side="left")
    hi = np.searchsorted(y_asc, np.maximum(ey0, ey1), side="left")
    counts = hi - lo
    if counts.sum():
        edge = np.repeat(np.arange(counts.size), counts)
        start = np.repeat(np.cumsum(counts) - counts, counts)
        k = np.arange(edge.size) - start + lo[edge]
        y = y_asc[k]
        x = ex0[edge] + (y - ey0[edge]) * (ex1[edge] - ex0[edge]) / (ey1[edge] - ey0[edge])
        row = n - 1 - k
        order = np.lexsort((x, row))
        xa, xb = x[order][0::2], x[order][1::2]  # every row holds an even number of crossings
        rows = row[order][0::2]
        cs = np.searchsorted(xc, xa, side="right")  # first centre > xa
        ce = np.searchsorted(xc, xb, side="left")  # first centre >= xb
        keep = ce > cs
        np.add.at(inside, (rows[keep], cs[keep]), 1)
        np.add.at(inside, (rows[keep], ce[keep]), -1)
    mask = np.cumsum(inside, axis=1)[:, : xc.size] > 0
    _drop_boundary(mask, (x0[~slanted], x1[~slanted], y0[~slanted]), rings, xc, y_asc)
    return mask


def _drop_boundary(
    mask: np.ndarray, flat: tuple[np.ndarray, ...], rings: Sequence[np.ndarray], xc, y_asc
) -> None:
    """Centres on a horizontal edge or on a vertex lie on the boundary: not inside.

    (Centres on a slanted edge are already out: an interval excludes its crossing points.)
    """
    n = y_asc.size

    def row_of(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.searchsorted(y_asc, y, side="left")
        on = (k < n) & (y_asc[np.minimum(k, n - 1)] == y)
        return n - 1 - k[on], on

    x0, x1, y = flat
    rows, on = row_of(y)
    for r, a, b in zip(rows, np.minimum(x0, x1)[on], np.maximum(x0, x1)[on], strict=True):
        mask[r, (xc >= a) & (xc <= b)] = False
    pts = np.concatenate(rings) if rings else np.empty((0, 2))
    rows, on = row_of(pts[:, 1])
    col = np.searchsorted(xc, pts[on, 0], side="left")
    hit = (col < xc.size) & (xc[np.minimum(col, xc.size - 1)] == pts[on, 0])
    mask[rows[hit], col[hit]] = False
