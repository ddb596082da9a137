"""Opening a raster file with GDAL and checking that the engine can place, scale and read it.

One clear error line per problem (no CRS, no pixels, an unsupported data type, a degenerate
geotransform, an extent past the antimeridian), and the file's geometry in the terms the
readers use: the affine ``(a, b, c, d, e, f)`` coefficients, bounds and pixel size.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RasterInputError
from ..geo import crs as crs_mod
from ..geo.gdal_errors import gdal_errors, osgeo
from ..grid import Bounds

# GDAL data type names -> numpy dtypes the engine reads; complex types are refused
_DTYPES = {
    "Byte": "uint8",
    "Int8": "int8",
    "UInt16": "uint16",
    "Int16": "int16",
    "UInt32": "uint32",
    "Int32": "int32",
    "UInt64": "uint64",
    "Int64": "int64",
    "Float32": "float32",
    "Float64": "float64",
}
_COMPLEX = {
    "CInt16": "complex_int16",
    "CInt32": "complex_int32",
    "CFloat32": "complex64",
    "CFloat64": "complex128",
}


def is_virtual(path: str | Path) -> bool:
    """True for a path in one of GDAL's virtual file systems (``/vsizip/``, ``/vsicurl/``, ...)."""
    return str(path).startswith("/vsi")


def gdal_name(path: str | Path) -> str:
    """The name GDAL opens ``path`` by, once it is known to exist.

    A ``/vsi...`` path is kept exactly as given (``pathlib`` would collapse the ``//`` of
    ``/vsizip//abs/file.zip``) and checked with GDAL's own ``VSIStatL``, since the operating
    system does not see inside an archive or behind a URL. A local file must exist and have a
    name GDAL can take: GDAL's Python API and the warper's XML need valid UTF-8.

    Raises:
        RasterInputError: the file does not exist, or its name is not valid UTF-8.
    """
    text = str(path)
    if is_virtual(text):
        if osgeo()[0].VSIStatL(text) is None:
            raise RasterInputError(
                f"GDAL finds no file at {text}; check the path inside the archive or URL (an "
                "absolute archive path needs two slashes: /vsizip//data/scene.zip/scene.tif)"
            )
        return text
    if not Path(text).is_file():
        raise RasterInputError(f"raster file {text} does not exist")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(Path(text).name)
        raise RasterInputError(
            f"the raster file name {raw!r} is not valid UTF-8, which GDAL cannot open by name; "
            "rename the file (letters, digits, '-' and '_' are safe) and try again"
        ) from None
    return text


def open_raster(path: str | Path) -> Any:
    """``path`` (see :func:`gdal_name`) opened read-only as a ``gdal.Dataset``; RasterInputError
    when GDAL cannot."""
    gdal = osgeo()[0]
    name = Path(str(path)).name
    with gdal_errors(f"opening {name}", raise_on_failure=False) as errors:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    if ds is None:
        why = (errors.failures() or ["not a raster format GDAL knows"])[-1].strip()
        raise RasterInputError(
            f"{name} is not a raster GDAL can read (corrupt or another format): {why}"
        )
    return ds


def affine(ds: Any) -> tuple[float, float, float, float, float, float]:
    """The dataset's geotransform as affine ``(a, b, c, d, e, f)``: x = a*col + b*row + c."""
    c, a, b, f, d, e = ds.GetGeoTransform()
    return a, b, c, d, e, f


def bounds_of(t: tuple[float, ...], width: int, height: int) -> Bounds:
    """``(minx, miny, maxx, maxy)`` of a ``width`` x ``height`` grid with affine ``t``.

    North-up grids give ``(c, f + e*height, c + a*width, f)`` as GDAL's readers always have
    (a south-up grid so gets an empty extent); rotated ones the box around their 4 corners.
    """
    a, b, c, d, e, f = t
    if b == 0 and d == 0:
        return c, f + e * height, c + a * width, f
    xs = [c + a * i + b * j for i, j in ((0, 0), (0, height), (width, height), (width, 0))]
    ys = [f + d * i + e * j for i, j in ((0, 0), (0, height), (width, height), (width, 0))]
    return min(xs), min(ys), max(xs), max(ys)


