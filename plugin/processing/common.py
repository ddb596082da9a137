"""Helpers every UniGeo algorithm shares: engine errors, progress, output naming, provenance,
the cached on-demand embedding of a raster layer (``embed_cached``) and reading query layers.

``plugin.processing.base`` re-exports these names, so ``from .base import engine_errors`` etc.
keep working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ...engine.contract import Modality
from ...engine.errors import CancelledError, EngineError, describe_os_error
from ...engine.model import UniGeoModel
from ...engine.store.cache import StoreCache
from ...engine.store.npy import EmbeddingStore
from ..qgis_reader import reader_for_layer
from ..settings import Settings
from .outputs import style_output

BLOCK_TILES = 16  # resume/progress granularity of stores embedded from Processing


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Turn engine errors into QgsProcessingException with the same message."""
    try:
        yield
    except CancelledError as e:
        raise QgsProcessingException(f"Cancelled: {e}") from None
    except EngineError as e:
        raise QgsProcessingException(str(e)) from None
    except OSError as e:  # a system error no engine writer named: still one line, not a trace
        raise QgsProcessingException(describe_os_error(e)) from None


def warn_before_embedding(
    feedback: QgsProcessingFeedback,
    model: UniGeoModel,
    reader: Any,
    grid: Any,
    folders: list[Path],
    aerial: bool = True,
) -> None:
    """Push the embedding's estimate, and its pixel-size or job-size warning, to ``feedback``.

    ``folders`` hold earlier stores whose recorded throughput makes the estimate (the cache).
    """
    from ...engine.embed.plan import plan_embedding, recorded_tiles_per_s

    rate = recorded_tiles_per_s(folders, model.model_hash)
    domain = model.bundle.training_domain
    plan = plan_embedding(reader, grid, domain, aerial=aerial, tiles_per_s=rate)
    feedback.pushInfo(f"Estimate: {plan.summary()}")
    if (warning := plan.warning()) is not None:
        feedback.pushWarning(warning)


def progress_of(
    feedback: QgsProcessingFeedback, start: float = 0.0, end: float = 100.0
) -> Callable[[float], None]:
    """An engine ``progress(fraction)`` callback that drives ``feedback`` from start to end %."""

    def update(fraction: float) -> None:
        feedback.setProgress(start + (end - start) * max(0.0, min(1.0, float(fraction))))

    return update


def canceled_of(feedback: QgsProcessingFeedback) -> Callable[[], bool]:
    """An engine ``is_canceled()`` callback over ``feedback``."""
    return feedback.isCanceled


def name_output(
    context: QgsProcessingContext,
    path: str,
    name: str,
    kind: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Name the layer Processing loads from ``path`` and style it like the GUI when loaded.

    Args:
        context: The run's context.
        path: The output path (or sink destination).
        name: The layer name (e.g. "similarity: text 'lake'").
        kind: ``heatmap``, ``classes``, ``confidence`` or ``hits``; None: read from the file.
        provenance: The layer metadata; None: the file's ``UNIGEO_*`` tags.
    """
    if path and context.willLoadLayerOnCompletion(path):
        context.layerToLoadOnCompletionDetails(path).name = name[:120]
        style_output(context, path, kind, provenance)


def embed_cached(
    model: UniGeoModel,
    layer: QgsRasterLayer,
    bands: list[int] | None,
    feedback: QgsProcessingFeedback,
    extent: tuple[tuple[float, float, float, float], str] | None = None,
    stride_px: int | None = None,
) -> EmbeddingStore:
    """Embed ``layer`` (or ``extent`` of it) into the store cache, or reuse the cached store."""
    from ...engine.embed.job import embed_raster
    from ...engine.raster.tiling import grid_for_raster

    s = Settings.load()
    with engine_errors():
        if not model.has(Modality.AERIAL):
            raise QgsProcessingException("the model has no aerial encoder to embed rasters with")
        reader = reader_for_layer(layer, bands=bands)
        box, box_crs = extent if extent is not None else (None, None)
        grid = grid_for_raster(
            reader,
            model.spec(Modality.AERIAL).preprocess,
            stride_px=stride_px or s.stride_arg(),
            extent=box,
            extent_crs=box_crs,
        )
        cache = StoreCache(s.cache_path(), s.cache_bytes())
        key = cache.key(reader.fingerprint(), model.model_hash, grid)
        store = cache.get_or_none(key)
        if store is None:
            feedback.pushInfo(f"Embedding {grid.rows}x{grid.cols} tiles of '{layer.name()}'")
            warn_before_embedding(feedback, model, reader, grid, [cache.root])
            store = embed_raster(
                model,
                reader,
                grid,
                cache.path_for(key),
                block_tiles=BLOCK_TILES,
                progress=progress_of(feedback, 0.0, 80.0),
                is_canceled=canceled_of(feedback),
            )
        cache.evict(keep=(key,))
    return store


def provenance(model: UniGeoModel, store: EmbeddingStore | None, **extra: Any) -> dict[str, Any]:
    """What output layers record about their making."""
    out = {"model": f"{model.bundle.name} {model.bundle.version}", "model_hash": model.model_hash}
    if store is not None:
        out["store"] = str(store.folder)
    out.update(extra)
    return out


def parse_latlon(text: str) -> tuple[float, float]:
    """``"lat,lon"`` to floats; QgsProcessingException with the expected form otherwise."""
    try:
        lat, lon = (float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise QgsProcessingException(
            f"coordinates must be 'lat,lon' in WGS84 degrees (e.g. '47.02,-99.15'), got '{text}'"
        ) from None
    return lat, lon


def layer_wkt(layer: QgsVectorLayer) -> str:
    """The layer's CRS as GDAL-flavoured WKT (what the engine's CRS functions accept)."""
    return layer.crs().toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)


def _features(layer: QgsVectorLayer) -> Any:
    # the selection wins, as in the rest of QGIS: "use these features" without a new layer
    return layer.selectedFeatures() if layer.selectedFeatureCount() else layer.getFeatures()


def layer_geometries(layer: QgsVectorLayer) -> list[bytes]:
    """The (selected, else all) non-empty geometries of a layer, as WKB."""
    feats = (f for f in _features(layer) if f.hasGeometry() and not f.geometry().isEmpty())
    return [bytes(f.geometry().asWkb()) for f in feats]


def layer_union(layer: QgsVectorLayer) -> tuple[bytes, str]:
    """The union of a layer's (selected, else all) polygons as WKB, and the layer CRS WKT."""
    from ...engine.geo.geometry import union

    geoms = layer_geometries(layer)
    if not geoms:
        raise QgsProcessingException(f"layer '{layer.name()}' holds no geometry")
    try:
        return union(geoms, what=f"the polygons of layer '{layer.name()}'"), layer_wkt(layer)
    except EngineError as e:
        raise QgsProcessingException(str(e)) from None


def layer_points(layer: QgsVectorLayer) -> list[tuple[int, float, float]]:
    """``(feature id, x, y)`` of every point of a (multi)point layer, in the layer's CRS.

    Uses the selected features when there is a selection, else all; a multipoint feature gives
    one entry per part. Features without geometry are skipped, so an empty layer gives ``[]``.
    """
    out: list[tuple[int, float, float]] = []
    for f in _features(layer):
        if not f.hasGeometry():
            continue
        out += [(int(f.id()), float(v.x()), float(v.y())) for v in f.geometry().vertices()]
    return out
