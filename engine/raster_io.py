"""Raster input: the small reader protocol, its rasterio implementation and grid selection.

A reader hands out chips of a raster, resampled onto the tile grid: ``read_tile`` returns
float32 ``[C, size, size]`` scaled to [0, 1] (or metres for a DSM read with ``scale=1.0``), NaN
where the source has no data or does not reach; ``read_window`` returns a block of neighbouring
tiles in one read. Reads are windowed through a ``rasterio.vrt.WarpedVRT`` in the grid CRS at
the grid GSD, so a chip costs the pixels of its own window and never a whole raster. The VRT's
pixel lattice is snapped to the tile lattice, so every tile is an integer window, read the same
way whatever extent it belongs to (extent invariance). When the file already is in the grid CRS
at the grid GSD, the warper is skipped: pixels are copied (lattices aligned) or shifted by a
constant sub-pixel offset with GDAL's own bilinear arithmetic, several times faster and equal to
the warper's output (bitwise on every raster tested).
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
from .native_read import _Native, _native_read, _native_source, _phase, _pixels, _split

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
_STATS_MAX_SIDE = 1024  # long side of the decimated read that gives the percentile stretch
_REOPEN_PIXELS = 64 * 256 * 256  # pixels a thread reads before reopening its datasets


class RasterReader(Protocol):
    """What the engine needs from a raster. The plugin implements it over a QGIS data provider.

    A reader may also offer ``read_window(bounds, grid_crs, gsd, bands)``: the pixels of a
    block of neighbouring tiles at once (see :meth:`RasterioReader.read_window`); the embedding
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
            self._source = _native_source(src, self._alpha, nodata)
        self.fast = bool(fast)
        self._plans: dict[tuple, _Native | None] = {}
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
    def _datasets(self, cost: int) -> dict:
        """This thread's open datasets, reopened after ``_REOPEN_PIXELS`` pixels were read."""
        cache = getattr(self._local, "cache", None)
        read = getattr(self._local, "read", 0) + cost
        if cache is None or read > _REOPEN_PIXELS:
            # closing the datasets frees the GDAL blocks they cached: memory stays bounded
            # whatever the raster size and whatever GDAL_CACHEMAX the host application set
            self._release(cache or {})
            cache, read = {}, cost
            self._local.cache = cache
        self._local.read = read
        return cache

    def _vrt(self, grid_crs: str, gsd: float, bounds: Bounds, cost: int) -> Any:
        """This thread's WarpedVRT whose pixel lattice matches the tile lattice of ``bounds``."""
        key = (grid_crs, gsd, _phase(bounds, gsd))
        cache = self._datasets(cost)
        if key not in cache:
            px, py = (p * gsd / 1e6 for p in key[2])
            cache[key] = self._open_vrt(grid_crs, gsd, px, py)
        return cache[key]

    def _release(self, cache: dict) -> None:
        for ds in cache.values():
            src = getattr(ds, "src_dataset", ds)
            with self._lock:
                self._handles = [h for h in self._handles if h is not ds and h is not src]
            ds.close()
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

    def _native_plan(self, grid_crs: str, gsd: float, bounds: Bounds) -> _Native | None:
        """How to read the lattice of ``bounds`` straight from the file, or None to warp.

        Only when the file is in the grid CRS at the grid GSD, unrotated: then GDAL's warper
        reduces to a copy (lattice aligned) or a constant sub-pixel shift, which
        :func:`_native_read` computes the way GDAL does, at a fraction of its cost.
        """
        key = (grid_crs, gsd, _phase(bounds, gsd))
        if key not in self._plans:
            self._plans[key] = self._make_plan(grid_crs, gsd, key[2]) if self.fast else None
        return self._plans[key]

    def _make_plan(self, grid_crs: str, gsd: float, phase: tuple[int, int]) -> _Native | None:
        from rasterio.crs import CRS

        s = self._source
        t = s["transform"]
        if s["masks"] is None or t.b != 0 or t.d != 0 or CRS.from_user_input(grid_crs) != s["crs"]:
            return None
        if abs(t.a - gsd) > 1e-9 * gsd or abs(-t.e - gsd) > 1e-9 * gsd:
            return None
        # source pixel coordinates of the lattice point (px, py): the same for every window
        ax = (phase[0] * gsd / 1e6 - t.c) / gsd
        ay = (t.f - phase[1] * gsd / 1e6) / gsd
        ix, fx = _split(ax)
        iy, fy = _split(ay)
        shifted = fx != 0.0 or fy != 0.0
        if shifted and self._resampling.name not in ("bilinear", "nearest"):
            return None
        if not shifted and self._resampling.name not in ("bilinear", "nearest", "average"):
            return None
        return _Native(phase[0] * gsd / 1e6, phase[1] * gsd / 1e6, ix, iy, fx, fy)

    def read_window(
        self, bounds: Bounds, grid_crs: str, gsd: float, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), h, w]`` of ``bounds`` (grid CRS) at ``gsd``, NaN = no data.

        One read for a block of tiles: ``h`` and ``w`` are the extent in pixels, which must be
        whole. A tile cut out of the window equals :meth:`read_tile` of that tile: bitwise,
        since both go through the same position-independent read.
        """
        idx = self.check_bands(bands)
        h, w = _pixels(bounds, gsd)
        if h < 1 or w < 1 or h != round(h) or w != round(w):
            raise RasterInputError(
                f"read_window needs bounds that are a whole number of {gsd:g}-unit pixels, got "
                f"{tuple(round(v, 3) for v in bounds)}"
            )
        return self._scale(self._read_raw(bounds, grid_crs, gsd, idx, int(h), int(w)), idx)

    def read_tile(
        self, bounds: Bounds, grid_crs: str, gsd: float, size: int, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), size, size]`` of ``bounds`` (grid CRS) at ``gsd``, NaN = no data."""
        idx = self.check_bands(bands)
        if _pixels(bounds, gsd) == (size, size):
            return self._scale(self._read_raw(bounds, grid_crs, gsd, idx, size, size), idx)
        # a tile at another pixel size than gsd: GDAL resamples the window to size x size
        return self._scale(self._read_warped(bounds, grid_crs, gsd, idx, size, size), idx)

    def _read_raw(
        self, bounds: Bounds, grid_crs: str, gsd: float, idx: list[int], h: int, w: int
    ) -> np.ndarray:
        plan = self._native_plan(grid_crs, gsd, bounds)
        if plan is None:
            return self._read_warped(bounds, grid_crs, gsd, idx, h, w)
        src = self._datasets(h * w).get("src")
        if src is None:
            src = self._open_source()
        # the window's top-left pixel in lattice steps from (px, py), then in source pixels
        col = round((bounds[0] - plan.px) / gsd) + plan.ix
        row = plan.iy - round((bounds[3] - plan.py) / gsd)
        from rasterio.errors import RasterioIOError

        try:
            return _native_read(src, self._source, idx, row, col, h, w, plan, self._resampling)
        except RasterioIOError as e:
            raise self._read_error(bounds, e) from None

    def _open_source(self) -> Any:
        import rasterio

        src = rasterio.open(self.path)
        self._datasets(0)["src"] = src
        with self._lock:
            self._handles.append(src)
        return src

    def _read_warped(
        self, bounds: Bounds, grid_crs: str, gsd: float, idx: list[int], h: int, w: int
    ) -> np.ndarray:
        """Raw values of ``bounds`` through this thread's WarpedVRT, resampled to ``h`` x ``w``."""
        vrt = self._vrt(grid_crs, gsd, bounds, h * w)
        out = np.full((len(idx), h, w), np.nan, dtype=np.float32)
        src_win, dst = _clip(_window(vrt.transform, bounds, gsd), vrt.width, vrt.height, h, w)
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
            except RasterioIOError as e:
                raise self._read_error(bounds, e) from None
            out[out <= _FILL] = np.nan
        return out

    def _read_error(self, bounds: Bounds, e: Exception) -> RasterInputError:
        """A truncated or damaged file fails only when read: say where, and what to suspect."""
        return RasterInputError(
            f"{self.path.name} cannot be read at {tuple(round(v, 2) for v in bounds)} "
            f"(truncated or corrupt file?): {e.__cause__ or e}"
        )

    def _scale(self, out: np.ndarray, idx: list[int]) -> np.ndarray:
        b = [i - 1 for i in idx]
        lo = self._lo[b].astype(np.float32)[:, None, None]
        span = self._span[b].astype(np.float32)[:, None, None]
        out -= lo
        out /= span
        if self.scaling.startswith("percentile"):
            np.clip(out, 0.0, 1.0, out=out)  # NaN stays NaN
        return out

    def fingerprint(self) -> str:
        """sha256 of path, size, mtime, CRS, transform, band selection, nodata and scaling."""
        d = dict(self._ident, bands=self._explicit, nodata=self._nodata, scaling=self.scaling)
        d["resampling"] = self._resampling.name
        if self.fast:  # native reads may differ from the warper's in the last float32 bit
            d["read"] = "native-1"
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
