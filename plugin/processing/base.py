"""The base class of every UniGeo algorithm: model and source parameters, queries, errors.

Subclasses declare their own parameters in ``initAlgorithm`` and keep ``processAlgorithm``
thin: parse, validate, call the engine inside :func:`engine_errors`, return outputs. Engine
errors become ``QgsProcessingException`` with the engine's actionable message. The shared
helpers live in :mod:`.common` and are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from ...engine.domain import domain_warning
from ...engine.model import UniGeoModel
from ...engine.query import Query
from ...engine.store import EmbeddingStore
from ...engine.zarr_store import open_store
from .. import model_cache
from ..qgis_reader import qgs_crs
from ..settings import PROVIDERS, Settings
from . import help as texts
from .common import (  # noqa: F401 - re-exported: algorithms import these from .base
    BLOCK_TILES,
    canceled_of,
    embed_cached,
    engine_errors,
    name_output,
    progress_of,
    provenance,
)
from .store_window import store_window


class UniGeoAlgorithm(QgsProcessingAlgorithm):
    """Common parameters and helpers; subclasses set ``NAME`` and their own parameters."""

    NAME = ""
    MODEL = "MODEL"
    PROVIDER = "PROVIDER"
    INPUT = "INPUT"
    BANDS = "BANDS"
    STORE = "STORE"
    EXTENT = "EXTENT"

    # -- QGIS boilerplate -------------------------------------------------------------------
    def tr(self, text: str) -> str:
        return QCoreApplication.translate("UniGeo", text)

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(texts.title(self.NAME))

    def group(self) -> str:
        return self.tr(texts.group(self.NAME))

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return texts.group_id(self.NAME)

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(texts.text(self.NAME))

    def createInstance(self) -> UniGeoAlgorithm:  # noqa: N802 (QGIS API)
        return type(self)()

    # -- model ------------------------------------------------------------------------------
    def add_model_params(self) -> None:
        """MODEL (bundle folder) and PROVIDER, defaulting to the UniGeo settings."""
        s = Settings.load()
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                self.tr("Model bundle folder"),
                behavior=QgsProcessingParameterFile.Folder,
                defaultValue=s.bundle_path(),
                optional=True,
            )
        )
        prov = QgsProcessingParameterEnum(
            self.PROVIDER,
            self.tr("Inference provider"),
            options=list(PROVIDERS),
            defaultValue=PROVIDERS.index(s.provider),
        )
        prov.setFlags(prov.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(prov)

    def load_model(self, parameters: dict, context: QgsProcessingContext) -> UniGeoModel:
        """The shared model of MODEL/PROVIDER; a clear error when the folder holds none."""
        folder = self.parameterAsFile(parameters, self.MODEL, context)
        folder = folder or Settings.load().bundle_path()
        if not (Path(folder) / "bundle.json").is_file():
            raise QgsProcessingException(
                self.tr(
                    f"No UniGeo model bundle in '{folder}' (bundle.json is missing). Pick a model "
                    "folder in the MODEL parameter or in UniGeo > Settings."
                )
            )
        provider = PROVIDERS[self.parameterAsEnum(parameters, self.PROVIDER, context)]
        with engine_errors():
            return model_cache.get_model(folder, provider=provider)

    # -- source: an existing store, or a raster embedded through the cache -------------------
    def add_source_params(self, raster_name: str = INPUT, with_extent: bool = True) -> None:
        """INPUT raster, BANDS, EXTENT (what to embed) and STORE folder; all optional."""
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                raster_name, self.tr("Raster layer (embedded on demand)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterBand(
                self.BANDS,
                self.tr("Bands in the model's order (default: automatic)"),
                parentLayerParameterName=raster_name,
                optional=True,
                allowMultiple=True,
            )
        )
        if with_extent:
            self.addParameter(
                QgsProcessingParameterExtent(
                    self.EXTENT,
                    self.tr("Extent (default: the whole raster or store)"),
                    optional=True,
                )
            )
        self.addParameter(
            QgsProcessingParameterFile(
                self.STORE,
                self.tr("Embedding store folder (instead of a raster)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )

    def source_store(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        model: UniGeoModel,
        raster_name: str = INPUT,
        extent: tuple[tuple[float, float, float, float], str] | None = None,
    ) -> EmbeddingStore:
        """The store of STORE, else of the INPUT raster (embedded into the cache if needed)."""
        folder = self.parameterAsFile(parameters, self.STORE, context)
        layer = self.parameterAsRasterLayer(parameters, raster_name, context)
        if folder:
            with engine_errors():
                store = open_store(folder)  # a plugin/CLI store or a distributed Zarr one
            if store.model_hash != model.model_hash:
                raise QgsProcessingException(
                    self.tr(
                        f"The store {folder} was embedded with another model; embed the raster "
                        "again with this model or pick the model it was made with."
                    )
                )
            if parameters.get(self.EXTENT) and self.parameterDefinition(self.EXTENT):
                return self.store_extent(store, parameters, context, feedback)
            return store
        if layer is None:
            raise QgsProcessingException(
                self.tr("Give a raster layer (INPUT) or an embedding store folder (STORE).")
            )
        bands = self.parameterAsInts(parameters, self.BANDS, context) or None
        if extent is None and parameters.get(self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            wkt = layer.crs().toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
            extent = ((rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()), wkt)
        return embed_cached(model, layer, bands, feedback, extent)

    def store_extent(
        self,
        store: EmbeddingStore,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> EmbeddingStore:
        """The tiles of ``store`` within EXTENT (same lattice); an error when there are none."""
        with engine_errors():
            crs = qgs_crs(store.crs)
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
            box = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
            window = store_window(store, box)
        if window is None:
            b = ", ".join(f"{v:.6g}" for v in store.grid.bounds)
            raise QgsProcessingException(
                self.tr(
                    f"EXTENT does not overlap the store {store.folder} (its tiles cover {b} in "
                    f"{crs.authid() or 'its CRS'}); pick an extent inside it or leave EXTENT empty."
                )
            )
        g = store.grid
        feedback.pushInfo(
            f"EXTENT: {window.grid.rows}x{window.grid.cols} of the store's {g.rows}x{g.cols} tiles"
        )
        return window


class QueryAlgorithm(UniGeoAlgorithm):
    """An algorithm that scores a store against a query built from the QUERY_* parameters."""

    QUERY_TEXT = "QUERY_TEXT"
    QUERY_POINT = "QUERY_POINT"
    QUERY_POLYGON = "QUERY_POLYGON"
    QUERY_PHOTO = "QUERY_PHOTO"
    QUERY_GPS = "QUERY_GPS"
    NEGATIVE_TEXT = "NEGATIVE_TEXT"
    GPS_WEIGHT = "GPS_WEIGHT"

    def prepare_query(self, parameters: dict, context: QgsProcessingContext, feedback):
        """Model, store and query; pushes the out-of-domain warning, once, for the area."""
        model = self.load_model(parameters, context)
        store = self.source_store(parameters, context, feedback, model)
        query = self.build_query(parameters, context, store, model)
        with engine_errors():
            warning = domain_warning(store, model.bundle.training_domain)
        if warning:
            feedback.pushWarning(warning)
        return model, store, query

    def add_query_params(self) -> None:
        """Every query parameter; all optional, at least one is required at run time."""
        self.addParameter(
            QgsProcessingParameterString(self.QUERY_TEXT, self.tr("Text query"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterPoint(
                self.QUERY_POINT, self.tr("Example point (any CRS)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.QUERY_POLYGON,
                self.tr("Example region (polygon layer)"),
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.QUERY_PHOTO,
                self.tr("Street-level photo"),
                fileFilter="Images (*.jpg *.jpeg *.png)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.QUERY_GPS, self.tr("Coordinates 'lat,lon' (WGS84)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.NEGATIVE_TEXT, self.tr("Negative text (move away from)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.GPS_WEIGHT,
                self.tr("GPS weight of the point query (0-1)"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
                minValue=0.0,
                maxValue=1.0,
            )
        )

    def build_query(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        store: EmbeddingStore,
        model: UniGeoModel,
    ) -> Query:
        """One Query from every given QUERY_* parameter; QgsProcessingException when none."""
        from ...engine import query as Q

        p, c = parameters, context
        parts: list[tuple[Query, bool]] = []
        with engine_errors():
            if text := self.parameterAsString(p, self.QUERY_TEXT, c).strip():
                parts.append((Q.text_query(model, text), False))
            if self._has(p, self.QUERY_POINT):
                pt = self.parameterAsPoint(p, self.QUERY_POINT, c)
                crs = self.parameterAsPointCrs(p, self.QUERY_POINT, c)
                wkt = crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
                w = self.parameterAsDouble(p, self.GPS_WEIGHT, c)
                q = Q.point_query(store, pt.x(), pt.y(), crs=wkt or None, gps_weight=w, model=model)
                parts.append((q, False))
            if (layer := self.parameterAsVectorLayer(p, self.QUERY_POLYGON, c)) is not None:
                geom, wkt = layer_union(layer)
                parts.append((Q.region_query(store, geom, crs=wkt), False))
            if photo := self.parameterAsFile(p, self.QUERY_PHOTO, c):
                parts.append((Q.photo_query(model, photo), False))
            if gps := self.parameterAsString(p, self.QUERY_GPS, c).strip():
                parts.append((Q.gps_query(model, *parse_latlon(gps)), False))
            if neg := self.parameterAsString(p, self.NEGATIVE_TEXT, c).strip():
                parts.append((Q.text_query(model, neg), True))
            if not any(not negative for _, negative in parts):
                raise QgsProcessingException(
                    self.tr(
                        "Give a query: QUERY_TEXT, QUERY_POINT, QUERY_POLYGON, QUERY_PHOTO or "
                        "QUERY_GPS (NEGATIVE_TEXT alone is not enough)."
                    )
                )
            query = Q.Query()
            for q, negative in parts:
                query.add(q.vector(), 1.0, negative=negative, description=q.description())
        return query

    @staticmethod
    def _has(parameters: dict, name: str) -> bool:
        value = parameters.get(name)
        return value is not None and str(value).strip() not in ("", "None")


def parse_latlon(text: str) -> tuple[float, float]:
    """``"lat,lon"`` to floats; QgsProcessingException with the expected form otherwise."""
    try:
        lat, lon = (float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise QgsProcessingException(
            f"coordinates must be 'lat,lon' in WGS84 degrees (e.g. '47.02,-99.15'), got '{text}'"
        ) from None
    return lat, lon


def layer_union(layer: QgsVectorLayer) -> tuple[Any, str]:
    """The union of a layer's (selected, else all) geometries as shapely, and the layer CRS WKT."""
    import shapely
    from shapely.ops import unary_union

    feats = layer.selectedFeatures() if layer.selectedFeatureCount() else layer.getFeatures()
    geoms = [shapely.from_wkb(bytes(f.geometry().asWkb())) for f in feats if f.hasGeometry()]
    if not geoms:
        raise QgsProcessingException(f"layer '{layer.name()}' holds no geometry")
    wkt = layer.crs().toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
    return unary_union(geoms), wkt
