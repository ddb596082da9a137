"""Building samples from orthophoto / satellite rasters (+ DSM or DEM + OSM) at a fixed GSD.

Every input raster is reprojected on the fly (rasterio ``WarpedVRT``) onto one metric grid:
the raster's own CRS when it is projected in metres, else the UTM zone of its centre. Chips
follow the engine's anchored :class:`engine.grid.TileGrid`, so training chips and inference
tiles are cut the same way. Several images of one scene (dates) become extra positive views of
the same sample. The DSM is real when a surface model is given, else derived as DEM + OSM
building heights. Text and land-use labels are derived from what the chip really shows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.errors import NodataShadowWarning
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely import STRtree, box

from engine.errors import RasterInputError
from engine.grid import TileGrid

from .dsm import derive_dsm, osm_heights, rasterize_heights, read_vector
from .landuse import cover_fractions, derive_label
from .render_street import render_street
from .text import TextContext, describe
from .writer import SampleRecord

log = logging.getLogger(__name__)
AERIAL_BANDS = ("red", "green", "blue", "nir")  # the aerial tower's band order


@dataclass
class RasterSource:
    """One area to chip: images of one scene (one per date) and optional height data."""

    area_id: str  # name of the area, used for splits and reports
    images: list[Path] = field(default_factory=list)  # same scene, several dates
    bands: tuple[str, ...] = AERIAL_BANDS  # source band names in order ("alpha"/"-" ignored)
    gsd_m: float = 5.0  # target ground sample distance in metres
    chip_px: int = 64  # chip side in pixels
    stride_px: int = 0  # step between chips (0 = chip_px; smaller overlaps, for small areas)
    value_max: float = 255.0  # source value that maps to 1.0
    dsm: Path | None = None  # a real surface model
    dem: Path | None = None  # terrain, for a derived DSM (with buildings)
    buildings: Path | None = None  # footprints (OSM tags or HEIGHT)
    buildings_layer: str | None = None
    poi_layers: tuple[str, ...] = ()  # layers of ``buildings`` whose names become text
    max_nodata: float = 0.05  # drop chips with more nodata than this
    pseudo_street: bool = False  # add a synthetic ground view rendered from the label
    max_chips: int = 0  # keep at most this many chips (0 = all), spread over the area


@dataclass
class _Grid:
    crs: CRS
    grid: TileGrid
    transform: Affine
    width: int
    height: int


def _open(path: Path) -> rasterio.DatasetReader:
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise RasterInputError(f"cannot open raster {path}: {e}") from None


def _target_grid(path: Path, gsd: float, chip: int, stride: int) -> _Grid:
    with _open(path) as src:
        if src.crs is None:
            raise RasterInputError(f"{path} has no CRS; assign one (e.g. with gdal_edit) first")
        crs = src.crs
        if not (crs.is_projected and abs(crs.linear_units_factor[1] - 1.0) < 1e-9):
            lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
                (src.bounds.left + src.bounds.right) / 2, (src.bounds.top + src.bounds.bottom) / 2
            )
            crs = CRS.from_epsg((32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1)
        bounds = transform_bounds(src.crs, crs, *src.bounds)
    grid = TileGrid.for_extent(crs.to_string(), gsd, chip, stride, bounds)
    minx, _, _, maxy = grid.tile_bounds(0, 0)
    tr = Affine(gsd, 0, minx, 0, -gsd, maxy)
    w, h = (grid.cols - 1) * stride + chip, (grid.rows - 1) * stride + chip
    return _Grid(CRS.from_user_input(crs), grid, tr, w, h)


def _vrt(stack: ExitStack, path: Path, g: _Grid, gsd: float) -> WarpedVRT:
    src = stack.enter_context(_open(path))
    coarse = max(abs(src.res[0]), abs(src.res[1]))
    native = CRS.from_user_input(src.crs)
    if native.is_geographic:
        coarse *= 111_320.0
    # Averaging when downsampling avoids aliasing; bilinear when upsampling.
    rs = Resampling.average if coarse < gsd * 0.7 else Resampling.bilinear
    return stack.enter_context(
        WarpedVRT(
            src, crs=g.crs, transform=g.transform, width=g.width, height=g.height, resampling=rs
        )
    )


def _read_image(vrt: WarpedVRT, src: RasterSource, win: Window) -> np.ndarray | None:
    """The chip in AERIAL_BANDS order in [0, 1] (NaN nodata / missing band), or None if bad."""
    with warnings.catch_warnings():
        # With a nodata value the mask comes from it; the warning about a shadowed alpha
        # band is expected for warped views of nodata rasters.
        warnings.simplefilter("ignore", NodataShadowWarning)
        valid = vrt.dataset_mask(window=win) > 0
    if 1 - valid.mean() > src.max_nodata:
        return None
    out = np.full((len(AERIAL_BANDS), win.height, win.width), np.nan, np.float32)
    for k, name in enumerate(AERIAL_BANDS):
        if name in src.bands:
            band = vrt.read(src.bands.index(name) + 1, window=win).astype(np.float32)
            out[k] = np.where(valid, np.clip(band / src.value_max, 0, 1), np.nan)
    return out


def _read_height(vrt: WarpedVRT, win: Window, max_nodata: float) -> np.ndarray | None:
    a = vrt.read(1, window=win, masked=True).astype(np.float32).filled(np.nan)
    if np.isnan(a).mean() > max_nodata:
        return None
    return a


def _store_image(x: np.ndarray) -> np.ndarray:
    """uint8 when complete (4x smaller), float16 with NaN when a band or pixels are missing."""
    if np.isnan(x).any():
        return x.astype(np.float16)
    return (x * 255 + 0.5).astype(np.uint8)


class _Buildings:
    """Footprints in the chip grid's CRS, with heights and a spatial index."""

    def __init__(self, src: RasterSource, g: _Grid) -> None:
        vec = read_vector(src.buildings, src.buildings_layer, to_crs=g.crs.to_wkt())
        self.geoms = vec.geoms
        self.heights, _ = osm_heights(vec.fields, len(vec.geoms))
        self.tree = STRtree(self.geoms)
        self.pois: list[tuple[object, str]] = []
        for layer in src.poi_layers:
            pv = read_vector(src.buildings, layer, to_crs=g.crs.to_wkt())
            n = len(pv.geoms)
            names = pv.fields.get("name", [None] * n)
            kind = pv.fields.get("amenity", pv.fields.get("highway", [layer.rstrip("s")] * n))
            for geom, name, k in zip(pv.geoms, names, kind, strict=True):
                k = str(k or layer.rstrip("s"))
                if layer == "roads" and k not in ("track", "path", "footway", "steps"):
                    k = f"{k} road"  # OSM highway values read better as "<type> road"
                self.pois.append((geom, f"{name} ({k})" if name else k))
        self.poi_tree = STRtree([p[0] for p in self.pois]) if self.pois else None

    def in_box(self, b: tuple[float, float, float, float]) -> tuple[np.ndarray, list[str]]:
        """Indices of the footprints and names of the points of interest inside box ``b``."""
        q = box(*b)
        idx = self.tree.query(q, predicate="intersects")
        pois = []
        if self.poi_tree is not None:
            pois = [self.pois[i][1] for i in self.poi_tree.query(q, predicate="intersects")]
        return idx, pois


