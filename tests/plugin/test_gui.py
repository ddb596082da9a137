"""The plugin GUI: actions, dock, device badge, map tools wired to heatmaps, dialogs, clean unload."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.plugin.test_tasks import ORIGIN, patch_settings, sync_runner, write_scene

pytestmark = pytest.mark.qgis

ACTIONS = [
    "Find similar places",
    "Similar to region",
    "Text → map",
    "Photo → map",
    "Classify land use",
    "Settings",
    "Model manager",
    "About UniGeo and device check",
]


@pytest.fixture()
def env(monkeypatch, tmp_path, analytic_bundle, plugin_package):
    return patch_settings(monkeypatch, tmp_path, analytic_bundle)


@pytest.fixture()
def plugin(qgis_iface, qgis_new_project, env, plugin_package):
    p = plugin_package.classFactory(qgis_iface)
    p.initGui()
    yield p
    if p.toolbar is not None:
        p.unload()


@pytest.fixture()
def scene(tmp_path, qgis_new_project):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(write_scene(tmp_path / "scene.tif")), "scene")
    QgsProject.instance().addMapLayer(layer)
    return layer


def _flush(app) -> None:
    from qgis.PyQt.QtCore import QCoreApplication, QEvent

    app.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def test_init_gui_adds_actions_dock_and_cpu_badge(plugin, qgis_iface):
    from qgis.PyQt.QtWidgets import QDockWidget

    assert [a.text() for a in plugin.actions] == ACTIONS
    assert [a.text() for a in plugin.toolbar.actions()] == ACTIONS
    assert [a.isCheckable() for a in plugin.actions[:3]] == [True, True, True]
    docks = qgis_iface.mainWindow().findChildren(QDockWidget, "UniGeoSearchDock")
    assert docks == [plugin.dock]
    assert plugin.dock.badge.text() == "CPU"
    tip = plugin.dock.badge.toolTip()
    assert "no GPU provider" in tip and "onnxruntime-gpu" in tip


def test_unload_removes_everything(plugin, qgis_iface, qgis_app):
    from qgis.core import QgsApplication
    from qgis.PyQt.QtWidgets import QAction, QDockWidget

    canvas = qgis_iface.mapCanvas()
    actions = list(plugin.actions)
    plugin.actions[0].trigger()  # find-similar tool on
    assert canvas.mapTool() is plugin.point_tool
    plugin.actions[1].trigger()  # region tool replaces it; the first action unchecks
    assert canvas.mapTool() is plugin.polygon_tool and not actions[0].isChecked()
    band = plugin.polygon_tool.band
    assert band.scene() is canvas.scene()
    plugin.unload()
    _flush(qgis_app)
    assert canvas.mapTool() is None
    assert band.scene() is None  # the rubber band left the canvas
    assert plugin.dock is None and plugin.controller is None and plugin.actions == []
    win = qgis_iface.mainWindow()
    assert win.findChildren(QDockWidget, "UniGeoSearchDock") == []
    assert not [a for a in win.findChildren(QAction) if a.objectName().startswith("UniGeo ")]
    assert "unigeo" not in {p.id() for p in QgsApplication.processingRegistry().providers()}


def test_click_on_map_makes_heatmap_in_source_group(plugin, qgis_iface, scene, qgis_app):
    from qgis.core import QgsProject, QgsRectangle
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt

    plugin.controller.runner = sync_runner
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(scene.crs())
    x, y = ORIGIN[0] + 80, ORIGIN[1] - 80  # centre of the top-left (water) tile
    canvas.setExtent(QgsRectangle(x - 50, y - 50, x + 50, y + 50))
    plugin.dock.layer_combo.setLayer(scene)
    plugin.dock.area_combo.setCurrentIndex(1)  # whole layer
    plugin.actions[0].trigger()
    px = canvas.getCoordinateTransform().transform(x, y)
    event = QgsMapMouseEvent(
        canvas,
        QEvent.MouseButtonRelease,
        QPoint(round(px.x()), round(px.y())),
        Qt.LeftButton,
        Qt.LeftButton,
        Qt.NoModifier,
    )
    plugin.point_tool.canvasReleaseEvent(event)
    assert plugin.dock.example_list.count() == 1
    group = QgsProject.instance().layerTreeRoot().findGroup("scene")
    (heat,) = [n.layer() for n in group.findLayers()]
    assert heat.name() == "1 point" and Path(heat.source()).is_file()
    assert "point (" in heat.metadata().abstract()
    assert not plugin.dock.warning.isHidden()  # UTM 33N lies outside the bundle's domain
    assert "training domain" in plugin.dock.warning.text()
    assert plugin.dock.badge.text() == "CPU" and "CPU (1 threads)" in plugin.dock.badge.toolTip()
    templates = [plugin.dock.template_combo.itemText(i) for i in range(4)]
    assert templates[2:] == ["a satellite image of {}", "an aerial photo of {}"]  # the bundle's


def test_unload_cancels_running_query(plugin, qgis_iface, qgis_app, tmp_path, qgis_new_project):
    from qgis.core import QgsProject, QgsRasterLayer
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.tasks import EngineTask

    big = write_scene(tmp_path / "big.tif")  # replaced below by a larger raster
    import rasterio

    with rasterio.open(big) as src:
        profile, data = src.profile, src.read()
    # MINISBLACK and the names again: GDAL would tag band 4 of a new 4-band uint8 file alpha
    profile.update(width=1024, height=1024, photometric="MINISBLACK")
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(np.tile(data, (1, 16, 16)))
        dst.descriptions = ("red", "green", "blue", "nir")
    layer = QgsRasterLayer(str(big), "big")
    QgsProject.instance().addMapLayer(layer)
    plugin.dock.layer_combo.setLayer(layer)
    plugin.dock.area_combo.setCurrentIndex(1)
    assert plugin.search(QuerySpec(texts=("water",))) == 1  # 4096 tiles on the task manager
    (task,) = plugin.controller.tasks
    plugin.unload()  # cancels the embedding and waits for it
    end = time.monotonic() + 20
    while EngineTask.live and time.monotonic() < end:
        qgis_app.processEvents()
        time.sleep(0.01)
    assert not EngineTask.live and task.result is not None
    assert task.result.cancelled and not task.result.ok
    cache = tmp_path / "cache"
    assert [p for p in cache.iterdir() if not p.name.endswith(".partial")] == []  # resumable only
    assert QgsProject.instance().layerTreeRoot().findGroup("big") is None
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_dock_text_search_templates_and_recent(plugin, qgis_iface):
    from qgis.core import QgsSettings
    from unigeo.plugin.docks.search_dock import RECENT_KEY

    QgsSettings().remove(RECENT_KEY)
    dock = plugin.dock
    got = []
    dock.searchRequested.disconnect()
    dock.searchRequested.connect(got.append)
    dock.set_templates(("{}", "a satellite image of {}"))
    assert dock.template_combo.count() == 3
    dock.template_combo.setCurrentIndex(2)
    dock.prompt.setCurrentText("  lake  ")
    dock.search_text()
    dock.prompt.setCurrentText("forest")
    dock.search_text()
    assert got[0].texts == ("lake",) and got[0].templates == ("a satellite image of {}",)
    assert [dock.prompt.itemText(i) for i in range(dock.prompt.count())] == ["forest", "lake"]
    assert QgsSettings().value(RECENT_KEY) == ["forest", "lake"]
    QgsSettings().remove(RECENT_KEY)


def test_photo_with_exif_gps_is_marked_on_map(plugin, shared_data, qgis_iface):
    from qgis.core import QgsProject

    photo = shared_data / "street_photos" / "lund" / "01.jpg"
    dock = plugin.dock
    dock.set_photo(str(photo))
    assert dock.mark_button.isEnabled() and dock.gps_label.text().startswith("EXIF GPS 55.69")
    dock.photo_file.setFilePath(str(photo))
    dock.mark_button.click()
    (layer,) = QgsProject.instance().mapLayersByName("photo location: 01.jpg")
    pt = next(layer.getFeatures()).geometry().asPoint()
    from unigeo.engine.model.preprocess import read_exif_latlon

    lat, lon = read_exif_latlon(photo)
    assert 55.69 < lat < 55.71 and 13.19 < lon < 13.20  # Lund
    assert pt.y() == pytest.approx(lat, abs=1e-9) and pt.x() == pytest.approx(lon, abs=1e-9)
    dock.set_photo("")
    assert not dock.mark_button.isEnabled()


def test_settings_dialog_round_trip(env, qgis_app, plugin_package):
    from unigeo.plugin.dialogs.settings_dialog import SettingsDialog
    from unigeo.plugin.settings import Settings

    dlg = SettingsDialog(Settings(provider="cpu", threads=3, stride_px=8, cache_mb=512))
    assert dlg.provider.currentText() == "cpu" and dlg.threads.value() == 3
    dlg.stride.setValue(4)
    dlg.output.setFilePath("/data/out")
    s = dlg.settings()
    assert (s.provider, s.threads, s.stride_px, s.cache_mb) == ("cpu", 3, 4, 512)
    assert s.output_folder == "/data/out" and s.bundle == ""
    from qgis.PyQt.QtWidgets import QLabel

    hints = [w.text() for w in dlg.findChildren(QLabel)]
    assert any(h.startswith("onnxruntime ") and "CPU" in h for h in hints)


def test_classify_dialog_specs(analytic_bundle, qgis_new_project, plugin_package):
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsVectorLayer
    from unigeo.engine.errors import InputError
    from unigeo.plugin.dialogs.classify_dialog import ClassifyDialog

    dlg = ClassifyDialog({"water": ("water", "open water"), "trees": ("forest",)})
    assert dlg.spec().class_prompts == {"water": ("water", "open water"), "trees": ("forest",)}
    dlg.table.removeRow(1)
    with pytest.raises(InputError, match="at least two classes"):
        dlg.spec()
    dlg.add_class("sand", "")
    assert dlg.spec().class_prompts["sand"] == ("sand",)

    layer = QgsVectorLayer("Polygon?crs=EPSG:32633&field=kind:string", "labels", "memory")
    feats = []
    for i, kind in enumerate(("wet", "dry")):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({i} 0,{i + 1} 0,{i + 1} 1,{i} 1,{i} 0))"))
        f["kind"] = kind
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(layer)
    dlg.few.setChecked(True)
    dlg.layer_combo.setLayer(layer)
    dlg.field_combo.setField("kind")
    dlg.method.setCurrentIndex(1)
    spec = dlg.spec()
    assert [lab for _, lab in spec.examples] == ["wet", "dry"]
    assert spec.examples_crs == "EPSG:32633" and spec.method == "logreg" and not spec.zero_shot


def test_classify_action_and_text_toggle(plugin, scene, monkeypatch):
    from qgis.core import QgsProject
    from unigeo.plugin.dialogs.classify_dialog import ClassifyDialog

    plugin.actions[2].setChecked(True)  # Text → map shows the dock
    assert not plugin.dock.isHidden()
    plugin.actions[2].setChecked(False)
    assert plugin.dock.isHidden()

    def accept_defaults(dlg):
        dlg.result_spec = dlg.spec()  # the bundle's four classes, as the user would accept them
        return 1

    monkeypatch.setattr(ClassifyDialog, "exec_", accept_defaults)
    plugin.controller.runner = sync_runner
    plugin.dock.layer_combo.setLayer(scene)
    plugin.dock.area_combo.setCurrentIndex(1)
    plugin.show_classify()
    layers = QgsProject.instance().layerTreeRoot().findGroup("scene").findLayers()
    names = [n.layer().name() for n in layers]
    assert names == ["land use zero-shot", "land use zero-shot (confidence)"]


def test_dock_area_choices(plugin, qgis_iface):
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsFeature,
        QgsGeometry,
        QgsProject,
        QgsRectangle,
        QgsVectorLayer,
    )

    dock, canvas = plugin.dock, qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32633"))
    canvas.setExtent(QgsRectangle(500_000, 5_000_000, 501_000, 5_001_000))
    dock.area_combo.setCurrentIndex(0)
    area = dock.area_choice()
    assert area.kind == "extent" and area.crs == "EPSG:32633" and area.polygons == ()
    e = canvas.extent()
    assert area.extent == (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum())
    assert not dock.polygon_combo.isEnabled()

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    f = QgsFeature()
    f.setGeometry(QgsGeometry.fromWkt("POLYGON((15 45,15.1 45,15.1 45.1,15 45))"))
    layer.dataProvider().addFeatures([f])
    layer.updateExtents()
    QgsProject.instance().addMapLayer(layer)
    dock.area_combo.setCurrentIndex(2)
    dock.polygon_combo.setLayer(layer)
    area = dock.area_choice()
    assert dock.polygon_combo.isEnabled()
    assert area.kind == "polygons" and area.crs == "EPSG:4326"
    assert area.extent == pytest.approx((15.0, 45.0, 15.1, 45.1))
    assert len(area.polygons) == 1 and area.mask()[0][1] == "EPSG:4326"
    dock.area_combo.setCurrentIndex(1)
    assert dock.area_choice().extent is None


def test_every_toolbar_action_has_its_own_existing_icon(plugin_package):
    from unigeo.plugin.unigeo_plugin import ACTION_ICONS, PLUGIN_DIR

    files = list(ACTION_ICONS.values())
    assert len(set(files)) == len(files) == 6
    for name in files:
        assert (PLUGIN_DIR / "resources" / "icons" / name).is_file(), name


def test_dock_opens_wide_enough_for_its_rows(plugin, scene, qgis_app):
    """In a main window the dock is as wide as its widest row: nothing cut off, no side scroll.

    The real QGIS opened it at the narrow width a plain QScrollArea hints, with the band
    drop-downs and the source combo cut off behind a horizontal scroll bar.
    """
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow, QTextEdit

    window = QMainWindow()
    window.setCentralWidget(QTextEdit())  # the map canvas takes whatever the dock leaves
    window.resize(1600, 1000)
    dock = plugin.dock
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    dock.layer_combo.setLayer(scene)
    dock.show()
    window.show()
    window.resizeDocks([dock], [200], Qt.Horizontal)  # as narrow as QGIS opened it
    for _ in range(5):
        _flush(qgis_app)
    scroll, body = dock.widget(), dock.widget().widget()
    assert len(dock.band_panel.combos) == 4  # the widest row: the band drop-downs
    need = body.minimumSizeHint().width()
    assert need > 250
    assert body.width() >= need, (body.width(), need)
    assert not scroll.horizontalScrollBar().isVisible()
    assert dock.width() >= need
    window.removeDockWidget(dock)
    dock.setParent(None)  # the plugin's again: unload() removes it
    window.close()
