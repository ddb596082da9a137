"""Processing algorithm ``unigeo:tophits``: the k places most similar to a query."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorDestination,
)

from ...engine import pipeline
from .base import QueryAlgorithm
from .common import canceled_of, engine_errors, name_output, progress_of


class TopHitsAlgorithm(QueryAlgorithm):
    """Top-k tiles by cosine similarity, kept apart by non-maximum suppression."""

    NAME = "tophits"
    K = "K"
    MIN_DISTANCE = "MIN_DISTANCE"
    AS_POLYGONS = "AS_POLYGONS"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_source_params()
        self.add_query_params()
        self.addParameter(
            QgsProcessingParameterNumber(
                self.K, self.tr("Number of places"), defaultValue=20, minValue=1
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_DISTANCE,
                self.tr("Minimum distance between places (tiles)"),
                defaultValue=1,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.AS_POLYGONS, self.tr("Tile polygons instead of points"), False
            )
        )
        self.add_model_params()
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT, self.tr("Similar places"), QgsProcessing.TypeVectorAnyGeometry
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not Path(out).suffix:
            out += ".gpkg"  # a bare name typed in a script: the default format
        if Path(out).suffix.lower() not in pipeline.HIT_FORMATS:
            raise QgsProcessingException(
                self.tr(f"Write the hits to a .gpkg, .geojson or .shp file, not '{out}'")
            )
        k = self.parameterAsInt(parameters, self.K, context)
        radius = self.parameterAsInt(parameters, self.MIN_DISTANCE, context)
        polygons = self.parameterAsBool(parameters, self.AS_POLYGONS, context)
        model, store, query = self.prepare_query(parameters, context, feedback)
        prov = pipeline.provenance(model, store, k=k, min_distance=radius, **query.provenance())
        with engine_errors():
            hits = pipeline.hits(
                out,
                store,
                query,
                k,
                radius,
                polygons,
                prov,
                progress=progress_of(feedback, 80.0, 100.0),
                is_canceled=canceled_of(feedback),
            )
        feedback.pushInfo(f"{len(hits)} places for {query.description()}")
        name_output(context, out, f"top {k}: {query.description()}", "hits", prov)
        return {self.OUTPUT: out}
