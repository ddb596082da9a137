"""Building samples from orthophoto / satellite rasters (+ DSM or DEM + OSM) at a fixed GSD.

Every view of an area (one image per date, a file per band, or a mosaic) is warped once onto one
metric grid: the first file's CRS when it is projected in metres, else the UTM zone of its
centre. Chips follow the engine's anchored :class:`engine.grid.TileGrid`, so training chips and
inference tiles are cut the same way. Pixels become model values by the area's sensor
(:mod:`.sensors`); a chip stores only the model bands its sensor has. More views of each place
come cheaply: other dates of the same chip (positives), crops shifted by a random offset of up
to a quarter chip (``shift_views``), and a dense lattice (``stride_px`` < ``chip_px``). The DSM
is real when a surface model is given, else derived as DEM + OSM building heights. Text and
land-use labels come from what the chip really shows and from mapped polygons.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import Transformer
from shapely import STRtree, box

from engine.errors import RasterInputError
from engine.raster.sensors import Sensor, get_sensor

from .chip_record import ChipFacts, ChipViews, make_record
from .dsm import osm_heights, rasterize_heights, read_vector
from .polygon_labels import LabelLayer, PolygonLabels
from .scenes import (
    BandFile,
    Grid,
    LoadedView,
    View,
    load_height,
    load_view,
    target_grid,
    view_of_file,
    wgs84_bounds,
)
from .sensors import custom_sensor
from .writer import SampleRecord

log = logging.getLogger(__name__)
AERIAL_BANDS = ("red", "green", "blue", "nir")  # the default band order of a source file


@dataclass
class ObjectPoints:
    """Counted objects (e.g. annotated tree crowns) as points in ``crs``."""

    xy: np.ndarray  # [N, 2] map coordinates
    crs: str
    noun: str  # singular, e.g. "tree crown"


@dataclass
class RasterSource:
    """One area to chip: images of one scene (one per date) and optional height data."""

    area_id: str  # name of the area, used for splits and reports
    images: list[Path] = field(default_factory=list)  # same scene, several dates
    bands: tuple[str, ...] = AERIAL_BANDS  # source band names in order ("alpha"/"-" ignored)
    gsd_m: float = 5.0  # target ground sample distance in metres
    chip_px: int = 64  # chip side in pixels
    stride_px: int = 0  # step between chips (0 = chip_px; smaller overlaps, for small areas)
    value_max: float = 255.0  # source value that maps to 1.0 (when no sensor is named)
    dsm: Path | None = None  # a real surface model
    dem: Path | None = None  # terrain, for a derived DSM (with buildings)
    buildings: Path | None = None  # footprints (OSM tags or HEIGHT)
    buildings_layer: str | None = None
    poi_layers: tuple[str, ...] = ()  # layers of ``buildings`` whose names become text
    max_nodata: float = 0.05  # drop chips (views) with more nodata than this
    pseudo_street: bool = False  # add a synthetic ground view rendered from the label
    max_chips: int = 0  # keep at most this many chips (0 = all), spread over the area
    views: list[View] = field(default_factory=list)  # per-band / mosaic / QA views (+ images)
    dates: list[str] = field(default_factory=list)  # acquisition date of each of ``images``
    sensor: str = ""  # key in engine/sensors.json; "" = divide by value_max
    place: str = ""  # the place for reports and area counts (default: area_id)
    holdout: bool = False  # every sample goes to split "holdout"
    labels: list[LabelLayer] = field(default_factory=list)  # mapped polygons / points
    label_from_cover: bool = True  # derive labels from spectral cover where none is mapped
    shift_views: int = 0  # extra views per chip, shifted by up to a quarter chip
    max_views: int = 12  # date views kept per chip (spread over the dates)
    dem_dsm: str = ""  # a DEM alone becomes the DSM with this provenance ("" = no DSM)
    objects: ObjectPoints | None = None  # counted objects for the text
    info: dict = field(default_factory=dict)  # licence, source, notes for the data report

    def all_views(self) -> list[View]:
        """``views`` plus one view per file of ``images`` (with its date)."""
        dates = list(self.dates) + [""] * (len(self.images) - len(self.dates))
        return [
            view_of_file(p, self.bands, d) for p, d in zip(self.images, dates, strict=False)
        ] + list(self.views)

    def get_sensor(self) -> Sensor:
        """The sensor whose rule scales this area's pixels."""
        return get_sensor(self.sensor) if self.sensor else custom_sensor(self.value_max)

    def files(self) -> list[BandFile]:
        """The files that set the area's extent: the imagery, else the height model."""
        views = self.all_views()
        out = [b for v in views for b in next(iter(v.bands.values()))]
        return out or [BandFile(Path(p)) for p in (self.dsm, self.dem) if p][:1]

    def wgs84_bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the area's extent, from the file headers."""
        return wgs84_bounds(self.files())


