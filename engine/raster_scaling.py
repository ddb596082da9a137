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

from .errors import RasterInputError

PERCENTILES = (2.0, 98.0)
STATS_MAX_SIDE = 1024  # long side of the decimated read that gives the percentile stretch


def scaling_for(
    src: Any, scale: str | float, nodata: float | None, name: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-band (offset, span) so that ``(raw - offset) / span`` is the model value.

    Args:
        src: the open rasterio dataset.
        scale: ``"dtype"`` (uint8 / 255, other types by percentile stretch), ``"percentile"`` or
            a positive number to divide by.
        nodata: value that marks no data, overriding the file's own (ignored by the stretch).
        name: the file's name, for error messages.

    Returns:
        ``(offset, span, description)``.
    """
    n = src.count
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if not (scale > 0 and math.isfinite(scale)):
            raise RasterInputError(f"scale must be a positive number, got {scale}")
        _decimated_valid(src, nodata, name)  # e.g. a DSM in metres: refuse one of only no data
        return np.zeros(n), np.full(n, float(scale)), f"divide:{float(scale):g}"
    if scale == "dtype" and src.dtypes[0] == "uint8":
        return np.zeros(n), np.full(n, 255.0), "uint8/255"
    if scale not in ("dtype", "percentile"):
        raise RasterInputError(f"scale must be 'dtype', 'percentile' or a number, got {scale!r}")
    lo, hi = band_percentiles(src, nodata, name)
    desc = "percentile2-98:" + ",".join(f"{a:.6g}..{b:.6g}" for a, b in zip(lo, hi, strict=False))
    return lo, np.maximum(hi - lo, 1e-12), desc


def _decimated_valid(src: Any, nodata: float | None, name: str) -> list[np.ndarray]:
    """Each band's finite, non-nodata values of one decimated read of the whole raster.

    Raises:
        RasterInputError: no band holds a single valid pixel.
    """
    f = max(src.width, src.height) / STATS_MAX_SIDE
    shape = (
        src.count,
        max(1, round(src.height / max(f, 1))),
        max(1, round(src.width / max(f, 1))),
    )
    data = src.read(out_shape=shape, masked=True)
    if nodata is not None:
        data = np.ma.masked_equal(data, nodata)
    values = []
    for b in range(src.count):
        v = data[b].compressed().astype(np.float64)
        values.append(v[np.isfinite(v)])
    if all(v.size == 0 for v in values):
        raise RasterInputError(f"{name} holds no valid pixels (all no data)")
    return values


def band_percentiles(src: Any, nodata: float | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 % percentiles from one decimated read of the whole raster."""
    lo, hi = np.zeros(src.count), np.ones(src.count)
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
