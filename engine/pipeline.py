"""The engine's use cases, one call each, for every front end: the GUI, Processing and the CLI.

A front end turns what it has (QGIS layers and dialogs, Processing parameters, command-line
flags) into plain values, calls one function here and shows the result, so a feature or a fix
lands once. Front ends import this module, :mod:`.errors`, :mod:`.model` (the model's data
types), :mod:`.raster` (reading rasters, choosing bands) and :mod:`.library` (the model manager);
everything else is the engine's inside (tests/test_layering.py holds the plugin to that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classify.land_use import Classification, write_classification
from .classify.prompts import default_classify_mode
from .classify.report import ValidationReport, report_paths, write_validation_report
from .classify.spec import ClassifySpec, classify, validate
from .classify.validation import UNCERTAIN
from .embed.job import embed_raster
from .embed.plan import EmbedPlan, plan_embedding, recorded_tiles_per_s
from .errors import InputError, StoreError
from .geo.outputs import OutputInfo, read_output
from .geo.tiff import write_embeddings_tiff
from .geo.vector import VECTOR_DRIVERS
from .grid import Bounds, TileGrid
from .model.contract import Modality
from .model.core import UniGeoModel
from .model.preprocess import read_exif_latlon
from .model.sessions import resolve_providers
from .raster.reader import RasterReader
from .raster.tiling import grid_for_raster
from .search import domain
from .search import streaming as S
from .search.ann import AnnIndex, top_k_ann
from .search.gps_field import encode_field, field_grid, write_field
from .search.hits import Hit, write_hits
from .search.query import Query, place_embedding, tiles_in_polygon
from .search.spec import Place, QuerySpec, Region, build_query
from .store import open_store as open_any_store
from .store.cache import StoreCache
from .store.window import DEFAULT_MAX_NODATA, keep_tiles, restrict_nodata, store_window

__all__ = [
    # the use cases
    "load_model", "resolve_providers", "read_exif_latlon", "default_classify_mode",
    "tile_grid", "plan", "cached_store", "embed", "open_store", "store_window", "restrict_nodata",
    "write_embeddings_tiff", "build_query", "heatmap", "hits", "domain_warning",
    "place_embedding", "gps_field", "write_field", "classify", "validate", "report_paths",
    "write_classification", "write_validation_report", "provenance", "read_output",
    # the plain data and constants they take and give
    "QuerySpec", "Place", "Region", "ClassifySpec", "Classification", "ValidationReport",
    "CachedStore", "EmbedPlan", "OutputInfo", "Hit", "Query", "Modality",
    "DEFAULT_MAX_NODATA", "UNCERTAIN", "HIT_FORMATS",
]  # fmt: skip

HIT_FORMATS = tuple(VECTOR_DRIVERS)  # file suffixes hits can be written to
Progress = Callable[[float], None] | None
Canceled = Callable[[], bool] | None
Store = Any  # an embedding store of either kind, or a window of one


# -- the model --------------------------------------------------------------------------------
def load_model(
    folder: str | Path, provider: str | None = None, threads: int | None = None
) -> UniGeoModel:
    """The model bundle in ``folder``, its encoders on ``provider`` (None: the best available)."""
    return UniGeoModel.load(folder, providers=provider, threads=threads)


# -- the store of a raster --------------------------------------------------------------------
def tile_grid(
    model: UniGeoModel,
    reader: RasterReader,
    modality: Modality = Modality.AERIAL,
    stride_px: int | None = None,
    extent: Bounds | None = None,
    extent_crs: str | None = None,
) -> TileGrid:
    """The tiles of ``reader`` (or of ``extent`` in ``extent_crs``) for the ``modality`` encoder."""
    spec = model.spec(modality).preprocess
    return grid_for_raster(reader, spec, stride_px=stride_px, extent=extent, extent_crs=extent_crs)


def plan(
    model: UniGeoModel,
    reader: RasterReader,
    grid: TileGrid,
    folders: Sequence[str | Path],
    modality: Modality = Modality.AERIAL,
) -> EmbedPlan:
    """An embedding's estimate and warnings; ``folders`` hold earlier stores that timed theirs."""
    rate = recorded_tiles_per_s(folders, model.model_hash)
    dom, aerial = model.bundle.training_domain, modality is Modality.AERIAL
    return plan_embedding(reader, grid, dom, aerial=aerial, tiles_per_s=rate)


@dataclass
class CachedStore:
    """The cache's store of one raster, grid, model and encoder: ``store`` None until embedded."""

    cache: StoreCache
    key: str
    store: Store | None

    @property
    def path(self) -> Path:
        return self.cache.path_for(self.key)

    def keep(self) -> None:
        """Evict other stores until the cache fits its cap again; this one stays."""
        self.cache.evict(keep=(self.key,))


