"""The Processing provider "unigeo": one algorithm per interactive action, plus batch work."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "unigeo.svg"


def algorithm_classes() -> list[type]:
    """Every algorithm class the provider offers, one per line."""
    return []


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