class _Buildings:
    """Footprints in the chip grid's CRS, with heights and a spatial index."""

    def __init__(self, src: RasterSource, g: Grid) -> None:
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


@dataclass
class _Area:
    """An area loaded onto its grid: views, heights, labels, buildings, objects."""

    src: RasterSource
    g: Grid
    sensor: Sensor
    views: list[LoadedView]
    height: np.ndarray | None
    labels: list[PolygonLabels]
    bld: _Buildings | None
    objects: np.ndarray | None  # [N, 2] pixel (row, col) of counted objects
    to_geo: Transformer
    rng: np.random.Generator

    def bounds(self, y: int, x: int, k: int) -> tuple[float, float, float, float]:
        """Map bounds of the k x k chip whose top-left pixel is (y, x)."""
        t = self.g.transform
        return (t.c + x * t.a, t.f + (y + k) * t.e, t.c + (x + k) * t.a, t.f + y * t.e)


def _load_area(src: RasterSource) -> _Area:
    views = src.all_views()
    heights = [p for p in (src.dsm, src.dem) if p]
    if not views and not heights:
        raise RasterInputError(f"area {src.area_id}: give at least one image, DSM or DEM")
    stride = src.stride_px or src.chip_px
    if not 1 <= stride <= src.chip_px:
        raise RasterInputError(f"area {src.area_id}: need 1 <= stride_px <= chip_px")
    # The imagery (else the height model) sets the extent: a DEM often covers far more.
    g = target_grid(src.files(), src.gsd_m, src.chip_px, stride)
    sensor = src.get_sensor()
    objects = None
    if src.objects is not None:
        tf = Transformer.from_crs(src.objects.crs, g.crs, always_xy=True)
        x, y = tf.transform(src.objects.xy[:, 0], src.objects.xy[:, 1])
        col, row = ~g.transform @ (np.asarray(x), np.asarray(y))
        objects = np.stack([np.floor(row), np.floor(col)], 1)
    loaded = [load_view(v, g, sensor) for v in views]
    # Dates with a QA mask: the clearest, snow-free one first (the view evaluation reads).
    loaded.sort(key=lambda lv: -lv.quality)
    return _Area(
        src=src,
        g=g,
        sensor=sensor,
        views=loaded,
        height=load_height(src.dsm or src.dem, g) if heights else None,
        labels=[PolygonLabels(spec, g) for spec in src.labels],
        bld=_Buildings(src, g) if src.buildings else None,
        objects=objects,
        to_geo=Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True),
        rng=np.random.default_rng(zlib.crc32(src.area_id.encode())),
    )


def _window_ok(a: np.ndarray, max_nodata: float) -> bool:
    return a.size > 0 and float(np.isnan(a).any(axis=0).mean()) <= max_nodata