def cached_store(
    model: UniGeoModel,
    reader: RasterReader,
    grid: TileGrid,
    cache_dir: str | Path,
    cache_bytes: int,
    modality: Modality = Modality.AERIAL,
) -> CachedStore:
    """The store cache's entry for embedding ``reader`` on ``grid`` with ``model``."""
    cache = StoreCache(cache_dir, cache_bytes)
    # a DSM store of the same grid must not be taken for the aerial one
    suffix = "" if modality is Modality.AERIAL else f":{modality.value}"
    key = cache.key(reader.fingerprint() + suffix, model.model_hash, grid)
    return CachedStore(cache, key, cache.get_or_none(key))


def embed(
    model: UniGeoModel,
    reader: RasterReader,
    grid: TileGrid,
    folder: str | Path,
    modality: Modality = Modality.AERIAL,
    block_tiles: int = 16,
    **options: Any,
) -> Store:
    """Embed every tile of ``grid`` into the store ``folder`` (resumable); returns the store.

    ``options``: ``batch_size``, ``workers``, ``progress``, ``is_canceled``, ``resume``, ``meta``.
    """
    return embed_raster(model, reader, grid, folder, modality, block_tiles=block_tiles, **options)


def open_store(
    folder: str | Path,
    model: UniGeoModel | None = None,
    max_nodata: float | None = DEFAULT_MAX_NODATA,
) -> Store:
    """The store in ``folder``, its tiles with more no data than ``max_nodata`` left out.

    Raises:
        StoreError: no store there, or (with ``model``) one embedded with another model.
    """
    store = restrict_nodata(open_any_store(folder), max_nodata)
    if model is not None and store.model_hash != model.model_hash:
        raise StoreError(
            f"{folder} was embedded with another model (hash {store.model_hash[:12]}, this "
            f"model {model.model_hash[:12]}); embed the raster again with this model or pick the "
            "model it was made with"
        )
    return store


# -- queries ----------------------------------------------------------------------------------
def heatmap(
    path: str | Path,
    store: Store,
    query: Query,
    mask: Sequence[tuple[Any, str | None]] = (),
    percentiles: bool = True,
    provenance: Mapping[str, Any] | None = None,
    progress: Progress = None,
    is_canceled: Canceled = None,
) -> Path:
    """Write the query's heatmap GeoTIFF (band 1 cosine, band 2 percentile within the area).

    ``mask``: ``(polygon, CRS)`` pairs; only tiles whose centre lies inside one are scored, and
    percentiles rank within them. In memory, or chunk by chunk for very large stores.
    """
    if mask:
        keep = np.zeros(store.grid.shape, dtype=bool)
        for polygon, crs in mask:
            keep[tiles_in_polygon(store, polygon, crs or None)] = True
        if not keep.any():
            raise InputError("no embedded tile centre lies inside the area's polygons")
        store = keep_tiles(store, keep)
    return S.heatmap_auto(path, store, query, percentiles, provenance, progress, is_canceled)


def hits(
    path: str | Path,
    store: Store,
    query: Query,
    k: int,
    min_distance: int = 1,
    as_polygons: bool = False,
    provenance: Mapping[str, Any] | None = None,
    ann: bool = False,
    progress: Progress = None,
    is_canceled: Canceled = None,
) -> list[Hit]:
    """Write the query's ``k`` best places (NMS ``min_distance`` tiles apart); returns them.

    ``ann``: rank with the store's FAISS index (see ``python -m engine index``), not exactly.
    """
    if ann:
        found = top_k_ann(store, AnnIndex.load(store), query.vector(), k, min_distance)
    else:
        found = S.hits_auto(store, query.vector(), k, min_distance, progress, is_canceled)
    write_hits(path, found, store.grid.crs, as_polygons=as_polygons, provenance=provenance)
    return found


def domain_warning(store: Store, model: UniGeoModel) -> str | None:
    """A sentence when ``store`` lies (partly) outside the model's training domain, else None."""
    return domain.domain_warning(store, model.bundle.training_domain)


def gps_field(
    model: UniGeoModel,
    crs: str,
    box: Bounds,
    cell_size: float,
    query: Query | None = None,
    progress: Progress = None,
    is_canceled: Canceled = None,
) -> tuple[TileGrid, np.ndarray | None]:
    """GPS embeddings of every cell of ``box`` (or their scores against ``query``): ``(grid,
    field)``, field None when cancelled. Write it with :func:`write_field`."""
    grid = field_grid(crs, box, cell_size, model.dim, scored=query is not None)
    return grid, encode_field(model, grid, query, progress, is_canceled)


# -- provenance -------------------------------------------------------------------------------
def provenance(model: UniGeoModel, store: Store | None = None, **extra: Any) -> dict[str, Any]:
    """What an output records about its making: the model, the store, then ``extra``."""
    out = {"model": f"{model.bundle.name} {model.bundle.version}", "model_hash": model.model_hash}
    if store is not None:
        out["store"] = str(store.folder)
    out.update(extra)
    return out
