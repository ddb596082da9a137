"""Raster input: the small reader protocol, its rasterio implementation and grid selection.

A reader hands out chips of a raster, resampled onto the tile grid: ``read_tile`` returns
float32 ``[C, size, size]`` scaled to [0, 1] (or metres for a DSM read with ``scale=1.0``), NaN
where the source has no data or does not reach. Reads are windowed through a
``rasterio.vrt.WarpedVRT`` in the grid CRS at the grid GSD, so a chip costs the pixels of its
own window and never a whole raster. The VRT's pixel lattice is snapped to the tile lattice, so
every tile is an integer window, read the same way whatever extent it belongs to (extent
invariance).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .contract import Preprocess
from .errors import RasterInputError
from .grid import DEFAULT_MAX_TILES, Bounds, TileGrid

_ALIASES = {
    "red": ("red", "r"),
    "green": ("green", "g"),
    "blue": ("blue", "b"),
    "nir": ("nir", "near-infrared", "near infrared", "nearinfrared", "infrared", "nir1"),
    "alpha": ("alpha", "a"),
}
_CANON = {alias: key for key, aliases in _ALIASES.items() for alias in aliases}
_PERCENTILES = (2.0, 98.0)
_FILL = -3.0e38  # the VRT's nodata; NaN there makes GDAL's warper return NaN everywhere
_STATS_MAX_SIDE = 1024
_REOPEN_EVERY = 64  # reads per thread before its datasets are reopened (bounds GDAL's cache)  # long side of the decimated read that gives the percentile stretch


class RasterReader(Protocol):
    """What the engine needs from a raster. The plugin implements it over a QGIS data provider.

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


def canonical_band(name: str) -> str:
    """Lower-case band name with common aliases folded (``"NIR"``, ``"near-infrared"`` → nir)."""
    n = name.strip().lower()
    return _CANON.get(n, n)


def resolve_bands(
    wanted: Sequence[str],
    names: Sequence[str],
    alpha: Sequence[int] = (),
    explicit: Sequence[int] | None = None,
    where: str = "raster",
) -> list[int]:
    """1-based band numbers that feed the model's ``wanted`` bands, in the model's order.

    Explicit numbers win; otherwise bands are matched by name (description or colour
    interpretation); otherwise the non-alpha bands are taken in file order when their count fits.
    """
    n = len(wanted)
    if explicit is not None:
        if len(explicit) != n:
            raise RasterInputError(
                f"{where}: bands={list(explicit)} selects {len(explicit)} band(s) but the model "
                f"needs {n} ({', '.join(wanted)})"
            )
        return [int(b) for b in explicit]
    data = [i + 1 for i in range(len(names)) if i + 1 not in alpha]
    by_name = {canonical_band(names[i - 1]): i for i in data}
    want = [canonical_band(w) for w in wanted]
    if all(w in by_name for w in want):
        return [by_name[w] for w in want]
    if len(data) == n:
        return data
    have = ", ".join(f"{i}: {names[i - 1]}" for i in data)
    extra = f" plus alpha band(s) {list(alpha)}" if alpha else ""
    raise RasterInputError(
        f"{where}: the model needs {n} band(s) ({', '.join(wanted)}) but the raster has "
        f"{len(data)} data band(s) ({have}){extra}. Pick {n} band(s) in the model's order with "
        f"bands=[...] (1-based band numbers, e.g. bands={list(range(1, n + 1))})"
    )


