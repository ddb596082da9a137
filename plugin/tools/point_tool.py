"""The "find similar places" point map tool: a click becomes a map point in canvas CRS and WGS84."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
)
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool
from qgis.PyQt.QtCore import Qt, pyqtSignal

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")

# What a click means for the example list of the search dock.
REPLACE = "replace"  # plain click: start a new query from this place
POSITIVE = "positive"  # Shift + click: add this place as another positive example
NEGATIVE = "negative"  # Ctrl + click: add this place as a negative example


def click_mode(modifiers: Qt.KeyboardModifiers) -> str:
    """The example mode of a click: Ctrl = negative, Shift = positive, none = replace."""
    if modifiers & Qt.ControlModifier:
        return NEGATIVE
    if modifiers & Qt.ShiftModifier:
        return POSITIVE
    return REPLACE


def to_wgs84(point: QgsPointXY, crs: QgsCoordinateReferenceSystem) -> QgsPointXY:
    """``point`` (in ``crs``) as lon/lat degrees (x = lon, y = lat)."""
    if crs == WGS84:
        return QgsPointXY(point)
    tr = QgsCoordinateTransform(crs, WGS84, QgsProject.instance())
    return tr.transform(point)


class PointTool(QgsMapTool):
    """Emits ``pointClicked(map_point, wgs84_point, mode)`` on each left click; nothing else.

    ``map_point`` is in the canvas CRS, ``wgs84_point`` holds lon (x) and lat (y) in degrees and
    ``mode`` is :data:`REPLACE`, :data:`POSITIVE` (Shift) or :data:`NEGATIVE` (Ctrl).
    """

    pointClicked = pyqtSignal(QgsPointXY, QgsPointXY, str)  # noqa: N815 (Qt signal naming)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(Qt.CrossCursor)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802 (Qt API)
        if event.button() != Qt.LeftButton:
            return
        point = QgsPointXY(event.mapPoint())
        crs = self.canvas().mapSettings().destinationCrs()
        self.pointClicked.emit(point, to_wgs84(point, crs), click_mode(event.modifiers()))
