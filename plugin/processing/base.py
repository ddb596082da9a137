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
)
from qgis.PyQt.QtCore import QCoreApplication

from ...engine.errors import InputError
from ...engine.model import UniGeoModel
from ...engine.search.domain import domain_warning
from ...engine.search.query import Query
from ...engine.store import open_store
from ...engine.store.npy import EmbeddingStore
from ...engine.store.window import DEFAULT_MAX_NODATA, restrict_nodata, store_window
from .. import model_cache
from ..qgis_reader import qgs_crs
from ..settings import PROVIDERS, Settings, first_run_message
from . import help as texts
from .common import (  # noqa: F401 - re-exported: algorithms import these from .base
    BLOCK_TILES,
    canceled_of,
    embed_cached,
    engine_errors,
    layer_geometries,
    layer_points,
    layer_union,
    layer_wkt,
    name_output,
    parse_latlon,
    progress_of,
    provenance,
)


class UniGeoAlgorithm(QgsProcessingAlgorithm):
    """Common parameters and helpers; subclasses set ``NAME`` and their own parameters."""

    NAME = ""
    MODEL = "MODEL"
    PROVIDER = "PROVIDER"
    INPUT = "INPUT"
    BANDS = "BANDS"
    STORE = "STORE"
    EXTENT = "EXTENT"
    MAX_NODATA = "MAX_NODATA"

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
                defaultValue=s.resolve_bundle(),
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
        settings = Settings.load()
        folder = folder or settings.resolve_bundle()
        if not folder:  # first run of the plugin zip from the repository: no model yet
            raise QgsProcessingException(self.tr(first_run_message(settings.models_path())))
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
    def add_source_params(
        self, raster_name: str = INPUT, with_extent: bool = True, query: bool = True
    ) -> None:
        """INPUT raster, BANDS, EXTENT (what to embed), STORE folder and, for queries over the
        tiles (``query``), MAX_NODATA; all optional."""
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
        if query:
            nodata = QgsProcessingParameterNumber(
                self.MAX_NODATA,
                self.tr("Skip tiles with more no data than (%)"),
                QgsProcessingParameterNumber.Double,
                DEFAULT_MAX_NODATA * 100.0,
                optional=True,
                minValue=0.0,
                maxValue=100.0,
            )
            nodata.setFlags(nodata.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(nodata)

    def source_store(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        model: UniGeoModel,
        raster_name: str = INPUT,
        extent: tuple[tuple[float, float, float, float], str] | None = None,
    ) -> EmbeddingStore:
        """The store of STORE, else of the INPUT raster (embedded into the cache if needed);
        with MAX_NODATA, its tiles with more no data than that are left out."""
        store = self._source_store(parameters, context, feedback, model, raster_name, extent)
        if self.parameterDefinition(self.MAX_NODATA) is None:
            return store
        pct = self.parameterAsDouble(parameters, self.MAX_NODATA, context)
        with engine_errors():
            return restrict_nodata(store, pct / 100.0)

    def _source_store(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        model: UniGeoModel,
        raster_name: str = INPUT,
        extent: tuple[tuple[float, float, float, float], str] | None = None,
    ) -> EmbeddingStore:
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
    EXTRA_POINTS = "EXTRA_POINTS"
    NEGATIVE_POINTS = "NEGATIVE_POINTS"
    NEGATIVE_POLYGON = "NEGATIVE_POLYGON"
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
        """Every query parameter; all optional, at least one positive is required at run time."""
        self.addParameter(
            QgsProcessingParameterString(self.QUERY_TEXT, self.tr("Text query"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterPoint(
                self.QUERY_POINT, self.tr("Example point (any CRS)"), optional=True
            )
        )
        self._add_layer(self.EXTRA_POINTS, "More example places (point layer)", True)
        self._add_layer(self.QUERY_POLYGON, "Example region (polygon layer)", False)
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
        self._add_layer(self.NEGATIVE_POINTS, "Places to avoid (point layer)", True)
        self._add_layer(self.NEGATIVE_POLYGON, "Region to avoid (polygon layer)", False)
        self.addParameter(
            QgsProcessingParameterNumber(
                self.GPS_WEIGHT,
                self.tr("GPS weight of the example points (0-1)"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
                minValue=0.0,
                maxValue=1.0,
            )
        )

    def _add_layer(self, name: str, label: str, points: bool) -> None:
        kind = QgsProcessing.TypeVectorPoint if points else QgsProcessing.TypeVectorPolygon
        self.addParameter(
            QgsProcessingParameterVectorLayer(name, self.tr(label), [kind], optional=True)
        )

    def build_query(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        store: EmbeddingStore,
        model: UniGeoModel,
    ) -> Query:
        """One Query from every given query parameter; QgsProcessingException when none.

        Every example is one term of weight 1, positive or negative, exactly as the UniGeo
        panel (Shift+click, Ctrl+click) and the CLI (``--point``, ``--negative-point``) do.
        """
        from ...engine.search import query as Q

        with engine_errors():
            parts = self._positive_parts(parameters, context, store, model)
            if not parts:
                raise QgsProcessingException(
                    self.tr(
                        "Give a query: QUERY_TEXT, QUERY_POINT, EXTRA_POINTS, QUERY_POLYGON, "
                        "QUERY_PHOTO or QUERY_GPS (NEGATIVE_TEXT, NEGATIVE_POINTS and "
                        "NEGATIVE_POLYGON only move away from places: they are not enough alone)."
                    )
                )
            parts += self._negative_parts(parameters, context, store, model)
            query = Q.Query()
            for q, negative in parts:
                query.add(q.vector(), 1.0, negative=negative, description=q.description())
        return query

    def _positive_parts(
        self, p: dict, c: QgsProcessingContext, store: EmbeddingStore, model: UniGeoModel
    ) -> list[tuple[Query, bool]]:
        """``(query, False)`` for each positive example, in a stable order."""
        from ...engine.search import query as Q

        parts: list[tuple[Query, bool]] = []
        w = self.parameterAsDouble(p, self.GPS_WEIGHT, c)
        if text := self.parameterAsString(p, self.QUERY_TEXT, c).strip():
            parts.append((Q.text_query(model, text), False))
        if self._has(p, self.QUERY_POINT):
            pt = self.parameterAsPoint(p, self.QUERY_POINT, c)
            crs = self.parameterAsPointCrs(p, self.QUERY_POINT, c)
            wkt = crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
            q = Q.point_query(store, pt.x(), pt.y(), crs=wkt or None, gps_weight=w, model=model)
            parts.append((q, False))
        kw = dict(gps_weight=w, model=model, negative=False)
        parts += self._layer_points(p, c, self.EXTRA_POINTS, store, **kw)
        if (layer := self.parameterAsVectorLayer(p, self.QUERY_POLYGON, c)) is not None:
            geom, wkt = layer_union(layer)
            parts.append((Q.region_query(store, geom, crs=wkt), False))
        if photo := self.parameterAsFile(p, self.QUERY_PHOTO, c):
            parts.append((Q.photo_query(model, photo), False))
        if gps := self.parameterAsString(p, self.QUERY_GPS, c).strip():
            parts.append((Q.gps_query(model, *parse_latlon(gps)), False))
        return parts

    def _negative_parts(
        self, p: dict, c: QgsProcessingContext, store: EmbeddingStore, model: UniGeoModel
    ) -> list[tuple[Query, bool]]:
        """``(query, True)`` for each example to move away from; empty layers add nothing."""
        from ...engine.search import query as Q

        parts: list[tuple[Query, bool]] = []
        if neg := self.parameterAsString(p, self.NEGATIVE_TEXT, c).strip():
            parts.append((Q.text_query(model, neg), True))
        # as in the panel and the CLI, a place to avoid is the tile alone (no GPS mixing)
        parts += self._layer_points(p, c, self.NEGATIVE_POINTS, store, negative=True)
        layer = self.parameterAsVectorLayer(p, self.NEGATIVE_POLYGON, c)
        if layer is not None and (geoms := layer_geometries(layer)):
            from ...engine.geo.geometry import union

            try:
                q = Q.region_query(store, union(geoms, "the polygons"), crs=layer_wkt(layer))
            except InputError as e:
                msg = f"NEGATIVE_POLYGON (layer '{layer.name()}'): {e}"
                raise QgsProcessingException(msg) from None
            parts.append((q, True))
        return parts

    def _layer_points(
        self, p: dict, c: QgsProcessingContext, name: str, store: EmbeddingStore, **kw: Any
    ) -> list[tuple[Query, bool]]:
        """One point query per point of the layer parameter ``name`` (any CRS).

        ``kw`` holds ``negative`` and, for positives, ``gps_weight`` and ``model``. An error
        names the parameter, the layer and the feature, and the engine's message the point.
        """
        from ...engine.search import query as Q

        layer = self.parameterAsVectorLayer(p, name, c)
        if layer is None:
            return []
        wkt, negative, parts = layer_wkt(layer), kw.pop("negative"), []
        for fid, x, y in layer_points(layer):
            try:
                parts.append((Q.point_query(store, x, y, crs=wkt, **kw), negative))
            except InputError as e:
                msg = f"{name}: feature {fid} of layer '{layer.name()}': {e}"
                raise QgsProcessingException(msg) from None
        return parts

    @staticmethod
    def _has(parameters: dict, name: str) -> bool:
        value = parameters.get(name)
        return value is not None and str(value).strip() not in ("", "None")
