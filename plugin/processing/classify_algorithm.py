"""Processing algorithm ``unigeo:classify``: zero-shot or few-shot land-use classification."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from ...engine import pipeline
from .base import UniGeoAlgorithm
from .common import canceled_of, engine_errors, name_output, progress_of

METHODS = ("prototype", "logreg")


def parse_classes(text: str) -> dict[str, list[str]] | None:
    """``"name: prompt; prompt"`` lines to {name: [prompts]}; None for empty text.

    A line without ':' is a class whose only prompt is its name: the engine expands such a bare
    name with the model's prompt templates; written prompts are used as they are.
    """
    out: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, _, prompts = line.partition(":")
        name = name.strip()
        items = [p.strip() for p in prompts.split(";") if p.strip()] or [name]
        if not name:
            raise QgsProcessingException(
                f"CLASSES line {n} ('{line.strip()}') has no class name; write 'name: prompt; prompt'"
            )
        out.setdefault(name, []).extend(items)
    if out and len(out) < 2:
        raise QgsProcessingException("CLASSES needs at least two classes, one per line")
    return out or None


class ClassifyAlgorithm(UniGeoAlgorithm):
    """Per-tile land-use classes with a confidence raster."""

    NAME = "classify"
    CLASSES = "CLASSES"
    EXAMPLES = "EXAMPLES"
    CLASS_FIELD = "CLASS_FIELD"
    METHOD = "METHOD"
    OUTPUT_CLASSES = "OUTPUT_CLASSES"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    MIN_CONFIDENCE = "MIN_CONFIDENCE"
    REPORT = "REPORT"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_source_params()
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES,
                self.tr(
                    "Classes, one per line 'name: prompt; prompt' or a bare 'name' (gets the "
                    "model's prompt templates); empty = the model's classes"
                ),
                multiLine=True,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.EXAMPLES,
                self.tr("Labelled example polygons (few-shot)"),
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.CLASS_FIELD,
                self.tr("Class field"),
                parentLayerParameterName=self.EXAMPLES,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.METHOD, self.tr("Few-shot method"), options=list(METHODS), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_CONFIDENCE,
                self.tr(f"Minimum confidence (lower tiles get the class '{pipeline.UNCERTAIN}')"),
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
                maxValue=1.0,
            )
        )
        self.add_model_params()
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT_CLASSES, self.tr("Classes"))
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT_CONFIDENCE, self.tr("Confidence"))
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.REPORT,
                self.tr("Validation report, few-shot only (.json, .html and .md are written)"),
                fileFilter="HTML (*.html);;JSON (*.json)",
                optional=True,
                createByDefault=False,
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        classes_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_CLASSES, context)
        conf_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_CONFIDENCE, context)
        prompts = parse_classes(self.parameterAsString(parameters, self.CLASSES, context))
        examples = self.parameterAsVectorLayer(parameters, self.EXAMPLES, context)
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        method = METHODS[self.parameterAsEnum(parameters, self.METHOD, context)]
        min_conf = self._min_confidence(parameters, context)
        report_path = self._report_path(parameters, context, examples, feedback)
        if examples is not None and not field:
            raise QgsProcessingException(
                self.tr("Few-shot classification needs CLASS_FIELD, the label field")
            )
        model = self.load_model(parameters, context)
        store = self.source_store(parameters, context, feedback, model)
        cb = {"progress": progress_of(feedback, 80.0, 95.0), "is_canceled": canceled_of(feedback)}
        with engine_errors():
            if examples is not None:
                pairs = tuple(labelled(examples, field))
                spec = pipeline.ClassifySpec(None, pairs, _wkt(examples), method, min_conf)
            else:
                spec = pipeline.ClassifySpec(prompts, min_confidence=min_conf)
            result = pipeline.classify(store, model, spec, **cb)
            prov = pipeline.provenance(
                model, store, classes=", ".join(result.classes), method=result.method
            )
            if result.warning:
                prov["warning"] = result.warning
            pipeline.write_classification(classes_path, conf_path, store, result, prov)
            if report_path:
                rep = pipeline.validate(store, spec, is_canceled=cb["is_canceled"])
                pipeline.write_validation_report(report_path, rep, provenance=prov)
                _log_report(feedback, rep)
        feedback.pushInfo(f"{result.method}: {', '.join(result.classes)}")
        if result.warning:
            report_warning(feedback, result.warning)
        name_output(context, classes_path, f"classes ({result.method})")
        name_output(context, conf_path, f"confidence ({result.method})")
        out = {self.OUTPUT_CLASSES: classes_path, self.OUTPUT_CONFIDENCE: conf_path}
        return {**out, self.REPORT: report_path or None}

    def _min_confidence(self, parameters, context) -> float | None:
        """MIN_CONFIDENCE, or None when it is not set."""
        if parameters.get(self.MIN_CONFIDENCE) is None:
            return None
        return self.parameterAsDouble(parameters, self.MIN_CONFIDENCE, context)

    def _report_path(self, parameters, context, examples, feedback) -> str:
        """REPORT's path ("" when not asked for, or for zero-shot, which has no labels)."""
        path = self.parameterAsFileOutput(parameters, self.REPORT, context)
        if path and examples is None:
            report_warning(feedback, "REPORT is only written for few-shot (labelled EXAMPLES)")
            return ""
        if path:
            with engine_errors():
                pipeline.report_paths(path)  # a wrong suffix fails before any work
        return path


def _log_report(feedback, rep) -> None:
    """The report's summary in the log; its warnings as warnings."""
    if feedback is not None:
        feedback.pushInfo(rep.summary())
    for w in rep.warnings:
        report_warning(feedback, w)


def report_warning(feedback, text: str) -> None:
    """Show ``text`` as a warning in the Processing log (non-fatal: the outputs are written)."""
    if feedback is None:
        return
    if hasattr(feedback, "pushWarning"):  # QGIS >= 3.16
        feedback.pushWarning(text)
    else:
        feedback.reportError(text, False)


def labelled(layer, field: str) -> list[tuple]:
    """``(WKB, label)`` for every feature of ``layer`` with a label and a geometry."""
    if layer.fields().indexOf(field) < 0:
        raise QgsProcessingException(f"layer '{layer.name()}' has no field '{field}'")
    out = []
    for f in layer.getFeatures():
        label = f[field]
        if f.hasGeometry() and label is not None and str(label).strip() and str(label) != "NULL":
            out.append((bytes(f.geometry().asWkb()), str(label).strip()))
    if not out:
        raise QgsProcessingException(
            f"no feature of '{layer.name()}' has a polygon and a '{field}' label"
        )
    return out


def _wkt(layer) -> str:
    return layer.crs().toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
