"""The "similar to region" map tool: draw a polygon with a rubber band, emit it when closed.

Left click adds a vertex, moving the mouse previews the next edge, right click or double click
closes the polygon (three vertices at least), Esc or Backspace drops the sketch.
"""

from __future__ import annotations

from qgis.core import QgsCoordinateReferenceSystem, QgsGeometry, QgsPointXY, QgsWkbTypes
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QKeyEvent


class PolygonTool(QgsMapTool):
    """Emits ``polygonDrawn(geometry, crs)``: a polygon in the canvas CRS, and that CRS."""

    polygonDrawn = pyqtSignal(QgsGeometry, QgsCoordinateReferenceSystem)  # noqa: N815

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(Qt.CrossCursor)
        self.points: list[QgsPointXY] = []
        self.band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.band.setColor(QColor(255, 45, 85, 90))
        self.band.setStrokeColor(QColor(255, 45, 85))
        self.band.setWidth(2)

    def reset(self) -> None:
        """Drop the sketch and hide the rubber band."""
        self.points = []
        self.band.reset(QgsWkbTypes.PolygonGeometry)

    def _redraw(self, hover: QgsPointXY | None = None) -> None:
        self.band.reset(QgsWkbTypes.PolygonGeometry)
        pts = self.points + ([hover] if hover is not None else [])
        for i, p in enumerate(pts):
            self.band.addPoint(p, i == len(pts) - 1)

    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802 (Qt API)
        if self.points:
            self._redraw(QgsPointXY(event.mapPoint()))

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802 (Qt API)
        if event.button() == Qt.RightButton:
            self.finish()
        elif event.button() == Qt.LeftButton:
            self.points.append(QgsPointXY(event.mapPoint()))
            self._redraw()

    def canvasDoubleClickEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802 (Qt API)
        self.finish()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        if event.key() in (Qt.Key_Escape, Qt.Key_Backspace):
            self.reset()
            event.accept()

    def finish(self) -> None:
        """Close the polygon and emit it; with fewer than three distinct vertices, drop it."""
        pts = [p for i, p in enumerate(self.points) if i == 0 or p != self.points[i - 1]]
        if len(pts) >= 3:
            geom = QgsGeometry.fromPolygonXY([pts + [pts[0]]])
            if not geom.isEmpty() and geom.area() > 0:
                crs = self.canvas().mapSettings().destinationCrs()
                self.polygonDrawn.emit(geom, crs)
        self.reset()

    def deactivate(self) -> None:
        self.reset()
        super().deactivate()

    def remove(self) -> None:
        """Take the rubber band off the canvas (called on plugin unload)."""
        self.reset()
        scene = self.canvas().scene()
        if scene is not None and self.band.scene() is scene:
            scene.removeItem(self.band)
