"""Map tools turn simulated clicks on a UTM canvas into the right map points (canvas CRS, WGS84)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.qgis

UTM = "EPSG:32633"
EXTENT = (500_000.0, 5_000_000.0, 504_000.0, 5_004_000.0)  # 4 km square, 1 m per pixel at 4000


@pytest.fixture()
def utm_canvas(qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle
    from qgis.gui import QgsMapCanvas

    canvas = QgsMapCanvas()
    canvas.resize(400, 400)
    canvas.show()  # the map settings follow the widget size only once it is shown
    qgis_app.processEvents()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem(UTM))
    canvas.setExtent(QgsRectangle(*EXTENT))
    qgis_app.processEvents()
    assert canvas.mapSettings().outputSize().width() > 300
    yield canvas
    canvas.hide()
    canvas.deleteLater()


def _event(canvas, kind, px, py, button=None, modifiers=None):
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt

    button = Qt.LeftButton if button is None else button
    modifiers = Qt.NoModifier if modifiers is None else modifiers
    etype = {"release": QEvent.MouseButtonRelease, "move": QEvent.MouseMove}[kind]
    return QgsMapMouseEvent(canvas, etype, QPoint(px, py), button, button, modifiers)


def _expected(canvas, px, py):
    """The map point under pixel (px, py) per the canvas transform, and its lon/lat by pyproj."""
    from pyproj import Transformer

    p = canvas.getCoordinateTransform().toMapCoordinates(px, py)
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(p.x(), p.y())
    return p, lon, lat


@pytest.mark.parametrize(
    ("mods", "mode"),
    [("none", "replace"), ("shift", "positive"), ("ctrl", "negative")],
)
def test_point_tool_emits_canvas_and_wgs84_points(utm_canvas, plugin_package, mods, mode):
    from qgis.PyQt.QtCore import Qt
    from unigeo.plugin.tools.point_tool import PointTool

    modifiers = {"none": Qt.NoModifier, "shift": Qt.ShiftModifier, "ctrl": Qt.ControlModifier}
    tool = PointTool(utm_canvas)
    got = []
    tool.pointClicked.connect(lambda m, w, k: got.append((m, w, k)))
    tool.canvasReleaseEvent(_event(utm_canvas, "release", 100, 300, modifiers=modifiers[mods]))
    assert len(got) == 1
    mp, wgs, kind = got[0]
    exp, lon, lat = _expected(utm_canvas, 100, 300)
    assert kind == mode
    assert mp.x() == pytest.approx(exp.x(), abs=1e-6) and mp.y() == pytest.approx(exp.y(), abs=1e-6)
    # the click is inside the 4 km UTM square, left half, lower half
    assert EXTENT[0] < mp.x() < (EXTENT[0] + EXTENT[2]) / 2
    assert EXTENT[1] < mp.y() < (EXTENT[1] + EXTENT[3]) / 2
    assert wgs.x() == pytest.approx(lon, abs=1e-9) and wgs.y() == pytest.approx(lat, abs=1e-9)
    assert 14.9 < wgs.x() < 15.1 and 45.1 < wgs.y() < 45.2  # UTM 33N near its central meridian


def test_point_tool_ignores_right_click(utm_canvas, plugin_package):
    from qgis.PyQt.QtCore import Qt
    from unigeo.plugin.tools.point_tool import PointTool

    tool = PointTool(utm_canvas)
    got = []
    tool.pointClicked.connect(lambda *a: got.append(a))
    tool.canvasReleaseEvent(_event(utm_canvas, "release", 10, 10, button=Qt.RightButton))
    assert got == []


def test_polygon_tool_draws_and_emits_polygon(utm_canvas, plugin_package):
    from qgis.PyQt.QtCore import Qt
    from unigeo.plugin.tools.polygon_tool import PolygonTool

    tool = PolygonTool(utm_canvas)
    got = []
    tool.polygonDrawn.connect(lambda g, c: got.append((g, c)))
    pixels = [(50, 50), (250, 50), (250, 250), (50, 250)]
    for px, py in pixels:
        tool.canvasReleaseEvent(_event(utm_canvas, "release", px, py))
    tool.canvasMoveEvent(_event(utm_canvas, "move", 60, 200, button=Qt.NoButton))
    assert tool.band.numberOfVertices() == 5  # four vertices and the hover point
    tool.canvasReleaseEvent(_event(utm_canvas, "release", 0, 0, button=Qt.RightButton))
    assert len(got) == 1
    geom, crs = got[0]
    assert crs.authid() == UTM
    corners = [_expected(utm_canvas, px, py)[0] for px, py in pixels]
    w = abs(corners[1].x() - corners[0].x())
    h = abs(corners[0].y() - corners[3].y())
    assert geom.area() == pytest.approx(w * h, rel=1e-9)
    assert geom.boundingBox().xMinimum() == pytest.approx(corners[0].x())
    assert geom.boundingBox().yMaximum() == pytest.approx(corners[0].y())
    assert tool.points == [] and tool.band.numberOfVertices() == 0  # sketch cleared


def test_polygon_tool_drops_too_few_vertices_and_escape(utm_canvas, plugin_package):
    from qgis.PyQt.QtCore import QEvent, Qt
    from qgis.PyQt.QtGui import QKeyEvent
    from unigeo.plugin.tools.polygon_tool import PolygonTool

    tool = PolygonTool(utm_canvas)
    got = []
    tool.polygonDrawn.connect(lambda g, c: got.append(g))
    for px, py in [(10, 10), (100, 10)]:
        tool.canvasReleaseEvent(_event(utm_canvas, "release", px, py))
    tool.finish()
    assert got == []
    tool.canvasReleaseEvent(_event(utm_canvas, "release", 10, 10))
    tool.keyPressEvent(QKeyEvent(QEvent.KeyPress, Qt.Key_Escape, Qt.NoModifier))
    assert tool.points == []
    tool.remove()
