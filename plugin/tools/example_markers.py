"""Canvas markers for the clicked example places: a green plus for a place to find, a red cross to avoid.

The markers stay until the examples are cleared. Each keeps its point in the CRS it was clicked
in and is placed again when the canvas CRS changes, so it never drifts off its place.
"""

from __future__ import annotations

from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject
from qgis.gui import QgsMapCanvas, QgsVertexMarker
from qgis.PyQt.QtGui import QColor

POSITIVE_COLOR = QColor(0, 170, 60)
NEGATIVE_COLOR = QColor(220, 30, 30)
SIZE_PX = 16
PEN_PX = 3
HALO_COLOR = QColor(255, 255, 255, 230)
ICON_KEY = 0  # QGraphicsItem data key holding the marker's icon type
HALO_KEY = 1  # QGraphicsItem data key set on the white halo under a marker


class ExampleMarkers:
    """Owns the vertex markers of the example places on one canvas.

    Each place gets two markers: the coloured symbol over a wider white one, a halo that keeps
    it visible on any heatmap colour.
    """

    def __init__(self, canvas: QgsMapCanvas) -> None:
        self.canvas = canvas
        self.markers: list[tuple[QgsVertexMarker, QgsPointXY, QgsCoordinateReferenceSystem]] = []
        canvas.destinationCrsChanged.connect(self._reproject)

    def add(self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem, negative: bool) -> None:
        """Mark ``point`` (in ``crs``): a green plus, or a red cross when ``negative``."""
        icon = QgsVertexMarker.ICON_X if negative else QgsVertexMarker.ICON_CROSS
        halo = self._marker(icon, HALO_COLOR, PEN_PX + 3, SIZE_PX + 2)
        halo.setData(HALO_KEY, True)
        marker = self._marker(icon, NEGATIVE_COLOR if negative else POSITIVE_COLOR, PEN_PX, SIZE_PX)
        marker.setData(ICON_KEY, icon)  # QGIS 3.22 has no getter for the icon type
        marker.setToolTip("place to avoid" if negative else "example place")
        for m in (halo, marker):
            self.markers.append((m, QgsPointXY(point), QgsCoordinateReferenceSystem(crs)))
            self._place(m, point, crs)

    def _marker(self, icon: int, color: QColor, pen: int, size: int) -> QgsVertexMarker:
        marker = QgsVertexMarker(self.canvas)
        marker.setIconType(icon)
        marker.setColor(color)
        marker.setFillColor(QColor(255, 255, 255, 0))
        marker.setIconSize(size)
        marker.setPenWidth(pen)
        return marker

    def _place(
        self, marker: QgsVertexMarker, point: QgsPointXY, crs: QgsCoordinateReferenceSystem
    ) -> None:
        dest = self.canvas.mapSettings().destinationCrs()
        if crs.isValid() and dest.isValid() and crs != dest:
            point = QgsCoordinateTransform(crs, dest, QgsProject.instance()).transform(point)
        marker.setCenter(point)

    def _reproject(self) -> None:
        for marker, point, crs in self.markers:
            self._place(marker, point, crs)

    def clear(self) -> None:
        """Take every marker off the canvas."""
        scene = self.canvas.scene()
        for marker, _, _ in self.markers:
            marker.hide()
            if scene is not None and marker.scene() is scene:
                scene.removeItem(marker)
        self.markers = []

    def remove(self) -> None:
        """Clear and stop following the canvas CRS (plugin unload)."""
        self.clear()
        try:
            self.canvas.destinationCrsChanged.disconnect(self._reproject)
        except TypeError:
            pass  # already disconnected
