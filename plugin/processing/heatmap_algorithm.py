"""Processing algorithm ``unigeo:heatmap``: a similarity heatmap GeoTIFF for a query."""

from __future__ import annotations

from qgis.core import QgsProcessingParameterRasterDestination

from ...engine.similarity import write_heatmap
from .base import QueryAlgorithm, engine_errors, name_output, provenance


class HeatmapAlgorithm(QueryAlgorithm):
    """Cosine similarity of every tile to the query (band 1) and its percentile (band 2)."""

    NAME = "heatmap"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_source_params()
        self.add_query_params()
        self.add_model_params()
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Similarity heatmap"))
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        model, store, query, scores = self.run_query(parameters, context, feedback)
        if scores is None:
            return {}
        with engine_errors():
            write_heatmap(
                out, store, scores, provenance=provenance(model, store, **query.provenance())
            )
        feedback.pushInfo(f"query: {query.description()}")
        name_output(context, out, f"similarity: {query.description()}")
        return {self.OUTPUT: out}
