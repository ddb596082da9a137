"""A procedural synthetic world: one land-use map from which all five modalities are drawn.

The world is a raster of land-use classes placed at a real latitude/longitude (a local UTM
frame). From it: 4-band aerial imagery (class colours and textures), a DSM (terrain +
buildings + tree canopy), street-level views rendered "from inside" each sample's class, text
from the class mix, and GPS from the map position. Ground-truth labels are kept, noise is
configurable, and one modality can be made weak (noisy) for the all-to-all vs pivot ablation.
Everything is written with provenance 'synthetic'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pyproj import CRS, Transformer

from engine.errors import InputError
from engine.model.contract import Modality

from .landuse import (
    CROPLAND,
    FOREST,
    INDUSTRIAL,
    RESIDENTIAL,
    WATER,
)
from .landuse import (
    SYNTH_CLASS_NAMES as CLASS_NAMES,
)
from .render_street import render_street
from .splits import block_splits
from .text import TextContext, describe
from .writer import DatasetWriter, SampleRecord

BANDS = ("red", "green", "blue", "nir")
# Mean reflectance-like colour of each class (R, G, B, NIR) in [0, 1].
CLASS_RGBN = np.array(
    [
        (0.05, 0.10, 0.20, 0.03),  # water: dark, no NIR
        (0.08, 0.20, 0.08, 0.45),  # forest
        (0.35, 0.40, 0.15, 0.50),  # cropland
        (0.25, 0.40, 0.18, 0.40),  # grassland
        (0.40, 0.40, 0.38, 0.30),  # residential ground (roofs drawn separately)
        (0.45, 0.45, 0.45, 0.25),  # industrial ground
        (0.55, 0.45, 0.35, 0.40),  # bare
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic world."""

    size: int = 2000  # number of samples
    seed: int = 0  # everything is a function of the seed
    noise: float = 0.05  # pixel noise std (images in [0,1]; DSM scaled x10 m)
    chip_px: int = 64  # aerial and DSM chip side
    street_px: int = 64  # street view side
    gsd_m: float = 2.0  # metres per pixel
    lat0: float = 46.80  # north-west corner of the world (WGS84)
    lon0: float = 7.10
    weak: str | None = None  # modality made weak ("aerial", "streetview", "dsm", "text", "gps")
    weak_level: float = 0.7  # 0 = as good as the others, 1 = pure noise
    block_m: float = 0.0  # split block side; 0 = a quarter of the world side
    name: str = "synthetic"


def _smooth(rng: np.random.Generator, n: int, h: int, w: int, cell: int) -> np.ndarray:
    """n smooth random fields [n, h, w] in about [-1, 1] (bicubic upsampled coarse noise)."""
    gh, gw = h // cell + 3, w // cell + 3
    coarse = torch.from_numpy(rng.standard_normal((1, n, gh, gw)).astype(np.float32))
    up = F.interpolate(coarse, scale_factor=cell, mode="bicubic", align_corners=False)
    return up[0, :, cell : cell + h, cell : cell + w].numpy()


