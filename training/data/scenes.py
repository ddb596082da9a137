"""Images of a place (one per date) as model bands on one metric grid, with cloud and fill masks.

A :class:`View` says where each model band's pixels are: one band of a multi-band file, or one
file per band (Sentinel-2 and Landsat ship a file per band, at 10, 20 or 60 m), several files
for a mosaic (the first valid pixel wins), and an optional quality band (Landsat fmask or the
Landsat 8 QA band) whose cloud, shadow and fill pixels become no data. :func:`load_view` warps
the whole view once onto the area's grid (rasterio ``WarpedVRT``) and scales it to model values
by the view's sensor (:mod:`.sensors`), so chips, shifted views and masks are array slices.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NodataShadowWarning
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from engine.errors import RasterInputError
from engine.grid import TileGrid
from engine.raster.sensors import MODEL_BANDS, Sensor

MASK_KINDS = ("fmask", "l8_bqa_pre")


@dataclass(frozen=True)
class BandFile:
    """One band of one raster file."""

    path: Path
    index: int = 1  # 1-based band number in the file
    crs: str | None = None  # the file's CRS when GDAL cannot read it (e.g. a netCDF attribute)


@dataclass
class View:
    """One image of a place: the files of each model band, a date and an optional QA mask."""

    bands: dict[str, list[BandFile]]  # model band -> file(s); several files form a mosaic
    date: str = ""  # ISO date (or year) of the acquisition; "" when the file does not say
    mask: list[BandFile] = field(default_factory=list)  # QA band(s), same mosaic order
    mask_kind: str = ""  # one of MASK_KINDS when mask is given


def view_of_file(path: Path, names: Sequence[str], date: str = "") -> View:
    """A view of one multi-band file whose bands are ``names`` in order ('alpha'/'-' skipped)."""
    bands = {
        n: [BandFile(Path(path), i + 1)]
        for i, n in enumerate(names)
        if n in MODEL_BANDS
    }  # fmt: skip
    return View(bands, date)


def view_files(v: View) -> list[Path]:
    """Every file a view reads."""
    return [b.path for files in v.bands.values() for b in files] + [b.path for b in v.mask]


@dataclass
class Grid:
    """The area's metric grid: CRS, the engine's tile lattice and the full raster window."""

    crs: CRS
    grid: TileGrid
    transform: Affine
    width: int
    height: int


def open_raster(path: Path) -> rasterio.DatasetReader:
    """Open a raster, with a clear error for a missing or unreadable file."""
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise RasterInputError(f"cannot open raster {path}: {e}") from None


def _src_crs(src: rasterio.DatasetReader, f: BandFile) -> CRS:
    """The file's CRS: the override of ``f``, else the file's own (refused when missing)."""
    if f.crs:
        return CRS.from_user_input(f.crs)
    if src.crs is None:
        raise RasterInputError(f"{f.path} has no CRS; assign one (e.g. with gdal_edit) first")
    return CRS.from_user_input(src.crs)


def _metric_crs(src: rasterio.DatasetReader, f: BandFile) -> CRS:
    """The file's CRS when projected in metres, else the UTM zone of its centre."""
    crs = _src_crs(src, f)
    if crs.is_projected:
        factor = rasterio.crs.CRS.from_wkt(crs.to_wkt()).linear_units_factor[1]
        op = crs.coordinate_operation
        method = op.method_name.lower() if op is not None else ""
        # (Web) Mercator metres are not ground metres (1.26 x at 38 degrees): use UTM instead.
        mercator = "mercator" in method and "transverse" not in method
        if abs(factor - 1.0) < 1e-9 and not mercator:
            return crs
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        (src.bounds.left + src.bounds.right) / 2, (src.bounds.top + src.bounds.bottom) / 2
    )
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1)


def target_grid(paths: Iterable[Path | BandFile], gsd: float, chip: int, stride: int) -> Grid:
    """One grid over the union of ``paths`` (the first file's metric CRS) at ``gsd``."""
    files = [p if isinstance(p, BandFile) else BandFile(Path(p)) for p in paths]
    with open_raster(files[0].path) as src:
        crs = _metric_crs(src, files[0])
    boxes = []
    for f in files:
        with open_raster(f.path) as src:
            boxes.append(transform_bounds(_src_crs(src, f), crs, *src.bounds))
    b = np.array(boxes)
    bounds = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    grid = TileGrid.for_extent(crs.to_string(), gsd, chip, stride, bounds)
    minx, _, _, maxy = grid.tile_bounds(0, 0)
    w, h = (grid.cols - 1) * stride + chip, (grid.rows - 1) * stride + chip
    return Grid(crs, grid, Affine(gsd, 0, minx, 0, -gsd, maxy), w, h)


def wgs84_bounds(files: Iterable[BandFile]) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of the union of the files' extents."""
    boxes = []
    for f in files:
        with open_raster(f.path) as src:
            boxes.append(transform_bounds(_src_crs(src, f), "EPSG:4326", *src.bounds))
    if not boxes:
        raise RasterInputError("no files to take bounds from")
    b = np.array(boxes)
    return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))


