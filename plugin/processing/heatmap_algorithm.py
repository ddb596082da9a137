"""Processing algorithm ``unigeo:heatmap``: a similarity heatmap GeoTIFF for a query."""

from __future__ import annotations

from qgis.core import QgsProcessingParameterRasterDestination

from ...engine import pipeline
from .base import QueryAlgorithm
from .common import canceled_of, engine_errors, name_output, progress_of


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
        model, store, query = self.prepare_query(parameters, context, feedback)
        prov = pipeline.provenance(model, store, **query.provenance())
        with engine_errors():
            # in memory, or chunk by chunk for stores above 2*10^7 tiles (flat memory)
            pipeline.heatmap(
                out,
                store,
                query,
                provenance=prov,
                progress=progress_of(feedback, 80.0, 100.0),
                is_canceled=canceled_of(feedback),
            )
        feedback.pushInfo(f"query: {query.description()}")
        name_output(context, out, f"similarity: {query.description()}", "heatmap", prov)
        return {self.OUTPUT: out}