class RasterioReader:
    """A :class:`RasterReader` over any file GDAL can open (GeoTIFF, VRT, JPEG2000, ...).

    Args:
        path: the raster file.
        bands: explicit 1-based band numbers in the model's band order; default: match by name,
            else take the non-alpha bands in order.
        scale: ``"dtype"`` (uint8 / 255, other types by percentile stretch), ``"percentile"``
            (per-band 2-98 % stretch computed once from a decimated read of the whole raster)
            or a number to divide by (``1.0`` keeps DSM metres).
        nodata: value that marks no data, overriding the file's own.
        resampling: GDAL resampling name: ``"bilinear"`` for images, ``"average"`` or
            ``"nearest"`` for a DSM.
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[int] | None = None,
        scale: str | float = "dtype",
        nodata: float | None = None,
        resampling: str = "bilinear",
    ) -> None:
        import rasterio
        from rasterio.enums import ColorInterp, Resampling

        self.path = Path(path)
        if not self.path.is_file():
            raise RasterInputError(f"raster file {self.path} does not exist")
        try:
            self._resampling = Resampling[resampling]
        except KeyError:
            raise RasterInputError(f"unknown resampling '{resampling}'") from None
        try:
            src = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as e:
            raise RasterInputError(
                f"{self.path.name} is not a raster GDAL can read (corrupt or another format): {e}"
            ) from None
        with src:
            self._check_source(src)
            self.crs: str = src.crs.to_wkt()
            self.bounds: Bounds = tuple(src.bounds)
            self.res: tuple[float, float] = (abs(src.res[0]), abs(src.res[1]))
            self.band_count: int = src.count
            self.dtype: str = src.dtypes[0]
            # an alpha colour interpretation on a band described as e.g. "nir" is a writer's
            # default (GDAL tags the 4th band of any RGB-like uint8 file alpha), not a mask
            self._alpha = tuple(
                i + 1
                for i, (c, d) in enumerate(zip(src.colorinterp, src.descriptions, strict=True))
                if c == ColorInterp.alpha and canonical_band(d or "alpha") == "alpha"
            )
            self.band_names: tuple[str, ...] = tuple(
                _band_name(i, d, c)
                for i, (d, c) in enumerate(zip(src.descriptions, src.colorinterp, strict=False))
            )
            self._explicit = self._check_explicit(bands)
            self._nodata = nodata
            self._lo, self._span, self.scaling = self._scaling(src, scale)
            self._ident = _file_ident(self.path, src)
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()

    # -- validation -------------------------------------------------------------------------
    def _check_source(self, src: Any) -> None:
        name = self.path.name
        if src.crs is None:
            raise RasterInputError(
                f"{name} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx) and retry"
            )
        if src.count < 1 or src.width < 1 or src.height < 1:
            raise RasterInputError(f"{name} has no pixels ({src.width}x{src.height}x{src.count})")
        kinds = {np.dtype(d).kind for d in src.dtypes}
        if not kinds <= {"u", "i", "f"} or "complex" in src.dtypes[0]:
            raise RasterInputError(
                f"{name} has unsupported data type {src.dtypes[0]}; convert it to an integer or "
                "float type (e.g. gdal_translate -ot Float32)"
            )
        t = src.transform
        x0, y0, x1, y1 = src.bounds
        if abs(t.determinant) == 0 or not all(map(math.isfinite, (x0, y0, x1, y1))):
            raise RasterInputError(f"{name} has a degenerate geotransform {tuple(t)[:6]}")
        if not (x1 > x0 and y1 > y0):
            raise RasterInputError(f"{name} has an empty extent {tuple(src.bounds)}")
        if src.crs.is_geographic and (x0 < -180.0 - 1e-9 or x1 > 180.0 + 1e-9):
            # GDAL's warper wraps longitudes into [-180, 180], so pixels past the antimeridian
            # would silently read as no data
            raise RasterInputError(
                f"{name} extends past the antimeridian (longitudes {x0:g}..{x1:g}); reproject it "
                "to a projected CRS (e.g. its UTM zone with gdalwarp -t_srs) or split it at 180°"
            )

    def _check_explicit(self, bands: Sequence[int] | None) -> tuple[int, ...] | None:
        if bands is None:
            return None
        out = tuple(int(b) for b in bands)
        bad = [b for b in out if not 1 <= b <= self.band_count]
        if not out or bad:
            raise RasterInputError(
                f"{self.path.name}: bands={list(bands)} is invalid; the raster has bands "
                f"1..{self.band_count} ({', '.join(self.band_names)})"
            )
        return out

    def _scaling(self, src: Any, scale: str | float) -> tuple[np.ndarray, np.ndarray, str]:
        """Per-band (offset, span) so that ``(raw - offset) / span`` is the model value."""
        n = src.count
        if isinstance(scale, (int, float)) and not isinstance(scale, bool):
            if not (scale > 0 and math.isfinite(scale)):
                raise RasterInputError(f"scale must be a positive number, got {scale}")
            return np.zeros(n), np.full(n, float(scale)), f"divide:{float(scale):g}"
        if scale == "dtype" and src.dtypes[0] == "uint8":
            return np.zeros(n), np.full(n, 255.0), "uint8/255"
        if scale not in ("dtype", "percentile"):
            raise RasterInputError(
                f"scale must be 'dtype', 'percentile' or a number, got {scale!r}"
            )
        lo, hi = self._percentiles(src)
        desc = "percentile2-98:" + ",".join(
            f"{a:.6g}..{b:.6g}" for a, b in zip(lo, hi, strict=False)
        )
        return lo, np.maximum(hi - lo, 1e-12), desc

    def _percentiles(self, src: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-band 2 and 98 % percentiles from one decimated read of the whole raster."""
        f = max(src.width, src.height) / _STATS_MAX_SIDE
        shape = (
            src.count,
            max(1, round(src.height / max(f, 1))),
            max(1, round(src.width / max(f, 1))),
        )
        data = src.read(out_shape=shape, masked=True)
        if self._nodata is not None:
            data = np.ma.masked_equal(data, self._nodata)
        lo, hi = np.zeros(src.count), np.ones(src.count)
        empty = 0
        for b in range(src.count):
            v = data[b].compressed().astype(np.float64)
            v = v[np.isfinite(v)]
            if v.size == 0:
                empty += 1
                continue
            lo[b], hi[b] = np.percentile(v, _PERCENTILES)
            if hi[b] <= lo[b]:
                hi[b] = lo[b] + 1.0  # a constant band maps to 0 instead of dividing by zero
        if empty == src.count:
            raise RasterInputError(f"{self.path.name} holds no valid pixels (all no data)")
        return lo, hi

    def check_bands(self, wanted: Sequence[str]) -> list[int]:
        """The 1-based band numbers used for ``wanted``; RasterInputError if they do not fit."""
        return resolve_bands(wanted, self.band_names, self._alpha, self._explicit, self.path.name)

    # -- reading ----------------------------------------------------------------------------
    def _vrt(self, grid_crs: str, gsd: float, bounds: Bounds) -> Any:
        """This thread's WarpedVRT whose pixel lattice matches the tile lattice of ``bounds``."""
        phase = tuple(
            int(round((v / gsd - math.floor(v / gsd)) * 1e6)) % 1_000_000 for v in bounds[:2]
        )
        key = (grid_crs, gsd, phase)
        cache = getattr(self._local, "vrts", None)
        reads = getattr(self._local, "reads", 0) + 1
        if cache is None or reads > _REOPEN_EVERY:
            # closing the datasets frees the GDAL blocks they cached: memory stays bounded
            # whatever the raster size and whatever GDAL_CACHEMAX the host application set
            self._release(cache or {})
            cache, reads = {}, 1
            self._local.vrts = cache
        self._local.reads = reads
        if key not in cache:
            cache[key] = self._open_vrt(grid_crs, gsd, phase[0] * gsd / 1e6, phase[1] * gsd / 1e6)
        return cache[key]

    def _release(self, cache: dict) -> None:
        for vrt in cache.values():
            src = vrt.src_dataset
            with self._lock:
                self._handles = [h for h in self._handles if h is not vrt and h is not src]
            vrt.close()
            src.close()

    def _open_vrt(self, grid_crs: str, gsd: float, px: float, py: float) -> Any:
        import rasterio
        from affine import Affine
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import transform_bounds

        src = rasterio.open(self.path)
        x0, y0, x1, y1 = transform_bounds(src.crs, grid_crs, *src.bounds, densify_pts=21)
        # snap outwards onto the lattice x = px + k * gsd, with a one-pixel margin
        left = px + (math.floor((x0 - px) / gsd) - 1) * gsd
        bottom = py + (math.floor((y0 - py) / gsd) - 1) * gsd
        width = math.ceil((x1 - left) / gsd) + 1
        height = math.ceil((y1 - bottom) / gsd) + 1
        top = bottom + height * gsd
        kw: dict[str, Any] = {}
        if self._alpha:
            kw["src_alpha"] = self._alpha[0]
        if self._nodata is not None:
            kw["src_nodata"] = self._nodata
        vrt = WarpedVRT(
            src,
            crs=grid_crs,
            transform=Affine(gsd, 0.0, left, 0.0, -gsd, top),
            width=width,
            height=height,
            resampling=self._resampling,
            dtype="float32",
            nodata=_FILL,
            **kw,
        )
        with self._lock:
            self._handles += [vrt, src]
        return vrt

    def read_tile(
        self, bounds: Bounds, grid_crs: str, gsd: float, size: int, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), size, size]`` of ``bounds`` (grid CRS) at ``gsd``, NaN = no data."""
        idx = self.check_bands(bands)
        vrt = self._vrt(grid_crs, gsd, bounds)
        out = np.full((len(idx), size, size), np.nan, dtype=np.float32)
        win = _window(vrt.transform, bounds, gsd)
        src_win, dst = _clip(win, vrt.width, vrt.height, size)
        if src_win is not None:
            from rasterio.errors import RasterioIOError
            from rasterio.windows import Window

            r0, r1, c0, c1 = dst
            try:
                out[:, r0:r1, c0:c1] = vrt.read(
                    idx,
                    window=Window(*src_win),
                    out_shape=(len(idx), r1 - r0, c1 - c0),
                    resampling=self._resampling,
                )
            except RasterioIOError as e:  # a truncated or damaged file fails only when read
                raise RasterInputError(
                    f"{self.path.name} cannot be read at {tuple(round(v, 2) for v in bounds)} "
                    f"(truncated or corrupt file?): {e.__cause__ or e}"
                ) from None
            out[out <= _FILL] = np.nan
        b = [i - 1 for i in idx]
        lo = self._lo[b].astype(np.float32)[:, None, None]
        span = self._span[b].astype(np.float32)[:, None, None]
        out = (out - lo) / span
        if self.scaling.startswith("percentile"):
            np.clip(out, 0.0, 1.0, out=out)  # NaN stays NaN
        return out

    def fingerprint(self) -> str:
        """sha256 of path, size, mtime, CRS, transform, band selection, nodata and scaling."""
        d = dict(self._ident, bands=self._explicit, nodata=self._nodata, scaling=self.scaling)
        d["resampling"] = self._resampling.name
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def close(self) -> None:
        """Close every dataset opened by any thread."""
        with self._lock:
            handles, self._handles = self._handles, []
        for h in handles:
            h.close()
        self._local = threading.local()

    def __enter__(self) -> RasterioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _band_name(i: int, description: str | None, colorinterp: Any) -> str:
    if description:
        return description
    if colorinterp.name in ("red", "green", "blue", "alpha"):
        return colorinterp.name
    return f"band{i + 1}"


def _file_ident(path: Path, src: Any) -> dict[str, Any]:
    st = os.stat(path)
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "crs": src.crs.to_wkt(),
        "transform": list(src.transform)[:6],
        "shape": [src.count, src.height, src.width],
    }


def _window(transform: Any, bounds: Bounds, gsd: float) -> tuple[float, float, float, float]:
    """(col_off, row_off, width, height) of ``bounds`` in VRT pixels, snapped when integral."""
    minx, miny, maxx, maxy = bounds
    vals = (
        (minx - transform.c) / gsd,
        (transform.f - maxy) / gsd,
        (maxx - minx) / gsd,
        (maxy - miny) / gsd,
    )
    return tuple(float(round(v)) if abs(v - round(v)) < 1e-6 else v for v in vals)


def _clip(
    win: tuple[float, float, float, float], width: int, height: int, size: int
) -> tuple[tuple[float, float, float, float] | None, tuple[int, int, int, int]]:
    """Intersect a window with the VRT; return it and the output rows/cols it fills."""
    c, r, w, h = win
    c0, r0 = max(c, 0.0), max(r, 0.0)
    c1, r1 = min(c + w, float(width)), min(r + h, float(height))
    if c1 <= c0 or r1 <= r0:
        return None, (0, 0, 0, 0)
    sx, sy = size / w, size / h
    dst = (round((r0 - r) * sy), round((r1 - r) * sy), round((c0 - c) * sx), round((c1 - c) * sx))
    if dst[1] <= dst[0] or dst[3] <= dst[2]:
        return None, (0, 0, 0, 0)
    return (c0, r0, c1 - c0, r1 - r0), dst


def choose_grid_crs(reader: RasterReader) -> str:
    """The raster's CRS when it is projected in metres, else the UTM zone of its centre."""
    from pyproj import CRS, Transformer

    crs = CRS.from_wkt(reader.crs)
    x0, y0, x1, y1 = reader.bounds
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise RasterInputError("cannot locate the raster's centre on the globe to pick a UTM zone")
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        # A "metre" CRS is only a true-scale grid when its scale factor is ~1 here: Web Mercator
        # (XYZ/WMS layers) is 1/cos(lat) off, so such rasters are tiled in their UTM zone instead.
        if _true_scale(crs, lon, lat):
            code = crs.to_epsg(min_confidence=100)
            return f"EPSG:{code}" if code else reader.crs
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _true_scale(crs, lon: float, lat: float, tolerance: float = 0.01) -> bool:
    from pyproj import Proj

    try:
        f = Proj(crs).get_factors(lon, lat)
    except Exception:  # noqa: BLE001 - pyproj raises several types for odd CRSs; assume true scale
        return True
    scale = max(abs(f.meridional_scale - 1.0), abs(f.parallel_scale - 1.0))
    return not math.isfinite(scale) or scale <= tolerance


