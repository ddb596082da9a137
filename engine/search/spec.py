"""A query as plain data, what to find and what to avoid, and the one place it becomes a Query.

Every front end describes a query the same way: the GUI's dock and map tools, Processing's
QUERY_* parameters and the CLI's flags all fill a :class:`QuerySpec`, and :func:`build_query`
runs the encoders. Each example is one term of weight 1, positive or negative; the terms are
added in one order (texts, places, regions, photos, coordinates, then what to avoid), so the same
query gets the same description, layer name and provenance whichever front end made it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import InputError
from ..geo.geometry import GeometryLike, union
from . import query as Q

if TYPE_CHECKING:
    from ..model.core import UniGeoModel
    from ..store.npy import EmbeddingStore


class Place(NamedTuple):
    """An example place: a map point and its CRS (None: the store's)."""

    x: float
    y: float
    crs: str | None = None
    where: str = ""  # where it came from, for errors (e.g. "EXTRA_POINTS: feature 3 of layer 'a'")


class Region(NamedTuple):
    """An example region: one polygon or several (united), and their CRS (None: the store's)."""

    geometry: GeometryLike | tuple[GeometryLike, ...]  # WKT, WKB or GeoJSON
    crs: str | None = None
    where: str = ""  # where it came from, for errors (e.g. "NEGATIVE_POLYGON (layer 'a')")
    what: str = "the polygons"  # what the polygons are, for errors while uniting them


@dataclass(frozen=True)
class QuerySpec:
    """A query as plain data; plain tuples stand for :class:`Place` and :class:`Region`."""

    texts: tuple[str, ...] = ()  # text prompts (positive)
    negative_texts: tuple[str, ...] = ()  # text prompts to move away from
    points: tuple[tuple, ...] = ()  # Place: example locations
    negative_points: tuple[tuple, ...] = ()  # Place: counter-examples
    photos: tuple[str, ...] = ()  # street-level photo files
    regions: tuple[tuple, ...] = ()  # Region: mean of the tiles inside
    negative_regions: tuple[tuple, ...] = ()  # Region: to move away from
    gps: tuple[tuple[float, float], ...] = ()  # (lat, lon) WGS84 degrees
    templates: tuple[str, ...] | None = None  # prompt templates; None = the bundle's
    gps_weight: float = 0.0  # share of each example point's GPS embedding (not of places to avoid)

    def is_empty(self) -> bool:
        """True when no positive example is given (negatives alone define nothing to find)."""
        return not (self.texts or self.points or self.photos or self.regions or self.gps)

    def has_negatives(self) -> bool:
        """True when something to move away from is given."""
        return bool(self.negative_texts or self.negative_points or self.negative_regions)

    def label(self) -> str:
        """A short name for layers and files, e.g. ``text 'lake' + 2 points − 1 point``."""
        pos = [f"text '{t}'" for t in self.texts]
        pos += [_count(len(self.points), "point")] if self.points else []
        pos += [f"photo '{Path(p).name}'" for p in self.photos]
        pos += [_count(len(self.regions), "region")] if self.regions else []
        pos += [f"gps ({la:.4f}, {lo:.4f})" for la, lo in self.gps]
        neg = [f"text '{t}'" for t in self.negative_texts]
        neg += [_count(len(self.negative_points), "point")] if self.negative_points else []
        neg += [_count(len(self.negative_regions), "region")] if self.negative_regions else []
        text = " + ".join(pos) or "empty query"
        return text + "".join(f" − {n}" for n in neg)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def build_query(spec: QuerySpec, store: EmbeddingStore, model: UniGeoModel) -> Q.Query:
    """Turn a :class:`QuerySpec` into one :class:`~.query.Query` (the encoders run here).

    Raises:
        InputError: The spec holds no term, or one cannot be built (an error of a term that
            says where it came from is prefixed with that).
    """
    tmpl = list(spec.templates) if spec.templates is not None else None
    w = spec.gps_weight

    def point(p: Place, weight: float = w) -> Q.Query:
        return Q.point_query(store, p.x, p.y, crs=p.crs, gps_weight=weight, model=model)

    parts = [(Q.text_query(model, t, tmpl), False) for t in spec.texts]
    parts += _each(map(_place, spec.points), point, False)
    parts += _each(map(_region, spec.regions), lambda r: _region_query(store, r), False)
    parts += [(Q.photo_query(model, p), False) for p in spec.photos]
    parts += [(Q.gps_query(model, la, lo), False) for la, lo in spec.gps]
    parts += [(Q.text_query(model, t, tmpl), True) for t in spec.negative_texts]
    # as in the dock and the CLI, a place to avoid is the tile alone (no GPS mixing)
    parts += _each(map(_place, spec.negative_points), lambda p: point(p, 0.0), True)
    parts += _each(map(_region, spec.negative_regions), lambda r: _region_query(store, r), True)
    if not parts:
        raise InputError("the query is empty: give a text, a place, a region, a photo or GPS")
    query = Q.Query()
    for q, negative in parts:
        query.add(q.vector(), 1.0, negative=negative, description=q.description())
    return query


def _place(p: tuple) -> Place:
    return p if isinstance(p, Place) else Place(*p)


def _region(r: tuple) -> Region:
    return r if isinstance(r, Region) else Region(*r)


def _each(
    items: Iterable[Any], make: Callable[[Any], Q.Query], negative: bool
) -> Iterator[tuple[Q.Query, bool]]:
    """``(make(item), negative)`` per item; an error names where the failing item came from."""
    for item in items:
        try:
            q = make(item)
        except InputError as e:
            if not item.where:
                raise
            raise InputError(f"{item.where}: {e}") from None
        yield q, negative


def _region_query(store: EmbeddingStore, r: Region) -> Q.Query:
    geom = r.geometry
    if isinstance(geom, tuple):
        geom = union(geom, what=r.what)
    return Q.region_query(store, geom, crs=r.crs)
