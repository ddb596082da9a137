"""Processing algorithm ``unigeo:encodetable``: texts of a field, or photos of a folder, to a table.

The output has no geometry: ``source`` (the text or the photo's file name), for photos
``latitude``/``longitude`` from EXIF GPS when present, and ``unigeo_embedding`` (a JSON array).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ...engine.contract import Modality
from ...engine.preprocess import read_exif_latlon
from .base import UniGeoAlgorithm, engine_errors
from .embed_features_algorithm import EMBEDDING_FIELD, embedding_json

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
BATCH = 16


class EncodeTableAlgorithm(UniGeoAlgorithm):
    """Embed texts with the text encoder, or photos with the street-level encoder."""

    NAME = "encodetable"
    FIELD = "FIELD"
    PHOTO_FOLDER = "PHOTO_FOLDER"
    TEMPLATES = "TEMPLATES"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT, self.tr("Table with texts"), [QgsProcessing.TypeVector], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD,
                self.tr("Text field"),
                parentLayerParameterName=self.INPUT,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.PHOTO_FOLDER,
                self.tr("Folder of photos (instead of texts)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.TEMPLATES, self.tr("Average texts over the model's prompt templates"), False
            )
        )
        self.add_model_params()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, self.tr("Embeddings table"), QgsProcessing.TypeVector
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        folder = self.parameterAsFile(parameters, self.PHOTO_FOLDER, context)
        source = self.parameterAsSource(parameters, self.INPUT, context)
        field = self.parameterAsString(parameters, self.FIELD, context)
        if not folder and (source is None or not field):
            raise QgsProcessingException(
                self.tr("Give a table (INPUT) and its text FIELD, or a PHOTO_FOLDER")
            )
        model = self.load_model(parameters, context)
        photos = folder != ""
        items = photo_files(folder) if photos else texts_of(source, field)
        templates = None
        if not photos and self.parameterAsBool(parameters, self.TEMPLATES, context):
            templates = list(model.bundle.prompt_templates)
        vecs = []
        with engine_errors():
            model.spec(Modality.STREETVIEW if photos else Modality.TEXT)  # clear error if absent
            for i in range(0, len(items), BATCH):
                if feedback.isCanceled():
                    return {}
                chunk = items[i : i + BATCH]
                if photos:
                    vecs.append(model.encode_photos([str(p) for p in chunk]))
                else:
                    vecs.append(model.encode_text(chunk, templates=templates))
                feedback.setProgress(95.0 * min(i + BATCH, len(items)) / len(items))
        emb = np.concatenate(vecs)
        fields = table_fields(photos)
        sink, dest = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, QgsWkbTypes.NoGeometry
        )
        for item, vec in zip(items, emb, strict=True):
            f = QgsFeature(fields)
            f.setAttributes(row_of(item, vec, photos))
            sink.addFeature(f, QgsFeatureSink.FastInsert)
        feedback.pushInfo(f"{len(items)} {'photos' if photos else 'texts'} embedded")
        return {self.OUTPUT: dest}


def photo_files(folder: str) -> list[Path]:
    """The photos of ``folder`` in name order; an error when there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise QgsProcessingException(f"PHOTO_FOLDER '{folder}' is not a folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not files:
        raise QgsProcessingException(f"no .jpg/.jpeg/.png photo in '{folder}'")
    return files


def texts_of(source, field: str) -> list[str]:
    """The non-empty texts of ``field``; an error when there are none."""
    idx = source.fields().indexOf(field)
    if idx < 0:
        raise QgsProcessingException(f"the table has no field '{field}'")
    out = []
    for f in source.getFeatures():
        v = f.attributes()[idx]
        if v is not None and str(v).strip() and str(v) != "NULL":
            out.append(str(v).strip())
    if not out:
        raise QgsProcessingException(f"field '{field}' holds no text")
    return out


def table_fields(photos: bool) -> QgsFields:
    """source [, latitude, longitude], unigeo_embedding."""
    fields = QgsFields()
    fields.append(QgsField("source", QVariant.String))
    if photos:
        fields.append(QgsField("latitude", QVariant.Double))
        fields.append(QgsField("longitude", QVariant.Double))
    fields.append(QgsField(EMBEDDING_FIELD, QVariant.String))
    return fields


def row_of(item, vec: np.ndarray, photos: bool) -> list:
    """The attribute values of one output row."""
    if not photos:
        return [item, embedding_json(vec)]
    ll = read_exif_latlon(item)
    lat, lon = (None, None) if ll is None else (float(ll[0]), float(ll[1]))
    return [item.name, lat, lon, embedding_json(vec)]
