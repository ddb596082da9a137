"""How raw raster values become model values: divide by a number, uint8 / 255, or a stretch.

A scaling is a per-band ``(offset, span)`` pair, applied as ``(raw - offset) / span``, and a
description recorded for provenance (``"uint8/255"``, ``"divide:1"``, ``"percentile2-98:..."``).
The percentile stretch comes from one decimated read of the whole raster, so it costs about a
megapixel whatever the raster's size and is the same for every chip.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InputError, RasterInputError
from ..geo.gdal_errors import gdal_errors, osgeo
from .bands import canonical_band
from .sensors import Sensor, get_sensor

SENSOR_PREFIX = "sensor:"

PERCENTILES = (2.0, 98.0)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
STATS_MAX_SIDE = 1024  # long side of the decimated read that gives the percentile stretch


def scaling_for(
    src: Any, scale: str | float, nodata: float | None, name: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-band (offset, span) so that ``(raw - offset) / span`` is the model value.

    Args:
        src: the open ``gdal.Dataset``.
        scale: ``"dtype"`` (uint8 / 255, other types by percentile stretch), ``"percentile"`` or
            a positive number to divide by.
        nodata: value that marks no data, overriding the file's own (ignored by the stretch).
        name: the file's name, for error messages.

    Returns:
        ``(offset, span, description)``.
    """
    n = src.RasterCount
    sensor = sensor_of(scale)
    if sensor is not None:  # per model band, applied at read time (band_offset_span)
        _decimated_valid(src, nodata, name)
        return np.zeros(n), np.ones(n), SENSOR_PREFIX + sensor.name
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if not (scale > 0 and math.isfinite(scale)):
            raise RasterInputError(f"scale must be a positive number, got {scale}")
        _decimated_valid(src, nodata, name)  # e.g. a DSM in metres: refuse one of only no data
        return np.zeros(n), np.full(n, float(scale)), f"divide:{float(scale):g}"
    if scale == "dtype" and src.GetRasterBand(1).DataType == osgeo()[0].GDT_Byte:
        return np.zeros(n), np.full(n, 255.0), "uint8/255"
    if scale not in ("dtype", "percentile"):
        raise RasterInputError(
            f"scale must be 'dtype', 'percentile', 'sensor:<name>' or a number, got {scale!r}"
        )
    lo, hi = band_percentiles(src, nodata, name)
    desc = "percentile2-98:" + ",".join(f"{a:.6g}..{b:.6g}" for a, b in zip(lo, hi, strict=False))
    return lo, np.maximum(hi - lo, 1e-12), desc


def sensor_of(scale: Any) -> Sensor | None:
    """The sensor of a ``"sensor:<name>"`` scale, else None.

    Raises:
        RasterInputError: the name is not in ``engine/sensors.json`` (the message lists them).
    """
    if not (isinstance(scale, str) and scale.startswith(SENSOR_PREFIX)):
        return None
    try:
        return get_sensor(scale[len(SENSOR_PREFIX) :].strip())
    except InputError as e:
        raise RasterInputError(str(e)) from None


def sensor_offset_span(sensor: Sensor, bands: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (offset, span) of ``sensor``'s rule for the model ``bands`` read.

    Raises:
        RasterInputError: a band the sensor table has no rule for (only imagery bands have one).
    """
    pairs = []
    for b in bands:
        key = canonical_band(b)
        if key not in sensor.reflectance_max:
            raise RasterInputError(
                f"sensor scaling ({sensor.name}) applies to imagery bands "
                f"({', '.join(sensor.reflectance_max)}), not {b!r}"
            )
        pairs.append(sensor.offset_span(key))
    lo, span = (np.array(v, dtype=np.float64) for v in zip(*pairs, strict=True))
    return lo, span


def _decimated_valid(src: Any, nodata: float | None, name: str) -> list[np.ndarray]:
    """Each band's finite, valid values of one decimated read of the whole raster.

    Valid means GDAL's mask band says so (no data, alpha or a mask file) and the value is not
    ``nodata``; the read is GDAL's nearest-neighbour decimation (from overviews when the file
    has them).

    Raises:
        RasterInputError: no band holds a single valid pixel, or GDAL cannot read the file.
    """
    gdal = osgeo()[0]
    f = max(src.RasterXSize, src.RasterYSize) / STATS_MAX_SIDE
    h = max(1, round(src.RasterYSize / max(f, 1)))
    w = max(1, round(src.RasterXSize / max(f, 1)))
    values = []
    with gdal_errors(f"reading {name} for its value statistics", error=RasterInputError):
        for b in range(1, src.RasterCount + 1):
            band = src.GetRasterBand(b)
            v = _decimated(band, w, h)
            if not band.GetMaskFlags() & gdal.GMF_ALL_VALID:
                v = v[_decimated(band.GetMaskBand(), w, h) != 0]
            v = v.reshape(-1).astype(np.float64)
            if nodata is not None:
                v = v[v != nodata]
            values.append(v[np.isfinite(v)])
    if all(v.size == 0 for v in values):
        raise RasterInputError(f"{name} holds no valid pixels (all no data)")
    top = max(float(np.abs(v).max()) for v in values if v.size)
    if top > _FLOAT32_MAX:
        # tiles are read as 32-bit floats: such values became infinite and every tile no data
        raise RasterInputError(
            f"{name} holds values up to {top:.3g}, beyond what 32-bit floats carry "
            f"(±{_FLOAT32_MAX:.3g}), so every tile would read as no data; rescale it first "
            "(e.g. gdal_translate -ot Float32 -scale) and embed the result"
        )
    return values


def _decimated(band: Any, w: int, h: int) -> np.ndarray:
    """The whole ``band`` read into ``w`` x ``h`` pixels; RasterInputError if GDAL cannot."""
    out = band.ReadAsArray(buf_xsize=w, buf_ysize=h)
    if out is None:
        raise RasterInputError("GDAL returned no pixels for the value statistics")
    return out


def band_percentiles(src: Any, nodata: float | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 % percentiles from one decimated read of the whole raster."""
    lo, hi = np.zeros(src.RasterCount), np.ones(src.RasterCount)
    for b, v in enumerate(_decimated_valid(src, nodata, name)):
        if v.size == 0:
            continue
        lo[b], hi[b] = np.percentile(v, PERCENTILES)
        if hi[b] <= lo[b]:
            hi[b] = lo[b] + 1.0  # a constant band maps to 0 instead of dividing by zero
    return lo, hi


def apply_scaling(
    out: np.ndarray, lo: np.ndarray, span: np.ndarray, idx: list[int], clip: bool
) -> np.ndarray:
    """Scale raw float32 ``out`` of 1-based bands ``idx`` in place; ``clip``: clamp to [0, 1]."""
    b = [i - 1 for i in idx]
    out -= lo[b].astype(np.float32)[:, None, None]
    out /= span[b].astype(np.float32)[:, None, None]
    if clip:
        np.clip(out, 0.0, 1.0, out=out)  # NaN stays NaN
    return out