class World:
    """The world rasters: land use, aerial [4,H,W], DSM [H,W] and its terrain."""

    def __init__(self, cfg: SynthConfig) -> None:
        if cfg.size < 1 or cfg.chip_px < 8 or cfg.gsd_m <= 0 or not 0 <= cfg.noise <= 1:
            raise InputError("synth needs size >= 1, chip_px >= 8, gsd_m > 0, 0 <= noise <= 1")
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        side = int(np.clip(math.sqrt(cfg.size) * cfg.chip_px * 0.6, 8 * cfg.chip_px, 3072))
        self.h = self.w = side
        fields = _smooth(rng, 8, side, side, 96)
        terrain = fields[0]
        weights = np.array([1.0, 1.0, 1.1, 0.9, 0.8, 0.55, 0.45], np.float32)[1:, None, None]
        land = np.argmax(fields[1:7] * weights + 0.25 * _smooth(rng, 6, side, side, 24), 0) + 1
        water = terrain < np.quantile(terrain, 0.1)
        self.labels = np.where(water, WATER, land).astype(np.uint8)
        self._buildings(rng)
        self.terrain_m = 400 + 12 * terrain + 3 * fields[7]
        self.dsm = self._dsm(rng)
        self.aerial = self._aerial(rng)

    def _buildings(self, rng: np.random.Generator) -> None:
        yy, xx = np.mgrid[0 : self.h, 0 : self.w]
        self.roof = np.zeros((self.h, self.w), bool)
        self.height = np.zeros((self.h, self.w), np.float32)
        for cls, period, lo, hi in ((RESIDENTIAL, 10, 6, 11), (INDUSTRIAL, 30, 8, 15)):
            inside = (yy % period >= 2) & (xx % period >= 2)
            inside &= (yy % period < period - 2) & (xx % period < period - 2)
            cell_h = rng.uniform(lo, hi, (self.h // period + 1, self.w // period + 1))
            m = inside & (self.labels == cls)
            self.roof |= m
            self.height[m] = cell_h[yy[m] // period, xx[m] // period]

    def _dsm(self, rng: np.random.Generator) -> np.ndarray:
        canopy = (14 + 5 * _smooth(rng, 1, self.h, self.w, 6)[0]) * (self.labels == FOREST)
        water_level = float(np.quantile(self.terrain_m[self.labels == WATER], 0.9))
        ground = np.where(self.labels == WATER, water_level, self.terrain_m)
        self.terrain_m = ground.astype(np.float32)
        return (ground + self.height + np.maximum(canopy, 0)).astype(np.float32)

    def _aerial(self, rng: np.random.Generator) -> np.ndarray:
        img = CLASS_RGBN[self.labels].transpose(2, 0, 1).copy()
        fine = _smooth(rng, 2, self.h, self.w, 3)
        img *= 1 + 0.12 * fine[0]
        crop = self.labels == CROPLAND
        angle = _smooth(rng, 1, self.h, self.w, 128)[0] * 3
        yy, xx = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.9)
        img[:, crop] *= 1 + 0.2 * stripes[crop]
        forest = self.labels == FOREST
        img[:, forest] *= 1 + 0.25 * fine[1][forest]
        roof_rgbn = np.where(self.labels == INDUSTRIAL, 1, 0)[self.roof]
        colours = np.array([(0.62, 0.26, 0.20, 0.28), (0.78, 0.78, 0.80, 0.32)], np.float32)
        img[:, self.roof] = colours[roof_rgbn].T
        # Hill shading from the DSM makes terrain and buildings visible from above.
        gy, gx = np.gradient(self.dsm, self.cfg.gsd_m)
        img *= np.clip(1 - 0.15 * (gx + gy), 0.6, 1.3)
        return np.clip(img, 0, 1).astype(np.float32)


def _elsewhere(world: World, rng: np.random.Generator, k: int) -> tuple[slice, slice]:
    """The window of a random chip elsewhere in the world."""
    r, c = rng.integers(0, world.h - k), rng.integers(0, world.w - k)
    return slice(r, r + k), slice(c, c + k)


def _weaken(x: np.ndarray, other: np.ndarray, level: float) -> np.ndarray:
    """Blend a chip with the same modality from an unrelated place (level 1 = no signal).

    Blending with real chips of other places (not uniform noise) keeps the modality's value
    distribution while removing its link to this sample's label.
    """
    return ((1 - level) * x + level * other).astype(x.dtype)


class _Placer:
    """Pixel position <-> WGS84 via the local UTM zone of the world's corner."""

    def __init__(self, cfg: SynthConfig) -> None:
        zone = int((cfg.lon0 + 180) // 6) + 1
        utm = CRS.from_epsg((32600 if cfg.lat0 >= 0 else 32700) + zone)
        self.to_utm = Transformer.from_crs("EPSG:4326", utm, always_xy=True)
        self.to_geo = Transformer.from_crs(utm, "EPSG:4326", always_xy=True)
        self.x0, self.y0 = self.to_utm.transform(cfg.lon0, cfg.lat0)
        self.gsd = cfg.gsd_m

    def latlon(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = self.to_geo.transform(self.x0 + col * self.gsd, self.y0 - row * self.gsd)
        return np.asarray(lat), np.asarray(lon)


def _sample_text(world: World, lab: np.ndarray, dsm: np.ndarray, r: int, c: int) -> list[str]:
    counts = np.bincount(lab.ravel(), minlength=len(CLASS_NAMES)) / lab.size
    order = np.argsort(-counts)
    ns = "north" if r < world.h / 2 else "south"
    ew = "west" if c < world.w / 2 else "east"
    ctx = TextContext(
        classes=[(CLASS_NAMES[k], float(counts[k])) for k in order if counts[k] > 0],
        relief_m=float(np.percentile(dsm, 95) - np.percentile(dsm, 5)),
        n_buildings=None,
        position=f"{ns}-{ew} of the region",
    )
    return describe(ctx)


def generate(cfg: SynthConfig, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Generate the synthetic world and write ``cfg.size`` samples as a dataset.

    Returns:
        The written ``dataset.json`` contents as a dict.
    """
    if cfg.weak is not None:
        Modality(cfg.weak)  # raises ValueError for an unknown modality name
    world = World(cfg)
    rng = np.random.default_rng((cfg.seed, 1))
    k, half = cfg.chip_px, cfg.chip_px // 2
    rows = rng.integers(half, world.h - half, cfg.size)
    cols = rng.integers(half, world.w - half, cfg.size)
    placer = _Placer(cfg)
    lat, lon = placer.latlon(rows.astype(np.float64), cols.astype(np.float64))
    block = cfg.block_m or world.w * cfg.gsd_m / 4
    splits = block_splits(
        lat,
        lon,
        [cfg.gsd_m] * cfg.size,
        [k] * cfg.size,
        block_m=block,
        buffer_m=2 * cfg.gsd_m,
        seed=cfg.seed,
    )
    prov = {m.value: "synthetic" for m in Modality}
    with DatasetWriter(out_dir, cfg.name, overwrite=overwrite) as w:
        for i in range(cfg.size):
            w.add(_sample(world, cfg, rng, i, rows[i], cols[i], lat[i], lon[i], splits[i], prov))
        info = w.close(
            bands={
                "aerial": list(BANDS),
                "streetview": ["red", "green", "blue"],
                "dsm": ["height"],
            },
            class_names=list(CLASS_NAMES),
            sources=[{"name": "synthetic world", "licence": "generated", "what": repr(cfg)}],
            description=f"Procedural world, seed {cfg.seed}, noise {cfg.noise}, weak {cfg.weak}",
        )
    return info.__dict__


def _sample(world, cfg, rng, i, r, c, lat, lon, split, prov) -> SampleRecord:
    k, half = cfg.chip_px, cfg.chip_px // 2
    win = (slice(r - half, r - half + k), slice(c - half, c - half + k))
    lab = world.labels[win]
    counts = np.bincount(lab.ravel(), minlength=len(CLASS_NAMES))
    label = int(np.argmax(counts))
    second = int(np.argsort(-counts)[1]) if (counts > 0).sum() > 1 else -1
    aerial = world.aerial[(slice(None), *win)] + rng.normal(0, cfg.noise, (4, k, k))
    dsm = world.dsm[win][None] + rng.normal(0, cfg.noise * 10, (1, k, k))
    street = render_street(label, cfg.street_px, rng, far_cls=second)
    street = street + rng.normal(0, cfg.noise, street.shape)
    text = _sample_text(world, lab, world.dsm[win], r, c)
    weak, lvl = cfg.weak, cfg.weak_level
    if weak == "aerial":
        aerial = _weaken(aerial, world.aerial[(slice(None), *_elsewhere(world, rng, k))], lvl)
    elif weak == "streetview":
        other = render_street(int(rng.integers(len(CLASS_NAMES))), cfg.street_px, rng)
        street = _weaken(street, other, lvl)
    elif weak == "dsm":
        dsm = _weaken(dsm, world.dsm[_elsewhere(world, rng, k)][None], lvl)
    elif weak == "text" and rng.random() < lvl:
        other = world.labels[tuple(rng.integers(0, world.h, 2))]
        text = _sample_text(world, np.full_like(lab, other), world.dsm[win], r, c)
    elif weak == "gps":
        jitter = lvl * world.w * cfg.gsd_m / 111_320
        lat, lon = lat + rng.normal(0, jitter), lon + rng.normal(0, jitter)
    return SampleRecord(
        sample_id=f"syn{cfg.seed}-{i:06d}",
        lat=float(lat),
        lon=float(lon),
        area_id=cfg.name,
        split=split,
        gsd_m=cfg.gsd_m,
        aerial=[(np.clip(aerial, 0, 1) * 255 + 0.5).astype(np.uint8)],
        streetview=[(np.clip(street, 0, 1) * 255 + 0.5).astype(np.uint8)],
        dsm=dsm.astype(np.float32),
        text=text,
        provenance=prov,
        landuse=label,
        landuse_provenance="synthetic",
    )
