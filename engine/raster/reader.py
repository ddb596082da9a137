"""The raster reader protocol: what the engine needs from a raster (a file, a mosaic, a QGIS layer).

A reader hands out chips of a raster, resampled onto the tile grid: ``read_tile`` returns
float32 ``[C, size, size]`` scaled to [0, 1] (or metres for a DSM read with ``scale=1.0``), NaN
where the source has no data or does not reach. :class:`~.gdal_reader.GdalReader` implements it
over GDAL, :class:`~.mosaic.MosaicReader` over several files, the plugin over a QGIS provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..grid import Bounds


class RasterReader(Protocol):
    """What the engine needs from a raster. The plugin implements it over a QGIS data provider.

    A reader may also offer ``read_window(bounds, grid_crs, gsd, bands)``: the pixels of a
    block of neighbouring tiles at once (see :meth:`GdalReader.read_window`); the embedding
    pipeline uses it when present and ``read_tile`` otherwise.

    Attributes:
        crs: the raster's CRS as WKT.
        bounds: ``(minx, miny, maxx, maxy)`` in the raster's CRS.
        res: pixel size ``(x, y)`` in the raster's CRS units (positive numbers).
        band_count: number of bands in the file (alpha included).
        band_names: one name per band, e.g. ``("red", "green", "blue", "alpha")``.
        scaling: how raw values become model values, e.g. ``"uint8/255"`` (for provenance).
    """

    crs: str
    bounds: Bounds
    res: tuple[float, float]
    band_count: int
    band_names: tuple[str, ...]
    scaling: str

    def read_tile(
        self, bounds: Bounds, grid_crs: str, gsd: float, size: int, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), size, size]`` covering ``bounds`` (in ``grid_crs``), NaN = no data.

        Must be safe to call from several threads at once.
        """
        ...

    def fingerprint(self) -> str:
        """A hash that changes when the pixels the reader returns could change."""
        ...
