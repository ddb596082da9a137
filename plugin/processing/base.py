"""The base class of every UniGeo algorithm: model and source parameters, queries, errors.

Subclasses declare their own parameters in ``initAlgorithm`` and keep ``processAlgorithm``
thin: parse the parameters into plain values, call :mod:`engine.pipeline` inside
:func:`~.common.engine_errors`, return outputs. Engine errors become
``QgsProcessingException`` with the engine's actionable message.
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

from ...engine import pipeline
from ...engine.pipeline import DEFAULT_MAX_NODATA, Place, QuerySpec, Region
from ...engine.raster import sensor_names
from .. import model_cache
from ..qgis_reader import AUTO_SCALE, qgs_crs
from ..settings import PROVIDERS, Settings, first_run_message
from . import help as texts
from .common import (
    embed_cached,
    engine_errors,
    layer_geometries,
    layer_points,
    layer_region,
    layer_wkt,
    parse_latlon,
)

AUTO_SENSOR = "auto"  # SENSOR's default: the readers' own scaling


class UniGeoAlgorithm(QgsProcessingAlgorithm):
    """Common parameters and helpers; subclasses set ``NAME`` and their own parameters."""

    NAME = ""
    MODEL = "MODEL"
    PROVIDER = "PROVIDER"
    INPUT = "INPUT"
    BANDS = "BANDS"
    SENSOR = "SENSOR"
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

    def load_model(self, parameters: dict, context: QgsProcessingContext) -> Any:
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
        self.add_sensor_param()
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

    def add_sensor_param(self) -> None:
        """SENSOR: how raw pixel values become the model's: automatic, or a sensor's rule."""
        self.addParameter(
            QgsProcessingParameterEnum(
                self.SENSOR,
                self.tr("Pixel scaling: auto, or a sensor's training rule (see help)"),
                options=[AUTO_SENSOR, *sensor_names()],
                defaultValue=AUTO_SENSOR,
                usesStaticStrings=True,  # SENSOR="sentinel2_l1c" in scripts, not an index
                optional=True,
            )
        )

    def scale_of(self, parameters: dict, context: QgsProcessingContext) -> str:
        """The readers' ``scale`` for SENSOR: ``"dtype"`` or ``"sensor:<name>"``."""
        name = self.parameterAsEnumString(parameters, self.SENSOR, context) or AUTO_SENSOR
        return AUTO_SCALE if name == AUTO_SENSOR else f"sensor:{name}"

    def source_store(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        model: Any,
        raster_name: str = INPUT,
        extent: tuple[tuple[float, float, float, float], str] | None = None,
    ) -> Any:
        """The store of STORE, else of the INPUT raster (embedded into the cache if needed);
        with MAX_NODATA, its tiles with more no data than that are left out."""
        store = self._source_store(parameters, context, feedback, model, raster_name, extent)
        if self.parameterDefinition(self.MAX_NODATA) is None:
            return store
        pct = self.parameterAsDouble(parameters, self.MAX_NODATA, context)
        with engine_errors():
            return pipeline.restrict_nodata(store, pct / 100.0)

    def _source_store(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        model: Any,
        raster_name: str = INPUT,
        extent: tuple[tuple[float, float, float, float], str] | None = None,
    ) -> Any:
        folder = self.parameterAsFile(parameters, self.STORE, context)
        layer = self.parameterAsRasterLayer(parameters, raster_name, context)
        if folder:
            with engine_errors():  # a plugin/CLI store or a distributed Zarr one, of this model
                store = pipeline.open_store(folder, model, max_nodata=None)
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
        scale = self.scale_of(parameters, context)
        return embed_cached(model, layer, bands, feedback, extent, scale=scale)

    def store_extent(
        self,
        store: Any,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Any:
        """The tiles of ``store`` within EXTENT (same lattice); an error when there are none."""
        with engine_errors():
            crs = qgs_crs(store.crs)
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
            box = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
            window = pipeline.store_window(store, box)
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
        spec = self.query_spec(parameters, context)
        if spec.is_empty():
            raise QgsProcessingException(
                self.tr(
                    "Give a query: QUERY_TEXT, QUERY_POINT, EXTRA_POINTS, QUERY_POLYGON, "
                    "QUERY_PHOTO or QUERY_GPS (NEGATIVE_TEXT, NEGATIVE_POINTS and "
                    "NEGATIVE_POLYGON only move away from places: they are not enough alone)."
                )
            )
        with engine_errors():
            query = pipeline.build_query(spec, store, model)
            warning = pipeline.domain_warning(store, model)
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

    def query_spec(self, p: dict, c: QgsProcessingContext) -> QuerySpec:
        """Every given query parameter as plain data (nothing is encoded yet).

        Every example is one term of weight 1, positive or negative, exactly as the UniGeo
        panel (Shift+click, Ctrl+click) and the CLI (``--point``, ``--negative-point``) do.
        """
        points = []
        if self._has(p, self.QUERY_POINT):
            pt = self.parameterAsPoint(p, self.QUERY_POINT, c)
            crs = self.parameterAsPointCrs(p, self.QUERY_POINT, c)
            wkt = crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
            points.append(Place(pt.x(), pt.y(), wkt or None))
        points += self._layer_places(p, c, self.EXTRA_POINTS)
        polygon = self.parameterAsVectorLayer(p, self.QUERY_POLYGON, c)
        photo = self.parameterAsFile(p, self.QUERY_PHOTO, c)
        gps = self.parameterAsString(p, self.QUERY_GPS, c).strip()
        return QuerySpec(
            texts=self._text(p, c, self.QUERY_TEXT),
            negative_texts=self._text(p, c, self.NEGATIVE_TEXT),
            points=tuple(points),
            negative_points=tuple(self._layer_places(p, c, self.NEGATIVE_POINTS)),
            photos=(photo,) if photo else (),
            regions=(layer_region(polygon),) if polygon is not None else (),
            negative_regions=self._negative_region(p, c),
            gps=(parse_latlon(gps),) if gps else (),
            gps_weight=self.parameterAsDouble(p, self.GPS_WEIGHT, c),
        )

    def _text(self, p: dict, c: QgsProcessingContext, name: str) -> tuple[str, ...]:
        text = self.parameterAsString(p, name, c).strip()
        return (text,) if text else ()

    def _negative_region(self, p: dict, c: QgsProcessingContext) -> tuple[Region, ...]:
        """NEGATIVE_POLYGON as a region to avoid; a layer without polygons adds nothing."""
        layer = self.parameterAsVectorLayer(p, self.NEGATIVE_POLYGON, c)
        if layer is None or not layer_geometries(layer):
            return ()
        return (layer_region(layer, f"NEGATIVE_POLYGON (layer '{layer.name()}')"),)

    def _layer_places(self, p: dict, c: QgsProcessingContext, name: str) -> list[Place]:
        """One place per point of the layer parameter ``name`` (any CRS); an error while it
        is turned into a query names the parameter, the layer and the feature."""
        layer = self.parameterAsVectorLayer(p, name, c)
        if layer is None:
            return []
        wkt, named = layer_wkt(layer), layer.name()
        return [
            Place(x, y, wkt, f"{name}: feature {fid} of layer '{named}'")
            for fid, x, y in layer_points(layer)
        ]

    @staticmethod
    def _has(parameters: dict, name: str) -> bool:
        value = parameters.get(name)
        return value is not None and str(value).strip() not in ("", "None")
