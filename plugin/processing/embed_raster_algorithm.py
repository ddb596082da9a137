"""Processing algorithm ``unigeo:embedraster``: a raster into a resumable embedding store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...engine import pipeline
from ...engine.errors import RasterInputError
from ...engine.model import Modality
from ...engine.raster import GdalReader, is_virtual
from ..qgis_reader import AUTO_SCALE, reader_for_layer
from ..settings import Settings
from .base import UniGeoAlgorithm
from .common import BLOCK_TILES, canceled_of, engine_errors, progress_of, warn_before_embedding


class EmbedRasterAlgorithm(UniGeoAlgorithm):
    """Embed every tile of a raster layer with the aerial encoder."""

    NAME = "embedraster"
    MODALITY = "MODALITY"
    STRIDE = "STRIDE"
    EXTENT = "EXTENT"
    OUTPUT_STORE = "OUTPUT_STORE"
    OUTPUT_TIFF = "OUTPUT_TIFF"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Raster layer")))
        self.addParameter(
            QgsProcessingParameterBand(
                self.BANDS,
                self.tr("Bands in the model's order (default: automatic)"),
                parentLayerParameterName=self.INPUT,
                optional=True,
                allowMultiple=True,
            )
        )
        self.add_sensor_param()
        self.addParameter(
            QgsProcessingParameterEnum(
                self.MODALITY,
                self.tr("Encoder: aerial image or DSM (heights in metres)"),
                options=[m.value for m in MODALITIES],
                defaultValue=Modality.AERIAL.value,
                usesStaticStrings=True,  # MODALITY="dsm" in scripts, not an index
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STRIDE,
                self.tr("Tile stride in pixels (0 = tile size)"),
                defaultValue=Settings.load().stride_px,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent"), optional=True)
        )
        self.add_model_params()
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                self.OUTPUT_STORE,
                self.tr("Embedding store (default: the UniGeo cache)"),
                optional=True,
                createByDefault=False,
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_TIFF,
                self.tr("Embeddings as a multi-band GeoTIFF"),
                optional=True,
                createByDefault=False,
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.tr("INPUT must be a raster layer"))
        bands = self.parameterAsInts(parameters, self.BANDS, context) or None
        stride = self.parameterAsInt(parameters, self.STRIDE, context) or None
        extent = None
        if parameters.get(self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        store_dir = self.parameterAsString(parameters, self.OUTPUT_STORE, context)
        tiff = self.parameterAsOutputLayer(parameters, self.OUTPUT_TIFF, context)
        modality = Modality(
            self.parameterAsEnumString(parameters, self.MODALITY, context) or "aerial"
        )
        scale = self.scale_of(parameters, context)
        model = self.load_model(parameters, context)
        with engine_errors():
            reader = modality_reader(layer, bands, modality, model, scale)
            grid = pipeline.tile_grid(model, reader, modality, stride_px=stride, extent=extent)
            s = Settings.load()
            if not store_dir or store_dir == "TEMPORARY_OUTPUT":
                entry = pipeline.cached_store(
                    model, reader, grid, s.cache_path(), s.cache_bytes(), modality
                )
                store_dir = str(entry.path)
            feedback.pushInfo(f"{grid.rows}x{grid.cols} tiles at {grid.gsd:g} m -> {store_dir}")
            folders = [Path(store_dir), Path(store_dir).parent, s.cache_path()]
            warn_before_embedding(feedback, model, reader, grid, folders, modality)
            store = pipeline.embed(
                model,
                reader,
                grid,
                store_dir,
                modality,
                block_tiles=BLOCK_TILES,
                progress=progress_of(feedback, 0.0, 95.0 if tiff else 100.0),
                is_canceled=canceled_of(feedback),
                meta={"source": layer.source(), "layer": layer.name()},
            )
            if tiff:
                pipeline.write_embeddings_tiff(tiff, store)
        feedback.pushInfo(f"{int(np.count_nonzero(store.valid))} valid tiles")
        return {self.OUTPUT_STORE: store_dir, self.OUTPUT_TIFF: tiff or None}


MODALITIES = (Modality.AERIAL, Modality.DSM)


def modality_reader(
    layer, bands: list[int] | None, modality: Modality, model, scale: str = AUTO_SCALE
):
    """The reader of ``layer`` for ``modality``; errors that say which MODALITY fits.

    A DSM is read in metres (no 0-1 scaling) with area-average resampling, as the DSM encoder
    was trained; that needs a GDAL raster file, and a sensor's ``scale`` does not apply. A
    one-band raster read for the aerial encoder of a bundle that has a DSM encoder is pointed
    to ``MODALITY=dsm``.
    """
    if not model.has(modality):
        raise QgsProcessingException(
            f"the model has no {modality.value} encoder; pick MODALITY="
            + ("aerial" if modality is Modality.DSM else "dsm")
            + " or a bundle that has one"
        )
    if modality is Modality.DSM:
        if scale != AUTO_SCALE:
            raise QgsProcessingException(
                "SENSOR scales imagery; a DSM is read in metres: leave SENSOR at auto"
            )
        path = layer.source().split("|")[0]
        if layer.providerType() != "gdal" or not (Path(path).is_file() or is_virtual(path)):
            raise QgsProcessingException(
                f"MODALITY=dsm reads heights from a raster file; '{layer.name()}' is not one "
                "(save it as a GeoTIFF first)"
            )
        return GdalReader(path, bands=bands, scale=1.0, resampling="average")
    reader = reader_for_layer(layer, bands=bands, scale=scale)
    if bands is None and reader.band_count == 1 and model.has(Modality.DSM):
        wanted = model.spec(Modality.AERIAL).preprocess.bands
        raise RasterInputError(
            f"'{layer.name()}' has one band but the aerial encoder needs {len(wanted)} "
            f"({', '.join(wanted)}). If it holds heights (a DSM), run again with MODALITY=dsm."
        )
    return reader
