"""Processing outputs load styled like the GUI's: a layer post-processor per UniGeo output.

When Processing loads an output (``runAndLoadResults``, or the dialog's "Open output file after
running"), QGIS calls the post-processor that :func:`style_output` attached to it. It applies the
same renderer as the GUI (``plugin/layers.py``: heatmap ramp over the percentile band, named
class palette, fixed 0–1 confidence ramp, ranked hit labels) and writes the provenance into the
layer metadata (Properties > Metadata).

The kind of an output is given by the algorithm, or read from the file by the engine
(:func:`engine.pipeline.read_output`: the band descriptions and ``UNIGEO_*`` tags it wrote), so
``name_output`` styles outputs of algorithms that do not say it.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
)

from ...engine.pipeline import read_output
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
    info = read_output(layer.source().split("|")[0])
    kind = kind or info.kind
    if kind == "heatmap":
        L.style_heatmap(layer)
    elif kind == "classes":
        if info.classes:
            L.style_classes(layer, info.classes, info.colors)
    elif kind == "confidence":
        L.style_confidence(layer)
    elif kind == "hits":
        L.style_hits(layer)
    prov = provenance if provenance is not None else info.provenance
    if prov:
        L.set_provenance(layer, prov)
    layer.triggerRepaint()
    return kind