def _tile_order(g: _Grid, max_chips: int) -> list[tuple[int, int]]:
    tiles = [(r, c) for r in range(g.grid.rows) for c in range(g.grid.cols)]
    if max_chips and len(tiles) > max_chips:
        keep = np.linspace(0, len(tiles) - 1, max_chips).round().astype(int)
        tiles = [tiles[i] for i in keep]
    return tiles


def build_area(
    src: RasterSource,
    *,
    describe_place: Callable[[float, float], dict] | None = None,
    split_of: Callable[[float, float, float, int], str | None] = lambda *a: "train",
) -> Iterator[SampleRecord]:
    """Yield one sample per valid chip of ``src``.

    Args:
        src: the area's rasters and settings.
        describe_place: (lat, lon) -> {"place", "admin", "country"} for text (optional).
        split_of: (lat, lon, gsd_m, chip_px) -> split, e.g. a block split.

    Raises:
        RasterInputError: a raster without CRS, or no image / DSM / DEM at all.
    """
    first = (src.images or [p for p in (src.dsm, src.dem) if p])[:1]
    if not first:
        raise RasterInputError(f"area {src.area_id}: give at least one image, DSM or DEM")
    stride = src.stride_px or src.chip_px
    if not 1 <= stride <= src.chip_px:
        raise RasterInputError(f"area {src.area_id}: need 1 <= stride_px <= chip_px")
    g = _target_grid(first[0], src.gsd_m, src.chip_px, stride)
    to_geo = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    bld = _Buildings(src, g) if src.buildings else None
    with ExitStack() as stack:
        images = [_vrt(stack, p, g, src.gsd_m) for p in src.images]
        height = _vrt(stack, src.dsm or src.dem, g, src.gsd_m) if src.dsm or src.dem else None
        for r, c in _tile_order(g, src.max_chips):
            rec = _chip(src, g, images, height, bld, r, c, to_geo, describe_place, split_of)
            if rec is not None:
                yield rec


