"""Reading a raster through GDAL's warper, onto the tile lattice in the grid CRS at the grid GSD.

The reference read path of :class:`~.gdal_reader.GdalReader` (and its only path for rasters in
another CRS or at another pixel size): a warped VRT whose pixel lattice is snapped to the tile
lattice, so every tile is an integer window of it, read the same way whatever extent it belongs
to. :mod:`.native` is the fast path that skips the warper.

The VRT is written as GDAL's own ``VRTWarpedDataset`` XML rather than made by ``gdal.Warp``:
gdalwarp drops a source alpha band from the output bands (and in GDAL < 3.7 can only take the
last band as alpha), adds options of its own (a CRS area of interest, a centre longitude), and
maps no-data per band; the XML states every warp option, so the warper runs with exactly the
settings below whatever the GDAL version.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import EngineError, RasterInputError
from ..geo import crs as crs_mod
from ..geo.gdal_errors import gdal_errors, osgeo
from ..grid import Bounds
from .source import affine, bounds_of

FILL = -3.0e38  # the VRT's nodata; NaN there makes GDAL's warper return NaN everywhere
_MAX_ERROR = 0.125  # approximate transformer's error bound in source pixels (gdalwarp's default)


class Resampling(NamedTuple):
    """A resampling method: its name, GDAL's warp-option name and its ``GRIORA_*`` value."""

    name: str  # e.g. "bilinear"
    warp: str  # the VRT's <ResampleAlg>, e.g. "Bilinear"
    griora: int  # GDALRIOResampleAlg for windowed reads at another size (GRIORA_*)


# GDAL's RasterIO (a tile read at another pixel size) knows nearest .. mode; the order statistics
# have no RasterIO counterpart, so such a tile is sampled nearest. No "rms": GDAL < 3.7 cannot
# read it back from a warped VRT.
_RESAMPLING = {
    r.name: r
    for r in (
        Resampling("nearest", "NearestNeighbour", 0),
        Resampling("bilinear", "Bilinear", 1),
        Resampling("cubic", "Cubic", 2),
        Resampling("cubic_spline", "CubicSpline", 3),
        Resampling("lanczos", "Lanczos", 4),
        Resampling("average", "Average", 5),
        Resampling("mode", "Mode", 6),
        Resampling("max", "Maximum", 0),
        Resampling("min", "Minimum", 0),
        Resampling("med", "Median", 0),
        Resampling("q1", "Quartile1", 0),
        Resampling("q3", "Quartile3", 0),
        Resampling("sum", "Sum", 0),
    )
}


def resampling(name: str) -> Resampling:
    """The :class:`Resampling` called ``name``; RasterInputError if GDAL's warper has none."""
    try:
        return _RESAMPLING[name]
    except (KeyError, TypeError):
        raise RasterInputError(
            f"unknown resampling '{name}'; use one of {', '.join(_RESAMPLING)}"
        ) from None


class ReadFailure(EngineError):
    """GDAL failed to read pixels (the reader turns it into a RasterInputError with the place)."""


class Source(NamedTuple):
    """What the warper needs to know about the file, read once when the reader opens it."""

    path: str
    wkt: str  # the file's CRS
    gt: tuple[float, ...]  # the file's GDAL geotransform
    bounds: Bounds  # in the file's CRS
    count: int  # bands
    nodata: float | None  # band 1's no-data value (the warper applies it to every band)


def source_of(path: str | Path, ds: Any) -> Source:
    """The :class:`Source` of ``path``, opened as the ``gdal.Dataset`` ``ds``."""
    t = affine(ds)
    return Source(
        str(path) if str(path).startswith("/vsi") else str(Path(path).resolve()),
        ds.GetProjection(),
        tuple(ds.GetGeoTransform()),
        bounds_of(t, ds.RasterXSize, ds.RasterYSize),
        ds.RasterCount,
        ds.GetRasterBand(1).GetNoDataValue(),
    )


def open_warped_vrt(
    src: Source,
    grid_crs: str,
    gsd: float,
    phase_xy: tuple[float, float],
    alpha: Sequence[int],
    nodata: float | None,
    method: Resampling,
) -> Any:
    """A warped VRT of ``src`` on the lattice ``x = px + k * gsd`` (likewise y).

    Args:
        src: the file.
        grid_crs: the grid CRS.
        gsd: the grid's pixel size in grid CRS units.
        phase_xy: ``(px, py)``, a lattice point in the grid CRS.
        alpha: 1-based alpha (mask) bands; the first one masks the warp.
        nodata: no-data value overriding the file's own, or None.
        method: the warp's resampling.

    Returns:
        The ``gdal.Dataset``: float32 bands, one per file band, no data = :data:`FILL`. The
        caller owns it (dropping it closes the file too).
    """
    box = crs_mod.transform_bounds(src.wkt, grid_crs, src.bounds, densify_pts=21)
    left, top, width, height = _snap(box, phase_xy, gsd)
    gt = (left, gsd, 0.0, top, 0.0, -gsd)
    xml = _vrt_xml(src, grid_crs, gt, width, height, alpha, nodata, method)
    gdal = osgeo()[0]
    with gdal_errors(f"opening a warped view of {src.path}", error=RasterInputError):
        ds = gdal.Open(xml)
    if ds is None:
        raise RasterInputError(f"GDAL could not open a warped view of {src.path}")
    return ds


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


