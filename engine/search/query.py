"""Queries: weighted positive and negative embedding terms, and builders for every modality.

A :class:`Query` is a list of terms (a unit vector, a weight, a description, a sign). Its vector is
``normalise(Σ w·v over positives − Σ w·v over negatives)``. Builders turn a map point, a region,
text, a photo, a DSM patch or GPS coordinates into a one-term query; :func:`combine` mixes
queries of any modality, since every modality lives in the same embedding space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..geo import crs as C
from ..geo.geometry import GeometryLike, cells_inside
from ..model.contract import Modality

if TYPE_CHECKING:
    from ..model.core import UniGeoModel
    from ..store.npy import EmbeddingStore

WGS84 = "EPSG:4326"


def _unit(vector: Any, what: str) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise InputError(f"{what} is empty or holds non-finite values")
    n = float(np.linalg.norm(v))
    if n == 0.0:
        raise InputError(f"{what} is a zero vector (an empty or nodata tile?)")
    return (v / n).astype(np.float32)


@dataclass(frozen=True)
class QueryTerm:
    """One weighted example of what to find (or, if ``negative``, what to avoid)."""

    vector: np.ndarray  # unit vector [D], float32
    weight: float  # > 0; relative importance among the terms
    description: str  # for provenance and layer names, e.g. "text 'wetland'"
    negative: bool = False  # True: push scores away from this example


@dataclass
class Query:
    """A weighted combination of positive and negative examples in the shared embedding space."""

    terms: list[QueryTerm] = field(default_factory=list)

    def add(
        self, vector: Any, weight: float = 1.0, negative: bool = False, description: str = ""
    ) -> Query:
        """Add an example (normalised to unit length) and return ``self`` for chaining."""
        if not (np.isfinite(weight) and weight > 0):
            raise InputError(f"a query weight must be a positive number, got {weight}")
        v = _unit(vector, f"query term '{description or 'vector'}'")
        if self.terms and v.shape != self.terms[0].vector.shape:
            raise InputError(
                f"query term has dimension {v.shape[0]}, earlier terms have "
                f"{self.terms[0].vector.shape[0]}: were they made with different models?"
            )
        self.terms.append(QueryTerm(v, float(weight), description or "vector", bool(negative)))
        return self

    @property
    def dim(self) -> int:
        """The embedding dimension D (0 for an empty query)."""
        return int(self.terms[0].vector.shape[0]) if self.terms else 0

    def vector(self) -> np.ndarray:
        """``normalise(Σ w·v (positives) − Σ w·v (negatives))`` as float32 ``[D]``."""
        if not self.terms:
            raise InputError("the query is empty: add at least one example")
        total = np.zeros(self.dim, dtype=np.float64)
        for t in self.terms:
            total += (-t.weight if t.negative else t.weight) * t.vector.astype(np.float64)
        n = float(np.linalg.norm(total))
        if n < 1e-6:
            raise InputError(
                "the positive and negative examples cancel out; change their weights or examples"
            )
        return (total / n).astype(np.float32)

    def description(self) -> str:
        """A short human-readable summary, e.g. ``"text 'lake' − 0.5×point (1, 2)"``."""
        parts = []
        for i, t in enumerate(self.terms):
            w = "" if t.weight == 1.0 else f"{t.weight:g}×"
            sign = "− " if t.negative else ("+ " if i else "")
            parts.append(f"{sign}{w}{t.description}")
        return " ".join(parts) if parts else "empty query"

    def provenance(self) -> dict[str, Any]:
        """What to store with an output layer: the description and each term's weight/sign."""
        return {
            "query": self.description(),
            "query_terms": [
                {"description": t.description, "weight": t.weight, "negative": t.negative}
                for t in self.terms
            ],
        }


def point_in_crs(x: float, y: float, src: str, dst: str) -> tuple[float, float]:
    """``(x, y)`` of CRS ``src`` in CRS ``dst`` (unchanged when the two are the same CRS)."""
    if C.same_crs(src, dst):
        return float(x), float(y)
    return C.transform_point(x, y, src, dst)


def _need_modality(model: UniGeoModel | None, modality: Modality) -> UniGeoModel:
    if model is None:
        raise InputError(f"a {modality.value} query needs a loaded model")
    if not model.has(modality):
        raise InputError(f"the loaded model has no {modality.value} encoder; choose another model")
    return model