def _chip(src, g, images, height, bld, r, c, to_geo, describe_place, split_of):
    k, step = src.chip_px, src.stride_px or src.chip_px
    win = Window(c * step, r * step, k, k)
    views = [v for v in (_read_image(vrt, src, win) for vrt in images) if v is not None]
    dsm = _read_height(height, win, src.max_nodata) if height is not None else None
    tb = g.grid.tile_bounds(r, c)
    n_bld, pois, bheights = None, [], None
    if bld is not None:
        idx, pois = bld.in_box(tb)
        n_bld = len(idx)
        tr = Affine(src.gsd_m, 0, tb[0], 0, -src.gsd_m, tb[3])
        bheights = rasterize_heights(bld.geoms[idx], bld.heights[idx], tr, (k, k))
    derived = dsm is not None and src.dsm is None
    if derived and bheights is not None:
        dsm = derive_dsm(dsm, bheights)
    elif derived:
        derived, dsm = False, None  # a DEM alone is terrain, not a surface model
    if (images and not views) or dsm is None and not views:
        return None  # an area given by imagery keeps only chips that have imagery
    lon, lat = to_geo.transform((tb[0] + tb[2]) / 2, (tb[1] + tb[3]) / 2)
    return _record(src, views, dsm, derived, n_bld, pois, bheights, lat, lon, r, c,
                   describe_place, split_of)  # fmt: skip


def _record(src, views, dsm, derived, n_bld, pois, bheights, lat, lon, r, c, place, split_of):
    # Spectral cover needs red, green and NIR; RGB-only imagery gives no cover text.
    has_bands = views and not np.isnan(views[0][[0, 1, 3]]).all(axis=(1, 2)).any()
    cover = cover_fractions(views[0]) if has_bands else {}
    bcover = float((bheights > 0).mean()) if bheights is not None else None
    label = derive_label(cover, bcover)
    has_h = dsm is not None
    ctx = TextContext(
        cover=cover,
        elevation_m=float(np.nanmean(dsm)) if has_h else None,
        relief_m=float(np.nanpercentile(dsm, 95) - np.nanpercentile(dsm, 5)) if has_h else None,
        n_buildings=n_bld,
        amenities=pois,
        **(place(lat, lon) if place else {}),
    )
    prov = {"gps": "real", "aerial": "real", "text": "derived"}
    if dsm is not None:
        prov["dsm"] = "derived" if derived else "real"
    street = []
    if src.pseudo_street and label >= 0:
        rng = np.random.default_rng((r, c, len(src.area_id)))
        street = [(render_street(label, 64, rng) * 255 + 0.5).astype(np.uint8)]
        prov["streetview"] = "synthetic"
    return SampleRecord(
        sample_id=f"{src.area_id}-r{r:04d}c{c:04d}",
        lat=float(lat),
        lon=float(lon),
        area_id=src.area_id,
        split=split_of(float(lat), float(lon), src.gsd_m, src.chip_px),
        gsd_m=src.gsd_m,
        aerial=[_store_image(v) for v in views],
        streetview=street,
        dsm=dsm[None].astype(np.float32) if dsm is not None else None,
        text=describe(ctx),
        provenance=prov,
        landuse=label,
        landuse_provenance="derived" if label >= 0 else None,
    )
