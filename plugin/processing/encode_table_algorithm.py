"""Processing algorithm ``unigeo:encodetable``: texts of a field, or photos of a folder, to a table.

Texts: one output row per input feature, in input order, with the input's geometry and
attributes, plus ``unigeo_fid`` (the input feature id), ``unigeo_status`` (``ok``, or why there
is no embedding: an empty/NULL text) and ``unigeo_embedding`` (a JSON array, NULL when
``unigeo_status`` is not ``ok``). Photos: one row per photo file, with ``source`` (file name),
``latitude``/``longitude`` from EXIF GPS and a WGS84 point where they are known, status and
embedding (a photo that cannot be read gets its reason, the others are still embedded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
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

from ...engine.errors import EngineError
from ...engine.model import Modality
from ...engine.pipeline import read_exif_latlon
from .base import UniGeoAlgorithm
from .common import engine_errors
from .embed_features_algorithm import EMBEDDING_FIELD, embedding_json

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
BATCH = 16
FID_FIELD = "unigeo_fid"
STATUS_FIELD = "unigeo_status"
OK = "ok"
EMPTY = "no embedding: empty or NULL text"


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
        if folder:
            with engine_errors():
                model.spec(Modality.STREETVIEW)  # a clear error if the bundle has none
            return self._photos(parameters, context, feedback, model, photo_files(folder))
        templates = None
        if self.parameterAsBool(parameters, self.TEMPLATES, context):
            templates = list(model.bundle.prompt_templates)
        with engine_errors():
            model.spec(Modality.TEXT)
        return self._texts(parameters, context, feedback, model, source, field, templates)

    def _texts(self, parameters, context, feedback, model, source, field, templates):
        idx = source.fields().indexOf(field)
        if idx < 0:
            raise QgsProcessingException(f"the table has no field '{field}'")
        feats = list(source.getFeatures())
        texts = [text_of(f.attributes()[idx]) for f in feats]
        todo = [i for i, t in enumerate(texts) if t is not None]
        if not todo:
            raise QgsProcessingException(f"field '{field}' holds no text in any feature")
        vecs = self._encode(
            [texts[i] for i in todo], lambda c: model.encode_text(c, templates=templates), feedback
        )
        if vecs is None:
            return {}
        emb: list[np.ndarray | None] = [None] * len(feats)
        for i, v in zip(todo, vecs, strict=True):
            emb[i] = v
        fields = text_fields(source.fields())
        sink, dest = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, source.wkbType(), source.sourceCrs()
        )
        for feat, vec in zip(feats, emb, strict=True):
            out = QgsFeature(fields)
            out.setGeometry(feat.geometry())
            status = OK if vec is not None else EMPTY
            out.setAttributes([*feat.attributes(), int(feat.id()), status, embedding_json(vec)])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
        feedback.pushInfo(f"{len(todo)}/{len(feats)} texts embedded")
        if len(todo) < len(feats):
            feedback.pushWarning(
                f"{len(feats) - len(todo)} feature(s) have an empty or NULL '{field}': their "
                f"{EMBEDDING_FIELD} is NULL ({STATUS_FIELD} says why)"
            )
        return {self.OUTPUT: dest}

    def _photos(self, parameters, context, feedback, model, files):
        vecs, status = encode_photos_each(model, files, feedback)
        if vecs is None:
            return {}
        fields = photo_fields()
        wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
        sink, dest = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, QgsWkbTypes.Point, wgs84
        )
        for path, vec, st in zip(files, vecs, status, strict=True):
            out = QgsFeature(fields)
            ll = _latlon(path)
            if ll is not None:
                out.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(ll[1], ll[0])))
            lat, lon = (None, None) if ll is None else ll
            out.setAttributes([path.name, lat, lon, st, embedding_json(vec)])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
        n_ok = sum(s == OK for s in status)
        feedback.pushInfo(f"{n_ok}/{len(files)} photos embedded")
        return {self.OUTPUT: dest}

    @staticmethod
    def _encode(items: list, encode, feedback) -> list[np.ndarray] | None:
        """``encode`` over ``items`` in batches with progress; None when cancelled."""
        out: list[np.ndarray] = []
        with engine_errors():
            for i in range(0, len(items), BATCH):
                if feedback.isCanceled():
                    return None
                out.extend(encode(items[i : i + BATCH]))
                feedback.setProgress(95.0 * min(i + BATCH, len(items)) / len(items))
        return out


def encode_photos_each(model, files: list[Path], feedback):
    """Embeddings and statuses of ``files``; a batch that fails is redone photo by photo."""
    vecs: list[np.ndarray | None] = []
    status: list[str] = []
    for i in range(0, len(files), BATCH):
        if feedback.isCanceled():
            return None, None
        chunk = files[i : i + BATCH]
        try:
            vecs.extend(model.encode_photos([str(p) for p in chunk]))
            status.extend([OK] * len(chunk))
        except EngineError:
            for p in chunk:  # find the unreadable photo(s); embed the others
                try:
                    vecs.append(model.encode_photos([str(p)])[0])
                    status.append(OK)
                except EngineError as e:
                    vecs.append(None)
                    status.append(f"no embedding: {e}"[:250])
        feedback.setProgress(95.0 * min(i + BATCH, len(files)) / len(files))
    return vecs, status


def _latlon(path: Path) -> tuple[float, float] | None:
    try:
        ll = read_exif_latlon(path)
    except EngineError:
        return None
    return None if ll is None else (float(ll[0]), float(ll[1]))


def photo_files(folder: str) -> list[Path]:
    """The photos of ``folder`` in name order; an error when there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise QgsProcessingException(f"PHOTO_FOLDER '{folder}' is not a folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not files:
        raise QgsProcessingException(f"no .jpg/.jpeg/.png photo in '{folder}'")
    return files


def text_of(value) -> str | None:
    """The stripped text of an attribute value; None for NULL or blank."""
    if value is None or (hasattr(value, "isNull") and value.isNull()):
        return None
    text = str(value).strip()
    return text if text and text != "NULL" else None


def text_fields(inputs: QgsFields) -> QgsFields:
    """The input's fields, then unigeo_fid, unigeo_status, unigeo_embedding."""
    fields = QgsFields(inputs)
    for name, kind in ((FID_FIELD, QVariant.LongLong), (STATUS_FIELD, QVariant.String)):
        _append(fields, QgsField(name, kind))
    _append(fields, QgsField(EMBEDDING_FIELD, QVariant.String))
    return fields


def photo_fields() -> QgsFields:
    """source, latitude, longitude, unigeo_status, unigeo_embedding."""
    fields = QgsFields()
    fields.append(QgsField("source", QVariant.String))
    fields.append(QgsField("latitude", QVariant.Double))
    fields.append(QgsField("longitude", QVariant.Double))
    fields.append(QgsField(STATUS_FIELD, QVariant.String))
    fields.append(QgsField(EMBEDDING_FIELD, QVariant.String))
    return fields


def _append(fields: QgsFields, field: QgsField) -> None:
    if fields.indexOf(field.name()) >= 0:
        raise QgsProcessingException(
            f"INPUT already has a field '{field.name()}' (an earlier UniGeo output?); rename or "
            "remove it first"
        )
    fields.append(field)
