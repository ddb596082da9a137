"""The engine's RasterReader over a QGIS raster layer, so XYZ, WMS and VRT layers embed too.

A tile is read in three steps: its bounds (grid CRS) are transformed to the layer CRS, the
covering block is fetched from the layer's data provider (snapped to the native pixel lattice
when the layer has one, so no pixel is resampled twice), and the block is warped onto the tile
with GDAL's warper in memory, bilinear, the same resampling ``engine.raster.gdal_reader.GdalReader``
uses. Each thread reads through its own clone of the data provider, because a provider is not
safe to share between threads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterDataProvider,
    QgsRasterLayer,
    QgsRectangle,
)

from ..engine.errors import RasterInputError
from ..engine.raster import (
    GdalReader,
    canonical_band,
    explicit_selection,
    present_bands,
    resolve_bands,
    sensor_of,
)

AUTO_SCALE = "dtype"  # 8-bit / 255, other types a 2-98 % stretch (the readers' default)

_FILL = -3.0e38  # warper nodata: NaN as nodata makes GDAL's warper return NaN everywhere
_MAX_OVERSAMPLE = 4  # read at most 4x the tile's pixel density, whatever the native resolution
_WEB_OVERSAMPLE = 2  # XYZ/WMS layers: request twice the tile's pixel density
_STATS_MAX_SIDE = 1024
_ARGB = (Qgis.ARGB32, Qgis.ARGB32_Premultiplied)
_DTYPES = {
    Qgis.Byte: np.uint8,
    Qgis.UInt16: np.uint16,
    Qgis.Int16: np.int16,
    Qgis.UInt32: np.uint32,
    Qgis.Int32: np.int32,
    Qgis.Float32: np.float32,
    Qgis.Float64: np.float64,
}
_INTERP = {"red": "red", "green": "green", "blue": "blue", "alpha": "alpha"}


def qgs_crs(text: str) -> QgsCoordinateReferenceSystem:
    """A QGIS CRS from ``"EPSG:n"`` or WKT; RasterInputError when QGIS does not know it."""
    crs = QgsCoordinateReferenceSystem(text)
    if not crs.isValid():
        crs = QgsCoordinateReferenceSystem.fromWkt(text)
    if not crs.isValid():
        raise RasterInputError(f"QGIS does not recognise the CRS '{text[:60]}'")
    return crs


class QgsLayerReader:
    """A :class:`engine.raster.reader.RasterReader` over any QGIS raster layer.

    Create it on the main thread; ``read_tile`` may then be called from any thread.

    Args:
        layer: a valid raster layer (GeoTIFF, VRT, WMS, XYZ, ...).
        bands: explicit 1-based band numbers in the model's band order (0 for a band the
            layer lacks); default: match by
            colour interpretation, else the non-alpha bands in order. XYZ/WMS layers expose
            their colour band as four bands: red, green, blue, alpha.
    """

    def __init__(self, layer: QgsRasterLayer, bands: Sequence[int] | None = None) -> None:
        if layer is None or not layer.isValid():
            raise RasterInputError("the raster layer is not valid; check its source")
        prov = layer.dataProvider()
        if not layer.crs().isValid():
            raise RasterInputError(f"layer '{layer.name()}' has no CRS; set one in its properties")
        self._name = layer.name()
        self._source = layer.source()
        self._template = prov.clone()
        self._qcrs = layer.crs()
        self._ctx = QgsProject.instance().transformContext()
        self._argb = prov.dataType(1) in _ARGB
        self.crs: str = layer.crs().toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
        ext = prov.extent()
        self.bounds = (ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum())
        if not (ext.width() > 0 and ext.height() > 0):
            raise RasterInputError(f"layer '{self._name}' has an empty extent")
        self._native = bool(int(prov.capabilities()) & QgsRasterDataProvider.Size)
        self._native = self._native and prov.xSize() > 0 and prov.ySize() > 0
        # a tiled web layer has no native pixel size: NaN makes the engine say so if asked
        nan = float("nan")
        w, h = (prov.xSize(), prov.ySize()) if self._native else (nan, nan)
        self.res = (ext.width() / w, ext.height() / h)
        self.band_names, self._alpha = _band_names(prov, self._argb)
        self.band_count = len(self.band_names)
        self._explicit = self._check_explicit(bands)
        self._dtype = np.uint8 if self._argb else _DTYPES.get(prov.dataType(1))
        if self._dtype is None:
            raise RasterInputError(
                f"layer '{self._name}' has an unsupported data type; convert it to an integer "
                "or float raster"
            )
        self._lo, self._span, self.scaling = self._scaling()
        self._local = threading.local()
        self._lock = threading.Lock()

    def _check_explicit(self, bands: Sequence[int] | None) -> tuple[int, ...] | None:
        return explicit_selection(bands, self.band_count, self.band_names, self._name)

    @property
    def explicit_bands(self) -> tuple[int, ...] | None:
        """The explicit selection in the model's order (0 = absent), None when matched by name."""
        return self._explicit

    def check_bands(self, wanted: Sequence[str]) -> list[int]:
        """The 1-based band numbers used for ``wanted``; RasterInputError if they do not fit."""
        explicit = present_bands(self._explicit)
        return resolve_bands(wanted, self.band_names, self._alpha, explicit, self._name)

    def _scaling(self) -> tuple[np.ndarray, np.ndarray, str]:
        n = self.band_count
        if self._dtype == np.uint8:
            return np.zeros(n), np.full(n, 255.0), "uint8/255"
        # other types: a 2-98 % stretch from one decimated read, as GdalReader does
        ext = self._template.extent()
        nx, ny = (
            (ext.width() / self.res[0], ext.height() / self.res[1])
            if self._native
            else (
                _STATS_MAX_SIDE,
                _STATS_MAX_SIDE,
            )
        )
        f = max(max(nx, ny) / _STATS_MAX_SIDE, 1.0)
        w, h = max(1, round(nx / f)), max(1, round(ny / f))
        lo, hi = np.zeros(n), np.ones(n)
        for b in range(1, n + 1):
            v = self._read_band(self._template, b, ext, w, h)
            v = v[np.isfinite(v)]
            if v.size:
                lo[b - 1], hi[b - 1] = np.percentile(v, (2.0, 98.0))
            if hi[b - 1] <= lo[b - 1]:
                hi[b - 1] = lo[b - 1] + 1.0  # a constant band maps to 0, not a division by 0
        pairs = zip(lo, hi, strict=True)
        desc = "percentile2-98:" + ",".join(f"{a:.6g}..{b:.6g}" for a, b in pairs)
        return lo, np.maximum(hi - lo, 1e-12), desc

    # -- reading ----------------------------------------------------------------------------
    def _provider(self) -> QgsRasterDataProvider:
        prov = getattr(self._local, "provider", None)
        if prov is None:
            with self._lock:  # cloning reads the template: one thread at a time
                prov = self._template.clone()
            self._local.provider = prov
        return prov

    def _to_layer(self, grid_crs: str) -> QgsCoordinateTransform:
        cache = getattr(self._local, "transforms", None)
        if cache is None:
            cache = self._local.transforms = {}
        if grid_crs not in cache:
            cache[grid_crs] = QgsCoordinateTransform(qgs_crs(grid_crs), self._qcrs, self._ctx)
        return cache[grid_crs]

    def _read_band(
        self, prov: QgsRasterDataProvider, band: int, rect: QgsRectangle, w: int, h: int
    ) -> np.ndarray:
        """Float32 ``[h, w]`` of one (virtual) band; NaN where the provider has no data."""
        if self._argb:
            block = prov.block(1, rect, w, h)
            raw = np.frombuffer(bytes(block.data()), dtype=np.uint8)
            if raw.size != w * h * 4:
                return np.full((h, w), np.nan, np.float32)
            bgra = raw.reshape(h, w, 4).astype(np.float32)
            a = bgra[..., 3]
            ch = {1: 2, 2: 1, 3: 0, 4: 3}[band]
            out = bgra[..., ch].copy()
            if band != 4 and prov.dataType(1) == Qgis.ARGB32_Premultiplied:
                out = np.where(a > 0, out * 255.0 / np.maximum(a, 1.0), np.nan)
            if band != 4:
                out[a == 0] = np.nan
            return out
        block = prov.block(band, rect, w, h)
        raw = np.frombuffer(bytes(block.data()), dtype=self._dtype)
        if raw.size != w * h:
            return np.full((h, w), np.nan, np.float32)
        out = raw.reshape(h, w).astype(np.float32)
        if block.hasNoDataValue():
            out[out == np.float32(block.noDataValue())] = np.nan
        return out

    def _source_window(self, tr: QgsCoordinateTransform, bounds, size: int):
        """The layer-CRS rectangle to fetch for ``bounds`` and its pixel size, or None."""
        box = tr.transformBoundingBox(QgsRectangle(*bounds))
        pad = 2.0 * max(box.width(), box.height()) / size  # room for the bilinear kernel
        box.grow(pad)
        ext = self._template.extent()
        if self._native:
            px = max(self.res[0], box.width() / (size * _MAX_OVERSAMPLE))
            py = max(self.res[1], box.height() / (size * _MAX_OVERSAMPLE))
        else:  # web layers pick their zoom level from the requested density
            px, py = box.width() / (size * _WEB_OVERSAMPLE), box.height() / (size * _WEB_OVERSAMPLE)
        if self._native and px == self.res[0] and py == self.res[1]:
            # snap outwards onto the native pixel lattice: the provider then copies pixels
            x0 = ext.xMinimum() + math.floor((box.xMinimum() - ext.xMinimum()) / px) * px
            y1 = ext.yMaximum() - math.floor((ext.yMaximum() - box.yMaximum()) / py) * py
            x1 = ext.xMinimum() + math.ceil((box.xMaximum() - ext.xMinimum()) / px) * px
            y0 = ext.yMaximum() - math.ceil((ext.yMaximum() - box.yMinimum()) / py) * py
            box = QgsRectangle(x0, y0, x1, y1)
        rect = box.intersect(ext)
        if rect.isEmpty() or rect.width() <= 0 or rect.height() <= 0:
            return None
        w = max(1, round(rect.width() / px))
        h = max(1, round(rect.height() / py))
        return rect, w, h

    def read_tile(
        self, bounds, grid_crs: str, gsd: float, size: int, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), size, size]`` of ``bounds`` (grid CRS), NaN = no data."""
        idx = self.check_bands(bands)
        out = np.full((len(idx), size, size), np.nan, dtype=np.float32)
        win = self._source_window(self._to_layer(grid_crs), bounds, size)
        if win is None:
            return out
        rect, w, h = win
        prov = self._provider()
        src = np.stack([self._read_band(prov, b, rect, w, h) for b in idx])
        if self._alpha and not self._argb:
            src[:, self._read_band(prov, self._alpha[0], rect, w, h) == 0] = np.nan
        out[:] = _warp(src, rect, self.crs, bounds, grid_crs, size)
        b = [i - 1 for i in idx]
        out = (out - self._lo[b].astype(np.float32)[:, None, None]) / self._span[b].astype(
            np.float32
        )[:, None, None]
        if self.scaling.startswith("percentile"):
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def fingerprint(self) -> str:
        """sha256 of the layer source (and file size/mtime), CRS, extent, bands and scaling."""
        d = {
            "source": self._source,
            "crs": self.crs,
            "bounds": [round(v, 9) for v in self.bounds],
            "res": [round(v, 12) for v in self.res],
            "bands": self._explicit,
            "scaling": self.scaling,
            "reader": "qgis-bilinear",
        }
        path = Path(self._source.split("|")[0])
        if path.is_file():
            st = os.stat(path)
            d.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _band_names(prov: QgsRasterDataProvider, argb: bool) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Band names from the colour interpretation, and the 1-based alpha band numbers."""
    if argb:
        return ("red", "green", "blue", "alpha"), (4,)
    names = []
    for b in range(1, prov.bandCount() + 1):
        interp = canonical_band(prov.colorInterpretationName(b))
        names.append(_INTERP.get(interp, f"band{b}"))
    alpha = tuple(i + 1 for i, n in enumerate(names) if n == "alpha")
    return tuple(names), alpha


