"""Helpers every UniGeo algorithm shares: engine errors, progress, output naming, the cached
on-demand embedding of a raster layer (``embed_cached``) and reading query layers.
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

from ...engine import pipeline
from ...engine.errors import CancelledError, EngineError, describe_os_error
from ...engine.model import Modality
from ...engine.pipeline import Region
from ..qgis_reader import AUTO_SCALE, reader_for_layer
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
    model: Any,
    reader: Any,
    grid: Any,
    folders: list[Path],
    modality: Modality = Modality.AERIAL,
) -> None:
    """Push the embedding's estimate, and its pixel-size or job-size warning, to ``feedback``.

    ``folders`` hold earlier stores whose recorded throughput makes the estimate (the cache).
    """
    plan = pipeline.plan(model, reader, grid, folders, modality)
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
    model: Any,
    layer: QgsRasterLayer,
    bands: list[int] | None,
    feedback: QgsProcessingFeedback,
    extent: tuple[tuple[float, float, float, float], str] | None = None,
    stride_px: int | None = None,
    scale: str = AUTO_SCALE,
) -> Any:
    """Embed ``layer`` (or ``extent`` of it) into the store cache, or reuse the cached store.

    ``scale`` is the reader's (``"dtype"`` or ``"sensor:<name>"``); it is part of the cache key.
    """
    s = Settings.load()
    with engine_errors():
        if not model.has(Modality.AERIAL):
            raise QgsProcessingException("the model has no aerial encoder to embed rasters with")
        reader = reader_for_layer(layer, bands=bands, scale=scale)
        box, box_crs = extent if extent is not None else (None, None)
        stride = stride_px or s.stride_arg()
        grid = pipeline.tile_grid(model, reader, stride_px=stride, extent=box, extent_crs=box_crs)
        entry = pipeline.cached_store(model, reader, grid, s.cache_path(), s.cache_bytes())
        store = entry.store
        if store is None:
            feedback.pushInfo(f"Embedding {grid.rows}x{grid.cols} tiles of '{layer.name()}'")
            warn_before_embedding(feedback, model, reader, grid, [entry.cache.root])
            store = pipeline.embed(
                model,
                reader,
                grid,
                entry.path,
                block_tiles=BLOCK_TILES,
                progress=progress_of(feedback, 0.0, 80.0),
                is_canceled=canceled_of(feedback),
            )
        entry.keep()
    return store


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


def layer_region(layer: QgsVectorLayer, where: str = "") -> Region:
    """The (selected, else all) polygons of a layer as one example region (united in the engine).

    Raises:
        QgsProcessingException: the layer holds no geometry.
    """
    geoms = layer_geometries(layer)
    if not geoms:
        raise QgsProcessingException(f"layer '{layer.name()}' holds no geometry")
    what = "the polygons" if where else f"the polygons of layer '{layer.name()}'"
    return Region(tuple(geoms), layer_wkt(layer), where, what)


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
