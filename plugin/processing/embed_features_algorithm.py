"""Processing algorithm ``unigeo:embedfeatures``: an embedding per point or polygon feature.

The embedding is stored as a JSON array of D floats in the text field ``unigeo_embedding``
(text survives every vector format, GeoPackage, CSV and GeoJSON alike, and reads back with
``json.loads``); ``unigeo_n_tiles`` says how many tiles were averaged.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProject,
    QgsRectangle,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ...engine import pipeline
from ...engine.model import Modality
from ..qgis_reader import qgs_crs
from .base import UniGeoAlgorithm
from .common import engine_errors

EMBEDDING_FIELD = "unigeo_embedding"
COUNT_FIELD = "unigeo_n_tiles"


def embedding_json(vec: np.ndarray | None) -> str | None:
    """A unit vector as a compact JSON array (6 significant digits), None stays None."""
    return None if vec is None else json.dumps([float(f"{v:.6g}") for v in vec])


class EmbedFeaturesAlgorithm(UniGeoAlgorithm):
    """Points take the tile under them; polygons the mean of the tiles inside."""

    NAME = "embedfeatures"
    RASTER = "RASTER"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT,
                self.tr("Points or polygons"),
                [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon],
            )
        )
        self.add_source_params(self.RASTER, with_extent=False, query=False)
        self.add_model_params()
        self.addParameter(
            QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Features with embeddings"))
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.tr("INPUT must be a point or polygon layer"))
        model = self.load_model(parameters, context)
        extent = self._extent(source, parameters, context, model)
        store = self.source_store(parameters, context, feedback, model, self.RASTER, extent)
        to_store = QgsCoordinateTransform(
            source.sourceCrs(), qgs_crs(store.crs), QgsProject.instance().transformContext()
        )
        rows = []
        total = max(source.featureCount(), 1)
        for i, feat in enumerate(source.getFeatures()):
            if feedback.isCanceled():
                return {}
            with engine_errors():
                vec, n = feature_embedding(store, feat, to_store)
            rows.append((feat, vec, n))
            feedback.setProgress(80.0 + 15.0 * (i + 1) / total)
        fields = QgsFields(source.fields())
        fields.append(QgsField(COUNT_FIELD, QVariant.Int))
        fields.append(QgsField(EMBEDDING_FIELD, QVariant.String))
        sink, dest = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, source.wkbType(), source.sourceCrs()
        )
        for feat, vec, n in rows:
            out = QgsFeature(fields)
            out.setGeometry(feat.geometry())
            out.setAttributes([*feat.attributes(), n, embedding_json(vec)])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
        feedback.pushInfo(f"{sum(1 for r in rows if r[2])}/{len(rows)} features embedded")
        return {self.OUTPUT: dest}

    def _extent(self, source, parameters, context, model):
        """The features' extent grown by one tile: only that part of the raster is embedded."""
        if self.parameterAsFile(parameters, self.STORE, context):
            return None
        spec = model.spec(Modality.AERIAL).preprocess
        tile_m = spec.size * (spec.gsd_m or 1.0)
        crs = source.sourceCrs()
        if not crs.isValid():
            raise QgsProcessingException(self.tr("INPUT has no CRS; set one in its properties"))
        pad = tile_m / 111_000.0 if crs.isGeographic() else tile_m
        r = QgsRectangle(source.sourceExtent())
        r.grow(pad)
        wkt = crs.toWkt(crs.WKT_PREFERRED_GDAL)
        return (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()), wkt


def feature_embedding(
    store: Any, feat: QgsFeature, to_store: QgsCoordinateTransform
) -> tuple[np.ndarray | None, int]:
    """The unit embedding of one feature and the number of tiles behind it (0: none)."""
    if not feat.hasGeometry():
        return None, 0
    geom = feat.geometry()
    geom.transform(to_store)
    if geom.type() == QgsWkbTypes.PointGeometry:
        return pipeline.place_embedding(store, points=[(v.x(), v.y()) for v in geom.vertices()])
    return pipeline.place_embedding(store, polygon=bytes(geom.asWkb()))
