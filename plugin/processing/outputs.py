"""Processing outputs load styled like the GUI's: a layer post-processor per UniGeo output.

When Processing loads an output (``runAndLoadResults``, or the dialog's "Open output file after
running"), QGIS calls the post-processor that :func:`style_output` attached to it. It applies the
same renderer as the GUI (``plugin/layers.py``: heatmap ramp over the percentile band, named
class palette, fixed 0–1 confidence ramp, ranked hit labels) and writes the provenance into the
layer metadata (Properties > Metadata).

The kind of an output is given by the algorithm, or read from the file (band description of the
GeoTIFFs the engine writes), so ``name_output`` styles outputs of algorithms that do not say it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
)

from ...engine.geo.tiff import TAG_PREFIX
from .. import layers as L

KINDS = ("heatmap", "classes", "confidence", "hits")

# Processing keeps a plain pointer to a post-processor: the Python object must outlive the
# run, or QGIS calls into a deleted object. Used ones are dropped when the next is made.
_ALIVE: list[OutputStyler] = []


class OutputStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles one loaded output like the GUI and stores its provenance as layer metadata."""

    def __init__(self, kind: str | None, provenance: dict[str, Any] | None) -> None:
        super().__init__()
        self.kind = kind
        self.provenance = provenance
        self.done = False

    def postProcessLayer(  # noqa: N802 (QGIS API)
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        try:
            apply_style(layer, self.kind, self.provenance)
        except Exception as e:  # noqa: BLE001 - a style problem must not fail a finished run
            if feedback is not None:
                feedback.pushWarning(f"UniGeo could not style '{layer.name()}': {e}")
        finally:
            self.done = True


def style_output(
    context: QgsProcessingContext,
    path: str,
    kind: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> OutputStyler | None:
    """Attach an :class:`OutputStyler` to the output ``path`` if Processing will load it.

    Args:
        context: The run's context.
        path: The output as returned by ``parameterAsOutputLayer`` (or a sink's destination).
        kind: One of :data:`KINDS`; None reads it from the file when it is loaded.
        provenance: What the layer metadata records; None reads the file's ``UNIGEO_*`` tags.

    Returns:
        The post-processor, or None when the output is not loaded on completion.
    """
    if not path or not context.willLoadLayerOnCompletion(path):
        return None
    _ALIVE[:] = [p for p in _ALIVE if not p.done]
    styler = OutputStyler(kind, dict(provenance) if provenance is not None else None)
    _ALIVE.append(styler)
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(styler)
    return styler


def apply_style(
    layer: QgsMapLayer, kind: str | None = None, provenance: dict[str, Any] | None = None
) -> str | None:
    """Style ``layer`` as a UniGeo output of ``kind`` (None: detect); returns the kind used."""
    source = layer.source().split("|")[0]
    kind = kind or detect_kind(source)
    if kind == "heatmap":
        L.style_heatmap(layer)
    elif kind == "classes":
        classes, colors = class_palette(source)
        if classes:
            L.style_classes(layer, classes, colors)
    elif kind == "confidence":
        L.style_confidence(layer)
    elif kind == "hits":
        L.style_hits(layer)
    prov = provenance if provenance is not None else file_provenance(source)
    if prov:
        L.set_provenance(layer, prov)
    layer.triggerRepaint()
    return kind


def detect_kind(path: str) -> str | None:
    """The kind of a UniGeo GeoTIFF from its first band's description (None: not one)."""
    first = _band_descriptions(path)[:1]
    text = (first[0] or "").lower() if first else ""
    if text == "cosine similarity":
        return "heatmap"
    if text == "land-use class":
        return "classes"
    if text.startswith("confidence"):
        return "confidence"
    return None


def class_palette(path: str) -> tuple[list[str], dict[str, str]]:
    """Class names (``CLASS_<i>`` band tags) and their ``#rrggbb`` colours (colour table)."""
    with _raster(path) as ds:
        band = ds.GetRasterBand(1) if ds is not None else None
        tags = dict(band.GetMetadata() or {}) if band is not None else {}
        table = band.GetRasterColorTable() if band is not None else None
        cmap = {i: table.GetColorEntry(i) for i in range(table.GetCount())} if table else {}
        band = table = None
    classes = []
    while f"CLASS_{len(classes)}" in tags:
        classes.append(tags[f"CLASS_{len(classes)}"])
    colors = {
        name: "#{:02x}{:02x}{:02x}".format(*cmap[i][:3])
        for i, name in enumerate(classes)
        if i in cmap
    }
    return classes, colors


def file_provenance(path: str) -> dict[str, Any]:
    """The ``UNIGEO_*`` tags of a GeoTIFF or GeoPackage as ``{key: value}`` (JSON decoded)."""
    tags = _raster_tags(path) if Path(path).suffix.lower() in (".tif", ".tiff") else {}
    if not tags and Path(path).suffix.lower() == ".gpkg":
        tags = _gpkg_tags(path)
    out: dict[str, Any] = {}
    for key, text in tags.items():
        if key.startswith(TAG_PREFIX):
            out[key[len(TAG_PREFIX) :].lower()] = _decode(text)
    return out


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@contextlib.contextmanager
def _raster(path: str) -> Iterator[Any]:
    """The GDAL dataset of ``path`` (read-only), or None when it is not a raster GDAL reads."""
    from ...engine.geo.gdal_errors import gdal_errors, osgeo

    gdal = osgeo()[0]
    with gdal_errors(f"reading {Path(path).name}", raise_on_failure=False):
        ds = gdal.OpenEx(str(path), gdal.OF_RASTER) if Path(path).is_file() else None
        try:
            yield ds
        finally:
            ds = None


def _band_descriptions(path: str) -> tuple[str | None, ...]:
    with _raster(path) as ds:
        if ds is None:  # not a raster: no UniGeo kind
            return ()
        return tuple(
            ds.GetRasterBand(i + 1).GetDescription() or None for i in range(ds.RasterCount)
        )


def _raster_tags(path: str) -> dict[str, str]:
    with _raster(path) as ds:  # metadata is optional
        return dict(ds.GetMetadata() or {}) if ds is not None else {}


def _gpkg_tags(path: str) -> dict[str, str]:
    from ...engine.geo.vector import layer_metadata

    return layer_metadata(path)  # metadata is optional: {} when unreadable
