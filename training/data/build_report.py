"""What ``dataset.json`` records about each area and source: place, sensor, dates, extent, licence."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .sources import (
    ALTITUDE,
    BLUE_MARBLE,
    COUNTRIES,
    GEONAMES,
    LAND_MASK,
    PRECIPITATION,
    RegistryFile,
)

if TYPE_CHECKING:
    from .build import BuildConfig
    from .context import PlaceContext
    from .writer import SampleRecord

CONTINENTS = {"AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe",
              "NA": "North America", "OC": "Oceania", "SA": "South America"}  # fmt: skip


_OTHER_INFO = {  # sources that are not raster areas: Blue Marble chips, street photos
    "global": {"source": f"{BLUE_MARBLE.package} {BLUE_MARBLE.version} (pip)",
               "files": BLUE_MARBLE.member, "licence": BLUE_MARBLE.licence},
    "street": {"source": "../shared/data/street_photos",
               "licence": "Mapillary images shipped in mapillary/OpenSfM (BSD-2-Clause)"},
}  # fmt: skip


@dataclass
class AreaTally:
    """Per area: extent of its samples, counts per split, modality provenance and dates."""

    box: dict[str, list[float]] = field(default_factory=dict)  # area -> [w, s, e, n]
    splits: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    modalities: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    labels: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    dates: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    sensors: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    views: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, rec: SampleRecord) -> None:
        """Count one written sample."""
        a = rec.area_id
        b = self.box.setdefault(a, [rec.lon, rec.lat, rec.lon, rec.lat])
        b[:] = [min(b[0], rec.lon), min(b[1], rec.lat), max(b[2], rec.lon), max(b[3], rec.lat)]
        self.splits[a][str(rec.split)] += 1
        for m, p in rec.provenance.items():
            present = m == "gps" or bool(getattr(rec, m, None) is not None and len(getattr(rec, m)))
            if present:
                self.modalities[a][f"{m}:{p}"] += 1
        if rec.landuse >= 0:
            self.labels[a][rec.landuse] += 1
        self.dates[a].update(d for d in rec.aerial_dates if d)
        if rec.sensor:
            self.sensors[a].add(rec.sensor)
        self.views[a] += len(rec.aerial)


def area_info(cfg: BuildConfig, tally: AreaTally, ctx: PlaceContext | None) -> dict[str, dict]:
    """``dataset.json``'s ``area_info``: one entry per area that has samples."""
    srcs = {s.area_id: s for s in cfg.areas}
    out = {}
    for a, box in sorted(tally.box.items()):
        src = srcs.get(a)
        lat, lon = (box[1] + box[3]) / 2, (box[0] + box[2]) / 2
        wide = box[2] - box[0] > 60 or box[3] - box[1] > 30  # worldwide samples: no one place
        where = ctx.place(lat, lon) if ctx and ctx.gazetteer is not None and not wide else {}
        n = sum(tally.splits[a].values())
        out[a] = {
            "place": _place_name(a, src),
            "sensor": ",".join(sorted(tally.sensors[a])) or None,
            "gsd_m": src.gsd_m if src else None,
            "chip_px": src.chip_px if src else None,
            "dates": sorted(tally.dates[a]),
            "bbox": [round(v, 5) for v in box],  # of the sample centres
            "extent": [round(v, 5) for v in src.wgs84_bounds()] if src else None,
            "country": where.get("country"),
            "continent": CONTINENTS.get(where.get("continent") or "", None),
            "holdout": bool(src and src.holdout),
            "splits": dict(tally.splits[a]),
            "modalities": dict(tally.modalities[a]),
            "labels": {str(k): v for k, v in sorted(tally.labels[a].items())},
            "views_per_sample": round(tally.views[a] / n, 2) if n else 0.0,
            **(src.info if src else _OTHER_INFO.get(a.split("_")[0], {})),
        }
    return out


def _place_name(area: str, src) -> str:
    if src is not None and src.place:
        return src.place
    if area.startswith("street_"):
        return f"{area[7:].title()} (street photos)"
    return "worldwide" if area == "global_bluemarble" else area


def registry_sources(cfg: BuildConfig) -> list[dict[str, str]]:
    """``dataset.json``'s ``sources``: every area and registry file with its licence."""
    out = [
        {"name": s.area_id, "what": s.info.get("files", ", ".join(p.name for p in s.images[:3])),
         "licence": s.info.get("licence", "")}
        for s in cfg.areas
    ]  # fmt: skip
    out += [{"name": a, "what": f"geotagged photos in {p.name}"} for a, p in cfg.photo_dirs.items()]
    regs: list[RegistryFile] = [GEONAMES, COUNTRIES] if cfg.gazetteer else []
    regs += [ALTITUDE, PRECIPITATION] if cfg.climate else []
    regs += [BLUE_MARBLE, LAND_MASK] if cfg.global_samples else []
    out += [
        {"name": f"{r.package}=={r.version} ({r.registry})", "what": r.member, "licence": r.licence}
        for r in regs
    ]
    return out
