"""The Processing provider "unigeo": one algorithm per interactive action, plus batch work."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "unigeo.svg"


def algorithm_classes() -> list[type]:
    """Every algorithm class the provider offers, one per line."""
    from .classify_algorithm import ClassifyAlgorithm
    from .embed_features_algorithm import EmbedFeaturesAlgorithm
    from .embed_raster_algorithm import EmbedRasterAlgorithm
    from .encode_table_algorithm import EncodeTableAlgorithm
    from .gps_field_algorithm import GpsFieldAlgorithm
    from .heatmap_algorithm import HeatmapAlgorithm
    from .models_algorithm import InstallModelAlgorithm, ModelsAlgorithm
    from .top_hits_algorithm import TopHitsAlgorithm

    return [
        EmbedRasterAlgorithm,
        HeatmapAlgorithm,
        TopHitsAlgorithm,
        ClassifyAlgorithm,
        EmbedFeaturesAlgorithm,
        EncodeTableAlgorithm,
        GpsFieldAlgorithm,
        InstallModelAlgorithm,
        ModelsAlgorithm,
    ]


class UniGeoProvider(QgsProcessingProvider):
    """Registers the UniGeo algorithms under the id ``unigeo``."""

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        for cls in algorithm_classes():
            self.addAlgorithm(cls())

    def id(self) -> str:
        return "unigeo"

    def name(self) -> str:
        return "UniGeo"

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        return "UniGeo: five-modality geospatial embeddings"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))
