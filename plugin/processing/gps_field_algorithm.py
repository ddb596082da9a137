"""Processing algorithm ``unigeo:gpsfield``: GPS-encoder embeddings of a regular grid, no imagery."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsUnitTypes,
)

from ...engine import pipeline
from ...engine.pipeline import QuerySpec
from .base import UniGeoAlgorithm
from .common import canceled_of, engine_errors, name_output, parse_latlon, progress_of


class GpsFieldAlgorithm(UniGeoAlgorithm):
    """The GPS embedding of every cell centre, or its similarity to a text/GPS query."""

    NAME = "gpsfield"
    EXTENT = "EXTENT"
    RESOLUTION = "RESOLUTION"
    QUERY_TEXT = "QUERY_TEXT"
    QUERY_GPS = "QUERY_GPS"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent")))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.RESOLUTION,
                self.tr("Cell size (units of the extent's CRS)"),
                QgsProcessingParameterNumber.Double,
                defaultValue=1000.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.QUERY_TEXT, self.tr("Text query"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.QUERY_GPS, self.tr("Coordinates 'lat,lon' (WGS84)"), optional=True
            )
        )
        self.add_model_params()
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("GPS embedding field"))
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        res = self.parameterAsDouble(parameters, self.RESOLUTION, context)
        text = self.parameterAsString(parameters, self.QUERY_TEXT, context).strip()
        gps = self.parameterAsString(parameters, self.QUERY_GPS, context).strip()
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not crs.isValid() or res <= 0:
            raise QgsProcessingException(self.tr("Give an EXTENT with a CRS and a RESOLUTION > 0"))
        crs_text = (
            crs.authid()
            if crs.authid().startswith("EPSG:")
            else crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
        )
        box = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        check_resolution(crs, box, res)
        model = self.load_model(parameters, context)
        spec = QuerySpec(texts=(text,) if text else (), gps=(parse_latlon(gps),) if gps else ())
        with engine_errors():
            query = None if spec.is_empty() else pipeline.build_query(spec, None, model)
            grid, field = pipeline.gps_field(
                model, crs_text, box, res, query, progress_of(feedback, 0.0, 90.0),
                canceled_of(feedback),
            )  # fmt: skip
            if field is None:
                return {}
            prov = pipeline.provenance(model, None, resolution=res)
            if query is not None:
                prov.update(query.provenance())
            pipeline.write_field(out, grid, field, model, query is not None, prov)
        if query is not None:
            name_output(context, out, f"gps similarity: {query.description()}")
        else:
            name_output(context, out, "gps embedding field")
        return {self.OUTPUT: out}


def check_resolution(crs: QgsCoordinateReferenceSystem, box: tuple, res: float) -> None:
    """Refuse a RESOLUTION larger than the EXTENT, saying which unit it is in and what fits.

    RESOLUTION is in the units of the extent's CRS: 1000 means 1000 degrees in EPSG:4326,
    which would put cell centres hundreds of degrees away (and the GPS encoder would then
    complain about impossible latitudes instead of the real mistake).
    """
    w, h = box[2] - box[0], box[3] - box[1]
    if not (w > 0 and h > 0):
        raise QgsProcessingException("EXTENT is empty; draw or type an area")
    if res <= max(w, h):
        return
    unit = QgsUnitTypes.toString(crs.mapUnits())
    hint = _round1(max(w, h) / 50)
    metres = f" (about {hint * 111_000:,.0f} m)" if crs.isGeographic() else ""
    raise QgsProcessingException(
        f"RESOLUTION {res:g} is in the units of the extent's CRS ({crs.authid() or 'custom'}: "
        f"{unit}) and is larger than the whole EXTENT ({w:.6g} x {h:.6g} {unit}). Give the "
        f"cell size in {unit}, e.g. RESOLUTION={hint:g}{metres}, or give the EXTENT in a "
        "projected CRS (metres)."
    )


def _round1(x: float) -> float:
    """``x`` rounded to one significant digit (0.0123 -> 0.01)."""
    import math

    return float(f"{x:.1g}") if x > 0 and math.isfinite(x) else x
