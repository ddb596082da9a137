"""Reading rasters without GDAL's warper when they already lie on the tile grid's lattice.

When a file is in the grid CRS at the grid's pixel size, a tile is a plain window of the file,
possibly shifted by a constant sub-pixel offset. :func:`read_native` copies it (lattices
aligned) or redoes GDAL's bilinear / nearest arithmetic in numpy, including its no-data rules,
so the result equals the warper's (bitwise on every raster tested) at a fraction of its cost.
Used by :class:`~.gdal_reader.GdalReader`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..geo.gdal_errors import osgeo
from ..grid import Bounds
from .warped import read_pixels


class NativePlan(NamedTuple):
    """A lattice read straight from the file: see :meth:`GdalReader._native_plan`."""

    px: float  # a lattice point (px, py) in the grid CRS
    py: float
    ix: int  # source column / row left of / above that point's pixel centre ...
    iy: int
    fx: float  # ... and the fraction of a pixel past it (0: the lattices coincide)
    fy: float


def lattice_phase(bounds: Bounds, gsd: float) -> tuple[int, int]:
    """Where ``bounds`` sit on the ``gsd`` lattice, in millionths of a pixel."""
    return tuple(int(round((v / gsd - math.floor(v / gsd)) * 1e6)) % 1_000_000 for v in bounds[:2])


def split_pixel(a: float) -> tuple[int, float]:
    """``a`` as whole pixels and a fraction; fractions within 1e-6 px of a pixel snap to it."""
    i = math.floor(a)
    f = a - i
    if f < 1e-6:
        return i, 0.0
    if f > 1.0 - 1e-6:
        return i + 1, 0.0
    return i, f


def pixel_shape(bounds: Bounds, gsd: float) -> tuple[float, float]:
    """Height and width of ``bounds`` in pixels, snapped to whole pixels within 1e-6."""
    h, w = (bounds[3] - bounds[1]) / gsd, (bounds[2] - bounds[0]) / gsd
    return tuple(float(round(v)) if abs(v - round(v)) < 1e-6 else v for v in (h, w))


def native_source(
    ds: Any, alpha: tuple[int, ...], nodata: float | None, dtype: np.dtype
) -> dict[str, Any]:
    """What a native read needs to know about the open ``gdal.Dataset``; ``masks`` None: warp.

    Only no-data values are replicated: alpha bands and mask bands (GDAL weighs them as
    densities) and float files without a no-data value are left to GDAL's warper.
    """
    gdal = osgeo()[0]
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    info = {
        "wkt": ds.GetProjection(),
        "gt": tuple(ds.GetGeoTransform()),
        "shape": (ds.RasterYSize, ds.RasterXSize),
        "count": ds.RasterCount,
        "dtype": dtype,
    }
    flags = {b.GetMaskFlags() for b in bands}
    values = [b.GetNoDataValue() for b in bands]
    interp = {b.GetColorInterpretation() for b in bands}
    masks: tuple | None = None
    if alpha or gdal.GCI_AlphaBand in interp or len(flags) != 1:
        pass
    elif nodata is not None and flags <= {gdal.GMF_ALL_VALID, gdal.GMF_NODATA}:
        masks = (float(nodata),) * ds.RasterCount
    elif flags == {gdal.GMF_NODATA} and None not in values:
        masks = tuple(float(v) for v in values)
    elif flags == {gdal.GMF_ALL_VALID} and dtype.kind in "ui":
        masks = ()
    info["masks"] = masks
    return info


def _source_block(
    src: Any, source: dict, row: int, col: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """All bands' raw values ``[count, h, w]`` from source pixel (row, col), and where valid.

    Pixels outside the file are invalid, and so are those where every band holds its no-data
    value (GDAL's warper with UNIFIED_SRC_NODATA).

    Raises:
        ReadFailure: GDAL failed to read the file there.
    """
    sh, sw = source["shape"]
    r0, r1, c0, c1 = max(row, 0), min(row + h, sh), max(col, 0), min(col + w, sw)
    raw = np.zeros((source["count"], h, w), dtype=source["dtype"])
    valid = np.zeros((h, w), dtype=bool)
    if r1 <= r0 or c1 <= c0:
        return raw, valid
    inner = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
    bands = range(1, source["count"] + 1)
    # straight into the padded block: no second copy when the window crosses the file's edge
    data = read_pixels(src, (c0, r0, c1 - c0, r1 - r0), raw[(slice(None), *inner)], bands)
    ok = np.ones(data.shape[1:], dtype=bool)
    if source["masks"]:
        nd = np.ones_like(ok)
        for band, v in zip(data, source["masks"], strict=True):
            nd &= np.isnan(band) if math.isnan(v) else band == v
        ok = ~nd
    valid[inner] = ok
    return raw, valid


def read_native(
    src: Any,
    source: dict,
    idx: list[int],
    row: int,
    col: int,
    h: int,
    w: int,
    plan: NativePlan,
    resampling: str,
) -> np.ndarray:
    """Float32 ``[len(idx), h, w]`` raw values, NaN = no data, as GDAL's warper computes them.

    Aligned lattices copy pixels. A sub-pixel shift ``(fx, fy)`` resamples each output pixel
    from the same 2 x 2 source pixels with the same weights: bilinear with the weights of
    invalid neighbours dropped and the rest renormalised; nearest picks the pixel holding the
    sample point. Either way an output pixel is valid only where that pixel is.
    """
    b = [i - 1 for i in idx]
    if plan.fx == 0.0 and plan.fy == 0.0:
        raw, valid = _source_block(src, source, row, col, h, w)
        out = raw[b].astype(np.float32)
        out[:, ~valid] = np.nan
        return out
    raw, valid = _source_block(src, source, row, col, h + 1, w + 1)
    ay, ax = int(plan.fy >= 0.5), int(plan.fx >= 0.5)
    ok = valid[ay : ay + h, ax : ax + w]
    if resampling == "nearest":
        out = raw[b, ay : ay + h, ax : ax + w].astype(np.float32)
    else:
        out = _bilinear(raw[b], valid, ok, plan.fx, plan.fy)
    out[:, ~ok] = np.nan
    return out


def _bilinear(
    raw: np.ndarray, valid: np.ndarray, ok: np.ndarray, fx: float, fy: float
) -> np.ndarray:
    """Bilinear samples at ``(fx, fy)`` past each pixel of ``raw`` ``[n, h+1, w+1]``, where ``ok``.

    In float64 with GDAL's weights and summation order, so the float32 result matches its
    warper's (to the last bit on the rasters tested). Pixels next to an invalid one are redone
    with that neighbour's weight dropped (:func:`_renormalise`).
    """
    taps = ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)))
    taps += ((1, 1, fy * fx),)
    h, w = ok.shape
    wsum = 0.0
    for t in taps:
        wsum += t[2]
    out = np.empty((len(raw), h, w), dtype=np.float32)
    acc, tmp = np.empty((h, w)), np.empty((h, w))
    for k, v in enumerate(raw):
        # dtype=float64 casts inside the loop: exact, and no float64 copy of the band
        np.multiply(v[:h, :w], taps[0][2], out=acc, dtype=np.float64)
        for dy, dx, wt in taps[1:]:
            acc += np.multiply(v[dy : dy + h, dx : dx + w], wt, out=tmp, dtype=np.float64)
        if wsum != 1.0:
            acc /= wsum
        out[k] = acc
    edge = ok & ~(valid[:h, :w] & valid[:h, 1:] & valid[1:, :w] & valid[1:, 1:])
    if edge.any():
        _renormalise(out, raw, valid, taps, np.nonzero(edge))
    return out


def _renormalise(out: np.ndarray, raw: np.ndarray, valid: np.ndarray, taps, where) -> None:
    """Redo the pixels ``where`` with the weights of invalid neighbours set to 0."""
    ys, xs = where
    acc: Any = 0.0
    wsum: Any = 0.0
    for n, (dy, dx, wt) in enumerate(taps):
        ok = valid[ys + dy, xs + dx]
        v = raw[:, ys + dy, xs + dx].astype(np.float64)
        v[:, ~ok] = 0.0  # a NaN no-data value times weight 0 would still be NaN
        m = ok * wt
        acc = v * m if n == 0 else acc + v * m
        wsum = wsum + m
    wsum[wsum == 0.0] = 1.0  # no valid neighbour: the caller masks the pixel out anyway
    out[:, ys, xs] = acc / wsum