def raster_gsd_m(reader: RasterReader, grid_crs: str) -> float:
    """The raster's own pixel size expressed in the grid CRS (metres), rounded to 4 digits."""
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = reader.bounds
    gx0, gy0, gx1, gy1 = transform_bounds(reader.crs, grid_crs, x0, y0, x1, y1, densify_pts=21)
    nx, ny = (x1 - x0) / reader.res[0], (y1 - y0) / reader.res[1]
    gsd = min((gx1 - gx0) / nx, (gy1 - gy0) / ny)
    if not (gsd > 0 and math.isfinite(gsd)):
        raise RasterInputError(f"cannot derive a ground sample distance from the raster ({gsd})")
    return float(f"{gsd:.4g}")  # stable across readers that round bounds differently


def grid_for_raster(
    reader: RasterReader,
    preprocess: Preprocess,
    stride_px: int | None = None,
    extent: Bounds | None = None,
    extent_crs: str | None = None,
    max_tiles: int = DEFAULT_MAX_TILES,
) -> TileGrid:
    """The tile grid for embedding ``reader`` with an encoder of ``preprocess``.

    Args:
        reader: the raster.
        preprocess: the encoder's preprocessing (``size`` and ``gsd_m``; 0 = the raster's GSD).
        stride_px: step between tiles in pixels (default: ``size``, no overlap).
        extent: the area to embed (default: the whole raster); clipped to the raster.
        extent_crs: CRS of ``extent`` (default: the raster's CRS).
        max_tiles: refuse grids with more tiles than this.
    """
    from rasterio.warp import transform_bounds

    crs = choose_grid_crs(reader)
    gsd = preprocess.gsd_m if preprocess.gsd_m > 0 else raster_gsd_m(reader, crs)
    full = transform_bounds(reader.crs, crs, *reader.bounds, densify_pts=21)
    box = full
    if extent is not None:
        e = transform_bounds(extent_crs or reader.crs, crs, *extent, densify_pts=21)
        box = (max(e[0], full[0]), max(e[1], full[1]), min(e[2], full[2]), min(e[3], full[3]))
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RasterInputError(
                f"the extent {tuple(extent)} does not overlap the raster (raster bounds "
                f"{tuple(round(v, 6) for v in reader.bounds)} in its own CRS)"
            )
    return TileGrid.for_extent(crs, gsd, preprocess.size, stride_px, box, max_tiles=max_tiles)