def _num(v: float) -> str:
    """A float as text GDAL parses back to the same double (``repr`` round-trips)."""
    return repr(float(v))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _vrt_xml(
    src: Source,
    grid_crs: str,
    gt: tuple[float, ...],
    width: int,
    height: int,
    alpha: Sequence[int],
    nodata: float | None,
    method: Resampling,
) -> str:
    """GDAL's VRTWarpedDataset XML: every band warped 1:1 to Float32, no data = FILL.

    The warp options are the ones GDAL's warped-VRT API gets from a caller that warps every band
    into a float32 lattice: unified source no-data (a pixel is no data when every band is),
    destination initialised to no data, an approximate transformer within 1/8 pixel, blocks of
    512 x 128 pixels, and the first alpha band as the source's mask.
    """
    dst_wkt = crs_mod.to_wkt(grid_crs)
    root = ET.Element(
        "VRTDataset", rasterXSize=str(width), rasterYSize=str(height), subClass="VRTWarpedDataset"
    )
    _sub(root, "SRS", dst_wkt)
    _sub(root, "GeoTransform", ",".join(_num(v) for v in gt))
    for b in range(1, src.count + 1):
        band = _sub(
            root, "VRTRasterBand", dataType="Float32", band=str(b), subClass="VRTWarpedRasterBand"
        )
        _sub(band, "NoDataValue", _num(FILL))
    _sub(root, "BlockXSize", str(min(width, 512)))
    _sub(root, "BlockYSize", str(min(height, 128)))
    wo = _sub(root, "GDALWarpOptions")
    _sub(wo, "ResampleAlg", method.warp)
    _sub(wo, "WorkingDataType", "Float32")
    _sub(wo, "Option", "YES", name="UNIFIED_SRC_NODATA")
    _sub(wo, "Option", "NO_DATA", name="INIT_DEST")
    _sub(wo, "SourceDataset", src.path, relativeToVRT="0")
    _transformer(_sub(wo, "Transformer"), src, dst_wkt, gt)
    bands = _sub(wo, "BandList")
    src_nodata = src.nodata if nodata is None else nodata
    for b in range(1, src.count + 1):
        m = _sub(bands, "BandMapping", src=str(b), dst=str(b))
        if src_nodata is not None:
            _sub(m, "SrcNoDataReal", _num(src_nodata))
            _sub(m, "SrcNoDataImag", "0")
        _sub(m, "DstNoDataReal", _num(FILL))
        _sub(m, "DstNoDataImag", "0")
    if alpha:
        _sub(wo, "SrcAlphaBand", str(alpha[0]))
    return ET.tostring(root, encoding="unicode")


def _transformer(parent: ET.Element, src: Source, dst_wkt: str, gt: tuple[float, ...]) -> None:
    """Approximate (1/8 px) GenImgProj transformer from the file's pixels to the VRT's."""
    approx = _sub(parent, "ApproxTransformer")
    _sub(approx, "MaxError", _num(_MAX_ERROR))
    gen = _sub(_sub(approx, "BaseTransformer"), "GenImgProjTransformer")
    _sub(gen, "SrcGeoTransform", ",".join(_num(v) for v in src.gt))
    # same CRS (GDAL's default comparison): no reprojection step, as GDAL itself decides
    if not crs_mod.srs(src.wkt).IsSame(crs_mod.srs(dst_wkt)):
        rep = _sub(_sub(gen, "ReprojectTransformer"), "ReprojectionTransformer")
        _sub(rep, "SourceSRS", src.wkt)
        _sub(rep, "TargetSRS", dst_wkt)
    _sub(gen, "DstGeoTransform", ",".join(_num(v) for v in gt))


def read_pixels(
    ds: Any,
    window: tuple[float, float, float, float],
    out: np.ndarray,
    bands: Sequence[int],
    method: int = 0,
) -> np.ndarray:
    """Read ``bands`` of ``ds`` at ``window`` (col, row, width, height; may be fractional) into
    ``out`` ``[len(bands), h, w]`` (any dtype, any strides), resampled with GRIORA ``method``.

    Raises:
        ReadFailure: GDAL failed (a truncated or damaged file fails only when read).
    """
    c, r, w, h = window
    with gdal_errors("reading pixels", error=ReadFailure) as errors:
        res = ds.ReadAsArray(
            c, r, w, h, buf_obj=out, band_list=[int(b) for b in bands], resample_alg=method
        )
    if res is None:
        failed = errors.failures()
        raise ReadFailure(failed[-1].strip() if failed else "GDAL returned no pixels")
    return out


def read_warped(
    vrt: Any, bounds: Bounds, gsd: float, idx: list[int], h: int, w: int, method: Resampling
) -> np.ndarray:
    """Raw float32 values of ``bounds`` from ``vrt``, resampled to ``h`` x ``w``, NaN = no data.

    Raises:
        ReadFailure: the file cannot be read there (truncated or damaged).
    """
    out = np.full((len(idx), h, w), np.nan, dtype=np.float32)
    win, dst = _clip(
        _window(vrt.GetGeoTransform(), bounds, gsd), vrt.RasterXSize, vrt.RasterYSize, h, w
    )
    if win is not None:
        r0, r1, c0, c1 = dst
        part = read_pixels(vrt, win, out[:, r0:r1, c0:c1], idx, method.griora)
        part[part <= FILL] = np.nan
    return out


def _window(gt: Sequence[float], bounds: Bounds, gsd: float) -> tuple[float, float, float, float]:
    """(col_off, row_off, width, height) of ``bounds`` in VRT pixels, snapped when integral."""
    minx, miny, maxx, maxy = bounds
    vals = ((minx - gt[0]) / gsd, (gt[3] - maxy) / gsd, (maxx - minx) / gsd, (maxy - miny) / gsd)
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