def pixel_size(t: tuple[float, ...]) -> tuple[float, float]:
    """Pixel size ``(x, y)`` (positive) of affine ``t``, rotation included."""
    a, b, _, d, e, _ = t
    if b == 0 and d == 0:
        return abs(a), abs(e)
    return math.hypot(a, d), math.hypot(b, e)


def band_dtype(ds: Any, band: int = 1) -> str:
    """The numpy name of a band's data type (``"uint8"``, ``"complex64"``, ...)."""
    gdal = osgeo()[0]
    name = gdal.GetDataTypeName(ds.GetRasterBand(band).DataType)
    return _DTYPES.get(name) or _COMPLEX.get(name) or name.lower()


def check_source(ds: Any, name: str) -> None:
    """Refuse a raster the reader cannot place or scale: no CRS, no pixels, odd types, extent."""
    if ds.GetGCPCount() > 0 and ds.GetGeoTransform(can_return_null=True) is None:
        # placed by ground control points only: a CRS alone (gdal_edit -a_srs) does not help,
        # the pixels must be warped onto a grid first
        raise RasterInputError(
            f"{name} is placed by {ds.GetGCPCount()} ground control points, not by a "
            "geotransform; warp it onto a grid first (e.g. gdalwarp -t_srs EPSG:xxxx "
            f"{name} warped.tif) and embed the warped file"
        )
    if ds.GetSpatialRef() is None:
        raise RasterInputError(
            f"{name} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx) and retry"
        )
    n, w, h = ds.RasterCount, ds.RasterXSize, ds.RasterYSize
    if n < 1 or w < 1 or h < 1:
        raise RasterInputError(f"{name} has no pixels ({w}x{h}x{n})")
    types = [band_dtype(ds, b) for b in range(1, n + 1)]
    if any(t not in _DTYPES.values() for t in types) or np.dtype(types[0]).kind not in "uif":
        raise RasterInputError(
            f"{name} has unsupported data type {types[0]}; convert it to an integer or "
            "float type (e.g. gdal_translate -ot Float32)"
        )
    _check_extent(ds, name)


def _check_extent(ds: Any, name: str) -> None:
    t = affine(ds)
    x0, y0, x1, y1 = box = bounds_of(t, ds.RasterXSize, ds.RasterYSize)
    if t[0] * t[4] - t[1] * t[3] == 0 or not all(map(math.isfinite, box)):
        raise RasterInputError(f"{name} has a degenerate geotransform {t}")
    if not (x1 > x0 and y1 > y0):
        raise RasterInputError(f"{name} has an empty extent {box}")
    if crs_mod.is_geographic(ds.GetProjection()) and (x0 < -180.0 - 1e-9 or x1 > 180.0 + 1e-9):
        # GDAL's warper wraps longitudes into [-180, 180], so pixels past the antimeridian
        # would silently read as no data
        raise RasterInputError(
            f"{name} extends past the antimeridian (longitudes {x0:g}..{x1:g}); reproject it "
            "to a projected CRS (e.g. its UTM zone with gdalwarp -t_srs) or split it at 180°"
        )


def file_ident(path: str | Path, ds: Any) -> dict[str, Any]:
    """What identifies the file's pixels: path, size, mtime, CRS, transform and shape."""
    if is_virtual(path):  # inside an archive or behind a URL: GDAL's stat, in seconds
        st = osgeo()[0].VSIStatL(str(path))
        size, mtime_ns, name = st.size, int(st.mtime) * 10**9, str(path)
    else:
        st = os.stat(path)
        size, mtime_ns, name = st.st_size, st.st_mtime_ns, str(Path(path).resolve())
    return {
        "path": name,
        "size": size,
        "mtime_ns": mtime_ns,
        "crs": ds.GetProjection(),
        "transform": list(affine(ds)),
        "shape": [ds.RasterCount, ds.RasterYSize, ds.RasterXSize],
    }
