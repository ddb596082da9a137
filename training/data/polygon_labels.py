"""Land-use labels from mapped polygons and points (OpenStreetMap land use, field polygons).

The polygons are rasterised once onto the area's grid as a polygon-index raster, so each chip
gets the share of every class it holds (for its text), its label (the class covering at least
``min_share`` of the chip) and the ids of every polygon it touches (its *groups*: splits keep
all chips of one polygon together, and few-shot evaluation folds group by them). With
``centred``, every polygon also gets a chip centred on a point inside it, so small polygons
yield a labelled sample too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from rasterio.features import rasterize

from engine.errors import InputError

from .dsm import read_vector
from .landuse import CLASS_NAMES
from .scenes import Grid


@dataclass
class LabelLayer:
    """A vector layer of labelled polygons or points and how its values map to classes."""

    path: Path
    class_field: str  # attribute holding the source class (e.g. OSM 'fclass')
    mapping: dict[str, str]  # source value -> one of CLASS_NAMES; other values are ignored
    layer: str | None = None
    id_field: str | None = None  # stable feature id (e.g. 'osm_id'); default: row number
    prefix: str = "poly"  # group ids are '<prefix>:<id>'
    min_share: float = 0.5  # a chip is labelled when one class covers this share of it
    centred: bool = False  # also one chip centred inside every polygon
    centred_px: int = 0  # ... of this side in pixels (0: the area's chip side)
    centred_min_share: float = 0.25  # ... kept when its own polygon covers this share
    licence: str = ""


@dataclass
class ChipLabels:
    """What the polygons say about one chip."""

    shares: list[tuple[str, float]]  # (class name, share of the chip), largest first
    label: int  # class index, -1 when no class reaches min_share
    groups: list[str]  # ids of the polygons in the chip; the label's own polygon first


class PolygonLabels:
    """A label layer rasterised onto an area's grid."""

    def __init__(self, spec: LabelLayer, g: Grid) -> None:
        vec = read_vector(spec.path, spec.layer, to_crs=g.crs.to_wkt())
        if spec.class_field not in vec.fields:
            raise InputError(
                f"{spec.path} has no field {spec.class_field!r} (fields: {sorted(vec.fields)})"
            )
        values = [str(v) for v in vec.fields[spec.class_field]]
        ids = vec.fields[spec.id_field] if spec.id_field else range(len(values))
        keep = [i for i, v in enumerate(values) if spec.mapping.get(v) in CLASS_NAMES]
        self.spec = spec
        self.geoms = vec.geoms[keep]
        self.cls = np.array([CLASS_NAMES.index(spec.mapping[values[i]]) for i in keep], np.int16)
        # Row numbers make ids unique where the source repeats one (a multipolygon's parts).
        self.ids = [f"{spec.prefix}:{ids[i]}#{i}" for i in keep]
        self.grid = g
        self.index = self._rasterise()

    def _rasterise(self) -> np.ndarray:
        """Polygon index per pixel (-1 none); points burn the pixel they fall in."""
        g = self.grid
        area = shapely.area(self.geoms)
        order = np.argsort(-area)  # large polygons first, so small ones inside stay visible
        shapes = [(self.geoms[i], int(i)) for i in order if self.geoms[i] is not None]
        if not shapes:
            return np.full((g.height, g.width), -1, np.int32)
        return rasterize(shapes, out_shape=(g.height, g.width), transform=g.transform,
                         fill=-1, dtype="int32", all_touched=bool(area.max() == 0))  # fmt: skip

    def at(self, y: int, x: int, k: int) -> ChipLabels:
        """The labels of the k x k chip whose top-left pixel is (y, x)."""
        idx = self.index[y : y + k, x : x + k].ravel()
        inside = idx[idx >= 0]
        if not inside.size:
            return ChipLabels([], -1, [])
        polys, counts = np.unique(inside, return_counts=True)
        by_class = np.bincount(self.cls[polys], weights=counts, minlength=len(CLASS_NAMES))
        share = by_class / idx.size
        order = np.argsort(-share)
        shares = [(CLASS_NAMES[c], float(share[c])) for c in order if share[c] > 0]
        top = int(order[0])
        point = bool(shapely.area(self.geoms[polys]).max() == 0)
        label = top if share[top] >= self.spec.min_share or point else -1
        own = polys[np.argsort(-counts)]
        if label >= 0:  # the label's polygon first: the largest one of the label's class
            own = np.concatenate([own[self.cls[own] == label], own[self.cls[own] != label]])
        return ChipLabels(shares, label, [self.ids[i] for i in own])

    def centred_chips(self, k: int) -> Iterator[tuple[int, int, int]]:
        """(polygon, y, x): a k x k chip centred on a point inside each polygon, on the grid."""
        g = self.grid
        inv = ~g.transform
        for i, geom in enumerate(self.geoms):
            if geom is None or geom.is_empty:
                continue
            p = shapely.point_on_surface(geom)
            col, row = inv @ (p.x, p.y)
            y, x = int(round(row - k / 2)), int(round(col - k / 2))
            if 0 <= y <= g.height - k and 0 <= x <= g.width - k:
                win = self.index[y : y + k, x : x + k]
                share = float((win == i).mean())
                if share < self.spec.centred_min_share:
                    continue
                # The polygon's class must be the chip's largest mapped class.
                inside = win[win >= 0]
                by_class = np.bincount(self.cls[inside], minlength=len(CLASS_NAMES))
                if by_class[self.cls[i]] >= by_class.max():
                    yield i, y, x

    def centred_labels(self, poly: int, y: int, x: int, k: int) -> ChipLabels:
        """The labels of a polygon-centred chip: the polygon's class, its id first."""
        lab = self.at(y, x, k)
        own = self.ids[poly]
        groups = [own] + [gid for gid in lab.groups if gid != own]
        return ChipLabels(lab.shares, int(self.cls[poly]), groups)