def _resampling(src: rasterio.DatasetReader, crs: CRS, gsd: float, categorical: bool) -> Resampling:
    if categorical:
        return Resampling.nearest  # QA bits must not be averaged
    res = max(abs(src.res[0]), abs(src.res[1]))
    if crs.is_geographic:
        res *= 111_320.0
    # Averaging when downsampling avoids aliasing; bilinear when upsampling.
    return Resampling.average if res < gsd * 0.7 else Resampling.bilinear


def warp_band(
    bf: BandFile, g: Grid, nodata: float | None = None, categorical: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One band warped onto the whole grid: (float32 values, valid mask).

    Pixels outside the file, the file's fill value (else ``nodata``) and pixels an alpha band
    masks out are invalid.
    """
    with open_raster(bf.path) as src:
        if not 1 <= bf.index <= src.count:
            raise RasterInputError(f"{bf.path} has {src.count} band(s), not band {bf.index}")
        # The file's own fill value wins; the sensor's covers files that declare none.
        nd = src.nodata if src.nodata is not None else nodata
        crs = _src_crs(src, bf)
        kw = dict(crs=g.crs, transform=g.transform, width=g.width, height=g.height,
                  resampling=_resampling(src, crs, g.transform.a, categorical),
                  src_crs=crs)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NodataShadowWarning)
            if nd is not None:
                with WarpedVRT(src, src_nodata=nd, nodata=nd, **kw) as vrt:
                    a = vrt.read(bf.index, masked=True)
                return a.data.astype(np.float32), ~np.ma.getmaskarray(a)
            # Without a fill value, a warped view calls everything valid: an alpha band marks
            # what lies outside the file (the file's own alpha band is warped along; else one
            # is added).
            own_alpha = ColorInterp.alpha in src.colorinterp
            with WarpedVRT(src, add_alpha=not own_alpha, **kw) as vrt:
                alpha = vrt.colorinterp.index(ColorInterp.alpha) + 1
                return vrt.read(bf.index).astype(np.float32), vrt.read(alpha) > 0


def _mosaic(files: list[BandFile], g: Grid, nodata, categorical=False):
    """Warp each file; the first valid pixel wins."""
    out, valid = warp_band(files[0], g, nodata, categorical)
    for bf in files[1:]:
        if valid.all():
            break
        a, ok = warp_band(bf, g, nodata, categorical)
        fill = ~valid & ok
        out[fill], valid = a[fill], valid | ok
    return out, valid


def qa_valid(qa: np.ndarray, kind: str) -> np.ndarray:
    """Clear pixels of a QA band: no cloud, cloud shadow or fill.

    ``fmask`` (CFmask classes): 0 clear land, 1 water and 3 snow are clear; 2 shadow, 4 cloud
    and 255 fill are not. ``l8_bqa_pre`` (Landsat 8 pre-collection BQA): bit 0 fill, bits 14-15
    cloud confidence and 12-13 cirrus confidence; 'yes' (3) on either is cloud.
    """
    q = qa.astype(np.int64)
    if kind == "fmask":
        return np.isin(q, (0, 1, 3))
    if kind == "l8_bqa_pre":
        return ((q & 1) == 0) & (((q >> 14) & 3) != 3) & (((q >> 12) & 3) != 3)
    raise RasterInputError(f"unknown QA mask kind {kind!r}; use one of {MASK_KINDS}")


@dataclass
class LoadedView:
    """A view on the grid: model values [bands, H, W] (NaN = no data), band names and date."""

    data: np.ndarray
    bands: tuple[str, ...]
    date: str
    quality: float = 1.0  # with a QA mask: share of clear, snow-free pixels (orders the dates)


def load_view(v: View, g: Grid, sensor: Sensor) -> LoadedView:
    """Warp a view's bands onto the grid, scale them to model values and apply its QA mask."""
    names = tuple(b for b in MODEL_BANDS if b in v.bands)
    if not names:
        raise RasterInputError(f"a view of {view_files(v)[:1]} names none of {MODEL_BANDS}")
    out = np.empty((len(names), g.height, g.width), np.float32)
    ok = np.zeros((g.height, g.width), bool)
    for k, name in enumerate(names):
        raw, valid = _mosaic(v.bands[name], g, sensor.nodata)
        out[k] = sensor.to_model(raw, name)
        # As GDAL's dataset mask: no data only where every band is (a 0 in one band of an
        # 8-bit render, e.g. NIR over water, is a value).
        ok |= valid
    quality = 1.0
    if v.mask:
        qa, qvalid = _mosaic(v.mask, g, None, categorical=True)
        ok &= qvalid & qa_valid(qa, v.mask_kind)
        snow = (qa == 3) if v.mask_kind == "fmask" else np.zeros_like(ok)
        quality = float((ok & ~snow).sum() / max(qvalid.sum(), 1))
    out[:, ~ok] = np.nan
    return LoadedView(out, names, v.date, quality)


def load_height(path: Path, g: Grid) -> np.ndarray:
    """A DSM or DEM warped onto the grid, in metres (NaN = no data)."""
    a, valid = warp_band(BandFile(Path(path)), g)
    a[~valid] = np.nan
    return a
