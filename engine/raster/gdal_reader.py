"""Raster input over GDAL's own bindings: :class:`GdalReader`, the reader of raster files.

GdalReader hands out chips of a raster, resampled onto the tile grid: ``read_tile`` returns
float32 ``[C, size, size]`` scaled to [0, 1] (or metres for a DSM read with ``scale=1.0``), NaN
where the source has no data or does not reach; ``read_window`` returns a block of neighbouring
tiles in one read. Reads are windowed through a warped VRT in the grid CRS at the grid GSD, so a
chip costs the pixels of its own window and never a whole raster. The VRT's pixel lattice is
snapped to the tile lattice, so every tile is an integer window, read the same way whatever
extent it belongs to (extent invariance). When the file already is in the grid CRS at the grid
GSD, the warper is skipped: pixels are copied (lattices aligned) or shifted by a constant
sub-pixel offset with GDAL's own bilinear arithmetic, several times faster and equal to the
warper's output (bitwise on every raster tested, except a shift of exactly half a pixel, where the
warper's own float rounding decides which neighbour a nearest sample or an edge pixel takes).

Band naming (:mod:`.bands`), value scaling (:mod:`.scaling`), the two read paths
(:mod:`.warped`, :mod:`.native`) and grid choice (:mod:`.tiling`) live beside it.
Everything goes through ``osgeo.gdal``, so inside QGIS the engine reads with the very GDAL/PROJ
the application loaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RasterInputError
from ..geo import crs as crs_mod
from ..geo.gdal_errors import gdal_errors
from ..grid import Bounds
from .bands import alpha_bands, band_names, explicit_selection, present_bands, resolve_bands
from .native import NativePlan, lattice_phase, native_source, pixel_shape, read_native, split_pixel
from .scaling import apply_scaling, scaling_for, sensor_of, sensor_offset_span
from .source import (
    affine,
    band_dtype,
    bounds_of,
    check_source,
    file_ident,
    gdal_name,
    open_raster,
    pixel_size,
)
from .warped import ReadFailure, open_warped_vrt, read_warped, source_of
from .warped import resampling as resampling_method

_REOPEN_PIXELS = 64 * 256 * 256  # pixels a thread reads before reopening its datasets
_LIVE: weakref.WeakSet[GdalReader] = weakref.WeakSet()  # for close_all_readers


def close_all_readers() -> None:
    """Close the GDAL datasets of every live :class:`GdalReader` (they stay usable).

    A host that shuts GDAL down while Python keeps running (QGIS's ``exitQgis`` in a script or
    a test session) calls this first: a GDAL dataset freed after that crashes the process.
    """
    for reader in list(_LIVE):
        reader.close()


class GdalReader:
    """A :class:`~.reader.RasterReader` over any file GDAL can open (GeoTIFF, VRT, JPEG2000, ...).

    Args:
        path: the raster file.
        bands: explicit 1-based band numbers in the model's band order, 0 for a band the
            raster lacks (an encoder with a ``band_mask`` masks it); default: match by name,
            else take the non-alpha bands in order.
        scale: ``"dtype"`` (uint8 / 255, other types by percentile stretch), ``"percentile"``
            (per-band 2-98 % stretch computed once from a decimated read of the whole raster),
            ``"sensor:<name>"`` (the sensor's rule from ``engine/sensors.json``, as its training
            chips were scaled; its no-data value unless ``nodata`` is given) or a number to
            divide by (``1.0`` keeps DSM metres).
        nodata: value that marks no data, overriding the file's own.
        resampling: GDAL resampling name: ``"bilinear"`` for images, ``"average"`` or
            ``"nearest"`` for a DSM.
        fast: read straight from the file, skipping GDAL's warper, when the file is in the grid
            CRS at the grid GSD (same pixels: bitwise when the lattices coincide, to float32
            rounding under a sub-pixel shift); False always warps (the reference path).
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[int] | None = None,
        scale: str | float = "dtype",
        nodata: float | None = None,
        resampling: str = "bilinear",
        fast: bool = True,
    ) -> None:
        self._name = gdal_name(path)  # a /vsi... path as given; RasterInputError when missing
        self.path = Path(self._name)
        self._resampling = resampling_method(resampling)
        ds = open_raster(self._name)
        with gdal_errors(f"reading {self.path.name}", error=RasterInputError):
            check_source(ds, self.path.name)
            self._describe(ds)
            self._explicit = self._check_explicit(bands)
            self._sensor = sensor_of(scale)
            if nodata is None and self._sensor is not None:
                nodata = self._sensor.nodata  # e.g. 0 in Sentinel-2 and Landsat products
            self._nodata = nodata
            self._lo, self._span, self.scaling = scaling_for(ds, scale, nodata, self.path.name)
            self._ident = file_ident(self._name, ds)
            self._source = native_source(ds, self._alpha, nodata, np.dtype(self.dtype))
            self._warp_source = source_of(self._name, ds)
        del ds  # the last reference: GDAL closes the file
        self.fast = bool(fast)
        self._plans: dict[tuple, NativePlan | None] = {}
        # per-thread datasets (GDAL handles are not safe to share): dropping this object
        # drops every thread's handles at once, and GDAL closes each when no read holds it
        self._local = threading.local()
        _LIVE.add(self)

    def _describe(self, ds: Any) -> None:
        """The raster's CRS, extent, pixel size, bands and data type, from the open ``ds``."""
        t = affine(ds)
        self.crs: str = ds.GetProjection()
        self.bounds: Bounds = bounds_of(t, ds.RasterXSize, ds.RasterYSize)
        self.res: tuple[float, float] = pixel_size(t)
        self.band_count: int = ds.RasterCount
        self.dtype: str = band_dtype(ds)
        self._alpha = alpha_bands(ds)
        self.band_names: tuple[str, ...] = band_names(ds)

    # -- validation -------------------------------------------------------------------------
    def _check_explicit(self, bands: Sequence[int] | None) -> tuple[int, ...] | None:
        return explicit_selection(bands, self.band_count, self.band_names, self.path.name)

    @property
    def explicit_bands(self) -> tuple[int, ...] | None:
        """The explicit selection in the model's order (0 = absent), None when matched by name."""
        return self._explicit

    def check_bands(self, wanted: Sequence[str]) -> list[int]:
        """The 1-based band numbers used for ``wanted``; RasterInputError if they do not fit.

        With an explicit selection, ``wanted`` are the model bands it does not mark 0.
        """
        return resolve_bands(wanted, self.band_names, self._alpha, present_bands(self._explicit),
                             self.path.name)  # fmt: skip

    # -- reading ----------------------------------------------------------------------------
    def _datasets(self, cost: int) -> dict:
        """This thread's open datasets, reopened after ``_REOPEN_PIXELS`` pixels were read."""
        cache = getattr(self._local, "cache", None)
        read = getattr(self._local, "read", 0) + cost
        if cache is None or read > _REOPEN_PIXELS:
            # closing the datasets frees the GDAL blocks they cached: memory stays bounded
            # whatever the raster size and whatever GDAL_CACHEMAX the host application set
            cache, read = {}, cost
            self._local.cache = cache
        self._local.read = read
        return cache

    def _vrt(self, grid_crs: str, gsd: float, bounds: Bounds, cost: int) -> Any:
        """This thread's warped VRT whose pixel lattice matches the tile lattice of ``bounds``."""
        key = (grid_crs, gsd, lattice_phase(bounds, gsd))
        cache = self._datasets(cost)
        if key not in cache:
            phase = tuple(p * gsd / 1e6 for p in key[2])
            cache[key] = open_warped_vrt(
                self._warp_source, grid_crs, gsd, phase, self._alpha, self._nodata,
                self._resampling,
            )  # fmt: skip
        return cache[key]

    def _native_plan(self, grid_crs: str, gsd: float, bounds: Bounds) -> NativePlan | None:
        """How to read the lattice of ``bounds`` straight from the file, or None to warp.

        Only when the file is in the grid CRS at the grid GSD, unrotated: then GDAL's warper
        reduces to a copy (lattice aligned) or a constant sub-pixel shift, which
        :func:`read_native` computes the way GDAL does, at a fraction of its cost.
        """
        key = (grid_crs, gsd, lattice_phase(bounds, gsd))
        if key not in self._plans:
            self._plans[key] = self._make_plan(grid_crs, gsd, key[2]) if self.fast else None
        return self._plans[key]

    def _make_plan(self, grid_crs: str, gsd: float, phase: tuple[int, int]) -> NativePlan | None:
        s = self._source
        c, a, b, f, d, e = s["gt"]
        if s["masks"] is None or b != 0 or d != 0 or not crs_mod.same_crs(grid_crs, s["wkt"]):
            return None
        if abs(a - gsd) > 1e-9 * gsd or abs(-e - gsd) > 1e-9 * gsd:
            return None
        # source pixel coordinates of the lattice point (px, py): the same for every window
        ax = (phase[0] * gsd / 1e6 - c) / gsd
        ay = (f - phase[1] * gsd / 1e6) / gsd
        ix, fx = split_pixel(ax)
        iy, fy = split_pixel(ay)
        shifted = fx != 0.0 or fy != 0.0
        name = self._resampling.name
        if shifted and name not in ("bilinear", "nearest"):
            return None
        if not shifted and name not in ("bilinear", "nearest", "average"):
            return None
        return NativePlan(phase[0] * gsd / 1e6, phase[1] * gsd / 1e6, ix, iy, fx, fy)

    def read_window(
        self, bounds: Bounds, grid_crs: str, gsd: float, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), h, w]`` of ``bounds`` (grid CRS) at ``gsd``, NaN = no data.

        One read for a block of tiles: ``h`` and ``w`` are the extent in pixels, which must be
        whole. A tile cut out of the window equals :meth:`read_tile` of that tile: bitwise,
        since both go through the same position-independent read.
        """
        idx = self.check_bands(bands)
        h, w = pixel_shape(bounds, gsd)
        if h < 1 or w < 1 or h != round(h) or w != round(w):
            raise RasterInputError(
                f"read_window needs bounds that are a whole number of {gsd:g}-unit pixels, got "
                f"{tuple(round(v, 3) for v in bounds)}"
            )
        return self._scale(self._read_raw(bounds, grid_crs, gsd, idx, int(h), int(w)), idx, bands)

    def read_tile(
        self, bounds: Bounds, grid_crs: str, gsd: float, size: int, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), size, size]`` of ``bounds`` (grid CRS) at ``gsd``, NaN = no data."""
        idx = self.check_bands(bands)
        if pixel_shape(bounds, gsd) == (size, size):
            return self._scale(self._read_raw(bounds, grid_crs, gsd, idx, size, size), idx, bands)
        # a tile at another pixel size than gsd: GDAL resamples the window to size x size
        return self._scale(self._read_warped(bounds, grid_crs, gsd, idx, size, size), idx, bands)

    def _read_raw(
        self, bounds: Bounds, grid_crs: str, gsd: float, idx: list[int], h: int, w: int
    ) -> np.ndarray:
        plan = self._native_plan(grid_crs, gsd, bounds)
        if plan is None:
            return self._read_warped(bounds, grid_crs, gsd, idx, h, w)
        cache = self._datasets(h * w)
        if "src" not in cache:
            cache["src"] = open_raster(self._name)
        # the window's top-left pixel in lattice steps from (px, py), then in source pixels
        col = round((bounds[0] - plan.px) / gsd) + plan.ix
        row = plan.iy - round((bounds[3] - plan.py) / gsd)
        try:
            return read_native(
                cache["src"], self._source, idx, row, col, h, w, plan, self._resampling.name
            )
        except ReadFailure as e:
            raise self._read_error(bounds, e) from None

    def _read_warped(
        self, bounds: Bounds, grid_crs: str, gsd: float, idx: list[int], h: int, w: int
    ) -> np.ndarray:
        """Raw values of ``bounds`` through this thread's warped VRT, resampled to ``h`` x ``w``."""
        vrt = self._vrt(grid_crs, gsd, bounds, h * w)
        try:
            return read_warped(vrt, bounds, gsd, idx, h, w, self._resampling)
        except ReadFailure as e:
            raise self._read_error(bounds, e) from None

    def _read_error(self, bounds: Bounds, e: Exception) -> RasterInputError:
        """A truncated or damaged file fails only when read: say where, and what to suspect."""
        return RasterInputError(
            f"{self.path.name} cannot be read at {tuple(round(v, 2) for v in bounds)} "
            f"(truncated or corrupt file?): {e}"
        )

    def _scale(self, out: np.ndarray, idx: list[int], bands: Sequence[str]) -> np.ndarray:
        if self._sensor is not None:  # the rule depends on the model band each band feeds
            lo, span = sensor_offset_span(self._sensor, bands)
            return apply_scaling(out, lo, span, list(range(1, len(bands) + 1)), clip=True)
        clip = self.scaling.startswith("percentile")
        return apply_scaling(out, self._lo, self._span, idx, clip)

    def fingerprint(self) -> str:
        """sha256 of path, size, mtime, CRS, transform, band selection, nodata and scaling."""
        d = dict(self._ident, bands=self._explicit, nodata=self._nodata, scaling=self.scaling)
        d["resampling"] = self._resampling.name
        if self.fast:  # native reads may differ from the warper's in the last float32 bit
            d["read"] = "native-1"
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def close(self) -> None:
        """Close every dataset any thread opened (each once no read in flight holds it).

        The reader stays usable: a later read reopens what it needs.
        """
        self._local = threading.local()

    def __enter__(self) -> GdalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
