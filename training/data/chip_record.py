"""One chip's sample: its views, DSM, label and text from what the chip really shows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.raster.sensors import Sensor

from .landuse import SYNTH_CLASS_NAMES, cover_fractions, derive_label
from .polygon_labels import ChipLabels
from .render_street import render_street
from .text import TextContext, describe
from .writer import SampleRecord


@dataclass
class ChipViews:
    """The aerial views of one chip: model values, their bands and dates."""

    chips: list[np.ndarray]  # [C, k, k] float32 model values, NaN = no data
    bands: tuple[str, ...]
    dates: list[str]


@dataclass
class ChipFacts:
    """Everything measured for one chip, before it becomes a :class:`SampleRecord`."""

    sample_id: str
    lat: float
    lon: float
    views: ChipViews | None = None
    dsm: np.ndarray | None = None  # [k, k] metres
    dsm_provenance: str | None = None
    n_buildings: int | None = None
    building_cover: float | None = None
    pois: list[str] = field(default_factory=list)
    labels: ChipLabels | None = None  # from polygons
    objects: list[str] = field(default_factory=list)  # e.g. "12 tree crowns"


def store_image(x: np.ndarray) -> np.ndarray:
    """uint8 when complete (4x smaller), float16 with NaN when pixels are missing."""
    if np.isnan(x).any():
        return x.astype(np.float16)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def reflectance_like(x: np.ndarray, bands: tuple[str, ...], sensor: Sensor) -> np.ndarray:
    """Model values back to reflectance for spectral indices (display products stay as they are).

    Indices are ratios of bands; reflectance products are scaled per band
    (``reflectance_max``), which would bias them.
    """
    if sensor.kind != "reflectance":
        return x
    top = np.array([sensor.reflectance_max[b] for b in bands], np.float32)
    return x * top[:, None, None]


def _label(facts: ChipFacts, cover: dict, from_cover: bool) -> tuple[int, str | None]:
    """Polygon label (real, mapped by people) first, else one derived from spectral cover."""
    if facts.labels is not None and facts.labels.label >= 0:
        return facts.labels.label, "real"
    if not from_cover:
        return -1, None
    label = derive_label(cover, facts.building_cover)
    return label, "derived" if label >= 0 else None


def _text(facts: ChipFacts, cover: dict, place: dict, climate: dict, kind: str) -> list[str]:
    dsm = facts.dsm
    has_h = dsm is not None and np.isfinite(dsm).any()
    elev = float(np.nanmean(dsm)) if has_h else climate.get("elevation_m")
    ctx = TextContext(
        classes=list(facts.labels.shares) if facts.labels else [],
        cover=cover,
        elevation_m=elev,
        relief_m=float(np.nanpercentile(dsm, 95) - np.nanpercentile(dsm, 5)) if has_h else None,
        n_buildings=facts.n_buildings,
        amenities=facts.pois,
        precip_mm=climate.get("precip_mm"),
        objects=facts.objects,
        kind=kind,
        **place,
    )
    return describe(ctx)


def make_record(
    facts: ChipFacts,
    *,
    area_id: str,
    gsd_m: float,
    sensor: Sensor,
    split: str | None,
    place: dict,
    climate: dict,
    label_from_cover: bool = True,
    pseudo_street: bool = False,
    seed: tuple = (),
) -> SampleRecord:
    """The sample of one chip: stored chips, provenance, label, text.

    Args:
        facts: what was read and measured for the chip.
        area_id: the source area.
        gsd_m: metres per pixel of the chips.
        sensor: the aerial sensor (for spectral indices and the manifest).
        split: the sample's split.
        place: nearest-place fields for the text (may be empty).
        climate: ``elevation_m`` / ``precip_mm`` for the text (may be empty).
        label_from_cover: derive a label from spectral cover where no polygon labels it.
        pseudo_street: add a synthetic ground-level render of the label.
        seed: seeds the street render.
    """
    v = facts.views
    cover = {}
    if v is not None:
        cover = cover_fractions(reflectance_like(v.chips[0], v.bands, sensor), v.bands)
    label, label_prov = _label(facts, cover, label_from_cover)
    prov = {"gps": "real", "text": "derived"}
    if v is not None:
        prov["aerial"] = "real"
    if facts.dsm is not None:
        prov["dsm"] = facts.dsm_provenance or "real"
    street = []
    if pseudo_street and 0 <= label < len(SYNTH_CLASS_NAMES):
        rng = np.random.default_rng(seed)
        street = [(render_street(label, 64, rng) * 255 + 0.5).astype(np.uint8)]
        prov["streetview"] = "synthetic"
    return SampleRecord(
        sample_id=facts.sample_id,
        lat=float(facts.lat),
        lon=float(facts.lon),
        area_id=area_id,
        split=split,
        gsd_m=gsd_m,
        aerial=[store_image(c) for c in v.chips] if v is not None else [],
        streetview=street,
        dsm=facts.dsm[None].astype(np.float32) if facts.dsm is not None else None,
        text=_text(facts, cover, place, climate, "aerial"),
        provenance=prov,
        landuse=label,
        landuse_provenance=label_prov,
        sensor=sensor.name if v is not None else None,
        aerial_bands=v.bands if v is not None else None,
        aerial_dates=list(v.dates) if v is not None and any(v.dates) else [],
        groups=list(facts.labels.groups) if facts.labels else [],
    )