def point_query(
    store: EmbeddingStore,
    x: float,
    y: float,
    crs: str | None = None,
    gps_weight: float = 0.0,
    model: UniGeoModel | None = None,
) -> Query:
    """The embedding of the tile under a map point, optionally mixed with its GPS embedding.

    Args:
        store: The embedding store.
        x, y: The point, in ``crs`` (default: the store's CRS).
        crs: CRS of the point; it is transformed to the store's CRS.
        gps_weight: In [0, 1]; the tile term gets ``1 - gps_weight``, the GPS embedding of the
            point's lat/lon gets ``gps_weight`` (needs ``model`` with a GPS encoder).
        model: The model, needed only when ``gps_weight > 0``.
    """
    if not 0.0 <= gps_weight <= 1.0:
        raise InputError(f"gps_weight must lie in [0, 1], got {gps_weight}")
    if not (np.isfinite(x) and np.isfinite(y)):
        raise InputError(f"point ({x}, {y}) must have finite coordinates")
    src = crs or store.crs
    sx, sy = point_in_crs(x, y, src, store.crs)
    cell = store.grid.cell_of(sx, sy)
    if cell is None:
        b = store.grid.bounds
        raise InputError(
            f"point ({x:.6g}, {y:.6g}) lies outside the embedded area "
            f"({b[0]:.6g}, {b[1]:.6g}, {b[2]:.6g}, {b[3]:.6g} in {store.crs}); "
            "click inside the embedded raster or embed this area first"
        )
    row, col = cell
    if not bool(store.valid[row, col]):
        raise InputError(
            f"point ({x:.6g}, {y:.6g}) falls on a nodata tile (row {row}, col {col}); "
            "click on imagery with data"
        )
    q = Query()
    label = f"point ({sx:.1f}, {sy:.1f})"
    if gps_weight < 1.0:
        tile = np.asarray(store.embeddings[row, col], dtype=np.float32)
        q.add(tile, 1.0 - gps_weight, description=label)
    if gps_weight > 0.0:
        lon, lat = point_in_crs(sx, sy, store.crs, WGS84)
        q.add(_gps_vector(model, lat, lon), gps_weight, description=f"gps ({lat:.5f}, {lon:.5f})")
    return q


def region_query(
    store: EmbeddingStore, polygon: GeometryLike, crs: str | None = None, min_tiles: int = 1
) -> Query:
    """The mean embedding of the valid tiles whose centre lies inside ``polygon``.

    Args:
        store: The embedding store.
        polygon: A (multi)polygon as WKT, WKB or GeoJSON (see :mod:`~engine.geo.geometry`).
        crs: CRS of the polygon (default: the store's CRS).
        min_tiles: Fewest tiles the region must cover.
    """
    rows, cols = tiles_in_polygon(store, polygon, crs)
    if rows.size < max(1, min_tiles):
        raise InputError(
            f"the region covers {rows.size} embedded tile centre(s) with data (need "
            f"{max(1, min_tiles)}); draw a larger region inside the embedded area"
        )
    vecs = np.asarray(store.embeddings[rows, cols], dtype=np.float32)
    return Query().add(vecs.mean(axis=0), description=f"region of {rows.size} tiles")


