"""Text descriptions of a place from its attributes, in several phrasings.

Every phrase is built only from attributes the sample really has (class mix, spectral cover,
relief, buildings and amenities, the nearest named places), so text is "derived", never
invented. Several phrasings per sample let the reader pick one at random as augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .landuse import CLASS_PHRASES


@dataclass
class TextContext:
    """What is known about a place; every field is optional."""

    classes: list[tuple[str, float]] = field(default_factory=list)  # (class, share), desc
    cover: dict[str, float] = field(default_factory=dict)  # spectral cover fractions
    elevation_m: float | None = None  # mean surface/terrain height
    relief_m: float | None = None  # height range inside the chip (p95 - p5)
    max_height_m: float | None = None  # highest structure above ground
    n_buildings: int | None = None  # building footprints in the chip
    amenities: list[str] = field(default_factory=list)  # OSM amenity / named features
    place: str | None = None  # nearest named place
    admin: str | None = None  # its first-level administrative region
    country: str | None = None  # country name or code
    position: str | None = None  # e.g. "north-west of the study area"
    kind: str = "aerial"  # "aerial" (seen from above) or "street" (seen from the ground)
    precip_mm: float | None = None  # annual precipitation at the place (a 1 degree grid)
    objects: list[str] = field(default_factory=list)  # counted objects, e.g. "12 tree crowns"


def _relief_word(r: float) -> str:
    if r < 5:
        return "flat"
    if r < 30:
        return "gently rolling"
    if r < 100:
        return "hilly"
    return "steep, mountainous"


def _where(c: TextContext) -> str:
    parts = [p for p in (c.place, c.admin, c.country) if p]
    if parts:
        # "12 km from X" already says where; "near" is only for places close by.
        lead = "" if c.place and c.place[:1].isdigit() else "near "
        return lead + ", ".join(dict.fromkeys(parts))
    return f"in the {c.position}" if c.position else ""


def _mix(c: TextContext, variant: int) -> str:
    if not c.classes:
        return ""
    mapped = sum(s for _, s in c.classes)
    top = [(n, s) for n, s in c.classes if s >= 0.1][:3]
    if not top and mapped >= 0.9:  # a full class mix: name its largest class anyway
        top = c.classes[:1]
    if not top:
        return ""  # mapped classes cover under a tenth of the place each: say nothing
    nouns = [CLASS_PHRASES.get(n, (n,) * 3)[variant % 3] for n, _ in top]
    if variant == 0:
        # Polygons may map only part of a chip: "partly" unless the class really dominates.
        lead = "mostly" if top[0][1] >= 0.5 or mapped >= 0.9 else "partly"
        return f"{lead} {nouns[0]}" + (f" with some {nouns[1]}" if len(nouns) > 1 else "")
    if variant == 1:
        return " and ".join(nouns)
    return ", ".join(f"{round(s * 100)}% {n}" for n, s in top)


def _cover(c: TextContext) -> str:
    items = [(k, v) for k, v in sorted(c.cover.items(), key=lambda kv: -kv[1]) if v >= 0.1]
    return ", ".join(f"{round(v * 100)}% {k}" for k, v in items)


def _climate(c: TextContext) -> str:
    """'a wet climate (about 1200 mm of precipitation a year)' from the annual total."""
    p = c.precip_mm
    if p is None:
        return ""
    word = "an arid" if p < 250 else "a dry" if p < 500 else "a moderately wet" if p < 1000 else (
        "a wet" if p < 2000 else "a very wet")  # fmt: skip
    return f"{word} climate (about {round(p, -1):.0f} mm of precipitation a year)"


def _structures(c: TextContext) -> list[str]:
    out = list(c.objects)
    if c.n_buildings:
        out.append(f"{c.n_buildings} building{'s' if c.n_buildings != 1 else ''}")
    if c.max_height_m is not None and c.max_height_m > 3:
        out.append(f"structures up to {round(c.max_height_m)} m tall")
    if c.amenities:
        uniq = list(dict.fromkeys(c.amenities))
        # Named features ("school Swellendam High School") say more than bare types.
        uniq.sort(key=lambda a: not any(ch.isupper() for ch in a))
        out.append("with " + ", ".join(uniq[:3]))
    return out


def describe(c: TextContext) -> list[str]:
    """Return up to four distinct phrasings (empty when nothing is known)."""
    where = _where(c)
    relief = _relief_word(c.relief_m) if c.relief_m is not None else ""
    s1 = ", ".join(
        p
        for p in (
            _mix(c, 0) or (f"{relief} land" if relief else ""),
            where,
            f"{relief} terrain" if relief and c.classes else "",
        )
        if p
    )
    view = "an aerial view" if c.kind == "aerial" else "a street-level photo"
    what = _mix(c, 1) or _cover(c)
    s2 = " ".join(p for p in (view, f"of {what}" if what else "", where) if p)
    if not (what or where):
        s2 = ""
    elev = f"elevation about {round(c.elevation_m)} m" if c.elevation_m is not None else ""
    s3 = "; ".join(
        p for p in (_mix(c, 2) or _cover(c), ", ".join(_structures(c)), elev, where) if p
    )
    climate = _climate(c)
    s4 = ""
    if climate:
        at = f" at about {round(c.elevation_m)} m elevation" if c.elevation_m is not None else ""
        s4 = " ".join(p for p in (f"a place with {climate}{at}", where) if p)
    out = []
    for s in (s1, s2, s3, s4):
        s = s.strip()
        s = s[:1].upper() + s[1:]
        if s and s not in out:
            out.append(s)
    return out