def _warp(
    src: np.ndarray, rect: QgsRectangle, src_wkt: str, bounds, grid_crs: str, size: int
) -> np.ndarray:
    """Warp ``src`` ``[C, h, w]`` covering ``rect`` onto a ``size``-px tile of ``bounds``."""
    from osgeo import gdal, osr

    c, h, w = src.shape
    mem = gdal.GetDriverByName("MEM")
    sds = mem.Create("", w, h, c, gdal.GDT_Float32)
    sds.SetGeoTransform(
        (rect.xMinimum(), rect.width() / w, 0.0, rect.yMaximum(), 0.0, -rect.height() / h)
    )
    sds.SetProjection(src_wkt)
    data = np.where(np.isnan(src), np.float32(_FILL), src).astype(np.float32)
    for i in range(c):
        band = sds.GetRasterBand(i + 1)
        band.SetNoDataValue(_FILL)
        band.WriteArray(data[i])
    ref = osr.SpatialReference()
    ref.SetFromUserInput(grid_crs)
    dds = mem.Create("", size, size, c, gdal.GDT_Float32)
    minx, miny, maxx, maxy = bounds
    dds.SetGeoTransform((minx, (maxx - minx) / size, 0.0, maxy, 0.0, -(maxy - miny) / size))
    dds.SetProjection(ref.ExportToWkt())
    for i in range(c):
        band = dds.GetRasterBand(i + 1)
        band.SetNoDataValue(_FILL)
        band.Fill(_FILL)
    res = gdal.Warp(dds, sds, resampleAlg="bilinear", srcNodata=_FILL, dstNodata=_FILL)
    if res is None:
        raise RasterInputError(f"GDAL could not warp a tile: {gdal.GetLastErrorMsg()}")
    arr = dds.ReadAsArray().reshape(c, size, size).astype(np.float32)
    arr[arr <= _FILL] = np.nan
    return arr


def reader_for_layer(
    layer: QgsRasterLayer, bands: Sequence[int] | None = None, scale: str = AUTO_SCALE
):
    """The fastest reader for ``layer``: GdalReader for a plain GDAL file, else QgsLayerReader.

    ``scale``: ``"dtype"`` (8-bit / 255, other types a 2-98 % stretch) or ``"sensor:<name>"``
    (the sensor's training rule on raw values, :mod:`engine.raster.sensors`), which needs the
    raster file.
    """
    if layer is None or not layer.isValid():
        raise RasterInputError("the raster layer is not valid; check its source")
    path = Path(layer.source().split("|")[0])
    if layer.providerType() == "gdal" and path.is_file():
        return GdalReader(path, bands=bands, scale=scale)
    sensor = sensor_of(scale)
    if sensor is not None:
        raise RasterInputError(
            f"'{layer.name()}' is not a raster file ({layer.providerType()} layer): scaling by "
            f"the {sensor.name} rule reads the file's raw values. Save the layer as a GeoTIFF "
            "first, or use automatic scaling"
        )
    return QgsLayerReader(layer, bands=bands)
