"""Processing algorithm ``unigeo:gpsfield``: GPS-encoder embeddings of a regular grid, no imagery."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsUnitTypes,
)

from ...engine.geo.tiff import write_grid_raster
from ...engine.grid import TileGrid
from ...engine.model import UniGeoModel
from ...engine.search import query as Q
from ...engine.search.similarity import write_heatmap
from .base import UniGeoAlgorithm, engine_errors, name_output, parse_latlon, provenance

MAX_VALUES = 256_000_000  # cells x bands of the embedding field (1 GB of float32)
MAX_CELLS = 16_000_000  # cells of a heatmap
CHUNK = 65_536


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
        with engine_errors():
            grid = TileGrid.for_extent(crs_text, res, 1, 1, box, origin=(box[0], box[3]))
            limit = MAX_CELLS if (text or gps) else MAX_VALUES // model.dim
            if grid.n_tiles > limit:
                raise QgsProcessingException(
                    f"{grid.n_tiles:,} cells at this RESOLUTION exceed {limit:,}; use larger cells"
                )
            lat, lon = grid_latlon(grid)
            query = self._query(model, text, gps)
            mat = query.vector()[:, None] if query is not None else None
            field = encode_field(model, lat, lon, mat, feedback)
            if field is None:
                return {}
            prov = provenance(model, None, resolution=res)
            if query is not None:
                prov.update(query.provenance())
                fake = SimpleNamespace(grid=grid, model_hash=model.model_hash)
                write_heatmap(out, fake, field[..., 0], provenance=prov)
                name_output(context, out, f"gps similarity: {query.description()}")
            else:
                bands = [field[..., d] for d in range(field.shape[-1])]
                write_grid_raster(out, grid, bands, dtype="float32", nodata=None, provenance=prov)
                name_output(context, out, "gps embedding field")
        return {self.OUTPUT: out}

    def _query(self, model: UniGeoModel, text: str, gps: str) -> Q.Query | None:
        parts = []
        if text:
            parts.append(Q.text_query(model, text))
        if gps:
            parts.append(Q.gps_query(model, *parse_latlon(gps)))
        return Q.combine(*parts) if parts else None


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


def grid_latlon(grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 latitude and longitude of every cell centre, ``[rows, cols]`` each."""
    from ...engine.geo.crs import WGS84, transform_xy

    xs, ys = grid.centers()
    lon, lat = transform_xy(xs, ys, grid.crs, WGS84)
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise QgsProcessingException("part of the EXTENT has no WGS84 position; shrink it")
    return lat, lon


def encode_field(model: UniGeoModel, lat, lon, mat, feedback) -> np.ndarray | None:
    """GPS embeddings ``[rows, cols, D]`` (or scores ``[rows, cols, K]`` against ``mat``)."""
    flat_lat, flat_lon = lat.reshape(-1), lon.reshape(-1)
    k = model.dim if mat is None else mat.shape[1]
    out = np.empty((flat_lat.size, k), dtype=np.float32)
    for i in range(0, flat_lat.size, CHUNK):
        if feedback.isCanceled():
            return None
        s = slice(i, i + CHUNK)
        emb = model.encode_gps(flat_lat[s].astype(np.float32), flat_lon[s].astype(np.float32))
        out[s] = emb if mat is None else emb @ mat
        feedback.setProgress(90.0 * min(i + CHUNK, flat_lat.size) / flat_lat.size)
    return out.reshape(*lat.shape, k)
