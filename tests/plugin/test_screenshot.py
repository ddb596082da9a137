"""Render the search dock offscreen (widget.grab) and check the image has real content.

The image goes to a temporary folder, so ``make test`` never modifies tracked files. The README's
docs/img/dock.png comes from the real QGIS instead: scripts/refresh_screenshots.py cuts it out of
the screens of tests/qgis_app.
"""

from __future__ import annotations

import pytest

from tests.plugin.test_tasks import patch_settings

pytestmark = pytest.mark.qgis


def test_dock_screenshot(
    qgis_iface,
    qgis_app,
    qgis_new_project,
    shared_data,
    analytic_bundle,
    monkeypatch,
    tmp_path,
    plugin_package,
):
    import numpy as np
    from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtGui import QImage
    from unigeo.plugin.controller import device_badge
    from unigeo.plugin.docks.search_dock import SearchDock
    from unigeo.plugin.tools.point_tool import to_wgs84

    patch_settings(monkeypatch, tmp_path, analytic_bundle)
    naip = shared_data / "naip_north_dakota" / "m_4709963_se_14_1_20200713.tif"
    if not naip.is_file():
        naip = sorted((shared_data / "naip_north_dakota").glob("*.tif"))[-1]
    layer = QgsRasterLayer(str(naip), "NAIP Stutsman County 2020")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)

    dock = SearchDock(qgis_iface.mapCanvas())
    dock.layer_combo.setLayer(layer)
    dock.set_templates(("{}", "a satellite image of {}", "an aerial photo of {}"))
    dock.prompt.addItems(["wetlands next to cropland", "dense housing", "gravel pit"])
    dock.prompt.setCurrentText("wetlands next to cropland")
    dock.searchRequested.connect(lambda spec: None)
    utm = QgsCoordinateReferenceSystem("EPSG:26914")
    clicks = [(486_000, 5_205_500, "replace"), (487_200, 5_206_100, "positive")]
    clicks.append((488_000, 5_205_000, "negative"))
    for x, y, mode in clicks:
        dock.add_example(QgsPointXY(x, y), utm, to_wgs84(QgsPointXY(x, y), utm), mode)
    assert dock.examples_spec().negative_points == ((488_000, 5_205_000, "EPSG:26914"),)
    dock.set_device(*device_badge(provider=None))
    dock.set_warning(
        "35 % of the area lies outside the model's training domain; scores there are unreliable."
    )
    dock.resize(380, 800)
    dock.show()
    qgis_app.processEvents()
    pix = dock.grab()
    out = tmp_path / "dock.png"
    assert pix.save(str(out), "PNG")
    dock.close()
    dock.deleteLater()

    img = QImage(str(out)).convertToFormat(QImage.Format_RGB32)
    assert img.width() >= 380 and img.height() == 800
    ptr = img.constBits()
    ptr.setsize(img.byteCount())
    arr = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    assert arr[..., :3].std() > 20  # real content, not a blank image
    assert dock.badge.text() == "CPU"