def tiles_in_polygon(
    store: EmbeddingStore, polygon: GeometryLike, crs: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Local (rows, cols) of the valid tiles whose centre lies inside ``polygon`` (row-major).

    ``polygon`` is WKT, WKB or GeoJSON in ``crs`` (default: the store's); an invalid one is
    repaired first, and a centre on its boundary is outside.
    """
    rows, cols = cells_inside(store.grid, polygon, crs or store.crs)
    if rows.size == 0:
        return rows, cols
    r0, c0 = int(rows.min()), int(cols.min())
    valid = np.asarray(store.valid[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1], bool)
    keep = valid[rows - r0, cols - c0]
    return rows[keep], cols[keep]


def place_embedding(
    store: EmbeddingStore,
    points: Sequence[tuple[float, float]] = (),
    polygon: GeometryLike | None = None,
) -> tuple[np.ndarray | None, int]:
    """The unit mean embedding of a feature's tiles, and how many tiles it averages (0: none).

    Points (in the store's CRS) take the valid tile under each; a polygon the valid tiles whose
    centre lies inside it. ``(None, 0)`` when no valid tile is found or the mean is zero.
    """
    if polygon is not None:
        rows, cols = tiles_in_polygon(store, polygon)
    else:
        cells = [store.grid.cell_of(x, y) for x, y in points]
        cells = [c for c in cells if c is not None and store.valid[c]]
        rows = np.array([c[0] for c in cells], dtype=np.intp)
        cols = np.array([c[1] for c in cells], dtype=np.intp)
    if rows.size == 0:
        return None, 0
    mean = np.asarray(store.embeddings[rows, cols], dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        return None, 0
    return (mean / norm).astype(np.float32), int(rows.size)


def text_query(model: UniGeoModel, text: str, templates: list[str] | None = None) -> Query:
    """The text embedding of ``text``, averaged over prompt templates (default: the bundle's)."""
    m = _need_modality(model, Modality.TEXT)
    if not isinstance(text, str) or not text.strip():
        raise InputError("type some text to search for")
    tmpl = list(templates) if templates is not None else list(m.bundle.prompt_templates)
    vec = m.encode_text([text.strip()], templates=tmpl)[0]
    return Query().add(vec, description=f"text '{text.strip()}'")


def photo_query(model: UniGeoModel, path: str | Path) -> Query:
    """The street-level photo embedding of the image file at ``path``."""
    m = _need_modality(model, Modality.STREETVIEW)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"photo '{p}' does not exist or is not a file")
    vec = m.encode_photos([str(p)])[0]
    return Query().add(vec, description=f"photo '{p.name}'")


def dsm_query(model: UniGeoModel, heights: np.ndarray) -> Query:
    """The DSM embedding of a surface-height patch ``[H, W]`` (or ``[1, H, W]``) in metres.

    NaN marks nodata (the encoder's preprocessing handles it). A patch whose size differs from
    the encoder's input is resampled by nearest neighbour, which keeps heights in metres and
    nodata as NaN; for best results cut the patch at the model's GSD.
    """
    m = _need_modality(model, Modality.DSM)
    h = np.asarray(heights, dtype=np.float32)
    if h.ndim == 3 and h.shape[0] == 1:
        h = h[0]
    if h.ndim != 2 or min(h.shape) < 2:
        raise InputError(f"a DSM patch must be a 2-D height array, got shape {h.shape}")
    if np.isinf(h).any() or not np.isfinite(h).any():
        raise InputError("the DSM patch is all nodata or holds infinite heights")
    size = _encoder_size(m, Modality.DSM)
    label = f"dsm patch {h.shape[0]}x{h.shape[1]}"
    if size and h.shape != (size, size):
        # index of the source pixel whose centre is nearest to each target pixel centre
        ri = ((np.arange(size) + 0.5) * h.shape[0] / size).astype(np.intp)
        ci = ((np.arange(size) + 0.5) * h.shape[1] / size).astype(np.intp)
        h = h[np.ix_(ri, ci)]
    vec = m.encode_tiles(Modality.DSM, h[None, None])[0]
    return Query().add(vec, description=label)


def _encoder_size(model: UniGeoModel, modality: Modality) -> int:
    """The encoder's input side in pixels, or 0 when the model does not expose its spec."""
    spec = getattr(model, "spec", None)
    return int(spec(modality).preprocess.size) if callable(spec) else 0


def _gps_vector(model: UniGeoModel | None, lat: float, lon: float) -> np.ndarray:
    m = _need_modality(model, Modality.GPS)
    if not (np.isfinite(lat) and np.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise InputError(f"({lat}, {lon}) is not a WGS84 latitude/longitude")
    return m.encode_gps(np.array([lat], dtype=np.float32), np.array([lon], dtype=np.float32))[0]


def gps_query(model: UniGeoModel, lat: float, lon: float) -> Query:
    """The GPS-encoder embedding of a WGS84 (lat, lon) position."""
    vec = _gps_vector(model, float(lat), float(lon))
    return Query().add(vec, description=f"gps ({float(lat):.5f}, {float(lon):.5f})")


def combine(*queries: Query, weights: list[float] | None = None) -> Query:
    """Mix queries: each query's normalised vector becomes one term with its weight.

    A negative weight turns that query into a negative example ("like A but not like B").
    """
    if not queries:
        raise InputError("combine() needs at least one query")
    ws = [1.0] * len(queries) if weights is None else [float(w) for w in weights]
    if len(ws) != len(queries):
        raise InputError(f"got {len(ws)} weights for {len(queries)} queries")
    out = Query()
    for q, w in zip(queries, ws, strict=True):
        if w == 0.0:
            raise InputError("a combination weight of 0 drops its query; remove the query instead")
        label = q.description()
        label = f"({label})" if len(q.terms) > 1 else label
        out.add(q.vector(), abs(w), negative=w < 0, description=label)
    return out