def _chip_views(area: _Area, y: int, x: int, k: int) -> ChipViews | None:
    """Valid date views of the chip, then shifted crops (random offsets), or None."""
    src = area.src
    good = [
        lv for lv in area.views
        if lv.data.shape[1] >= y + k and lv.data.shape[2] >= x + k
        and _window_ok(lv.data[:, y : y + k, x : x + k], src.max_nodata)
    ]  # fmt: skip
    if not good:
        return None
    good = [lv for lv in good if lv.bands == good[0].bands]  # one band set per sample
    if len(good) > src.max_views:  # the first date (evaluation's view) and a spread of others
        pick = np.sort(area.rng.choice(np.arange(1, len(good)), src.max_views - 1, replace=False))
        good = [good[0]] + [good[i] for i in pick]
    chips = [lv.data[:, y : y + k, x : x + k] for lv in good]
    dates = [lv.date for lv in good]
    for _ in range(src.shift_views):
        for _attempt in range(4):
            dy, dx = (int(v) for v in area.rng.integers(-(k // 4), k // 4 + 1, 2))
            lv = good[int(area.rng.integers(len(good)))]
            yy, xx = y + dy, x + dx
            if (dy, dx) == (0, 0) or min(yy, xx) < 0:
                continue
            a = lv.data[:, yy : yy + k, xx : xx + k]
            if a.shape[1:] == (k, k) and _window_ok(a, src.max_nodata):
                chips.append(a)
                dates.append(lv.date)
                break
    return ChipViews(chips, good[0].bands, dates)


def _heights(area: _Area, y: int, x: int, k: int, facts: ChipFacts) -> None:
    """The chip's DSM (real, DEM + buildings, or a DEM on its own) and building facts."""
    src = area.src
    dsm = None
    if area.height is not None:
        dsm = area.height[y : y + k, x : x + k].copy()
        if np.isnan(dsm).mean() > src.max_nodata:
            dsm = None
    bheights = None
    if area.bld is not None:
        b = area.bounds(y, x, k)
        idx, facts.pois = area.bld.in_box(b)
        facts.n_buildings = len(idx)
        tr = Affine(src.gsd_m, 0, b[0], 0, -src.gsd_m, b[3])
        bheights = rasterize_heights(area.bld.geoms[idx], area.bld.heights[idx], tr, (k, k))
        facts.building_cover = float((bheights > 0).mean())
    if dsm is None or src.dsm is not None:
        facts.dsm, facts.dsm_provenance = dsm, "real" if dsm is not None else None
    elif bheights is not None:
        facts.dsm, facts.dsm_provenance = (dsm + bheights).astype(np.float32), "derived"
    elif src.dem_dsm:
        facts.dsm, facts.dsm_provenance = dsm, src.dem_dsm
    # else: a DEM alone is terrain, not a surface model


def _chip_facts(area: _Area, pos: tuple) -> ChipFacts | None:
    sample_id, y, x, k, labels = pos
    views = _chip_views(area, y, x, k) if area.views else None
    if area.views and views is None:
        return None  # an area given by imagery keeps only chips that have imagery
    b = area.bounds(y, x, k)
    lon, lat = area.to_geo.transform((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    facts = ChipFacts(sample_id, float(lat), float(lon), views=views)
    _heights(area, y, x, k, facts)
    if views is None and facts.dsm is None:
        return None
    if labels is None and area.labels:
        found = [pl.at(y, x, k) for pl in area.labels]
        labels = next((lab for lab in found if lab.label >= 0), found[0])
    facts.labels = labels
    if area.objects is not None and area.src.objects is not None:
        r, c = area.objects[:, 0], area.objects[:, 1]
        n = int(((r >= y) & (r < y + k) & (c >= x) & (c < x + k)).sum())
        if n:
            facts.objects = [f"{n} {area.src.objects.noun}{'s' if n != 1 else ''}"]
    return facts


def _tile_order(g: Grid, max_chips: int, seed: int) -> list[tuple[int, int]]:
    """Every lattice tile, or a seeded random ``max_chips`` of them in row-major order.

    Tiles outside the imagery are dropped later, so a large area with empty corners gives
    fewer than ``max_chips`` samples.
    """
    tiles = [(r, c) for r in range(g.grid.rows) for c in range(g.grid.cols)]
    if max_chips and len(tiles) > max_chips:
        keep = np.sort(np.random.default_rng(seed).choice(len(tiles), max_chips, replace=False))
        tiles = [tiles[i] for i in keep]
    return tiles


def _positions(area: _Area) -> Iterator[tuple[str, int, int, int, object]]:
    """(sample id, y, x, chip side, labels or None): lattice chips, then polygon-centred ones."""
    src = area.src
    step = src.stride_px or src.chip_px
    for r, c in _tile_order(area.g, src.max_chips, zlib.crc32(src.area_id.encode())):
        yield f"{src.area_id}-r{r:04d}c{c:04d}", r * step, c * step, src.chip_px, None
    for pl in area.labels:
        if pl.spec.centred:
            k = pl.spec.centred_px or src.chip_px
            for poly, y, x in pl.centred_chips(k):
                gid = pl.ids[poly].split(":", 1)[1].replace("#", "-")
                yield f"{src.area_id}-p{gid}", y, x, k, pl.centred_labels(poly, y, x, k)


def build_area(
    src: RasterSource,
    *,
    describe_place: Callable[[float, float], dict] | None = None,
    split_of: Callable[[float, float, float, int], str | None] = lambda *a: "train",
    climate: Callable[[float, float], dict] | None = None,
) -> Iterator[SampleRecord]:
    """Yield one sample per valid chip of ``src``.

    Args:
        src: the area's rasters and settings.
        describe_place: (lat, lon) -> {"place", "admin", "country"} for text (optional).
        split_of: (lat, lon, gsd_m, chip_px) -> split, e.g. a block split.
        climate: (lat, lon) -> {"elevation_m", "precip_mm"} for text (optional).

    Raises:
        RasterInputError: a raster without CRS, or no image / DSM / DEM at all.
    """
    area = _load_area(src)
    seen: set[str] = set()
    for pos in _positions(area):
        if pos[0] in seen:
            continue
        seen.add(pos[0])
        facts = _chip_facts(area, pos)
        if facts is None:
            continue
        split = "holdout" if src.holdout else split_of(facts.lat, facts.lon, src.gsd_m, pos[3])
        yield make_record(
            facts,
            area_id=src.area_id,
            gsd_m=src.gsd_m,
            sensor=area.sensor,
            split=split,
            place=describe_place(facts.lat, facts.lon) if describe_place else {},
            climate=climate(facts.lat, facts.lon) if climate else {},
            label_from_cover=src.label_from_cover,
            pseudo_street=src.pseudo_street,
            seed=(pos[1], pos[2], len(src.area_id)),
        )
