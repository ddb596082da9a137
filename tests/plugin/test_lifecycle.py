"""classFactory -> initGui -> unload runs clean and leaves nothing behind (pytest-qgis)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.qgis


def _registry_ids():
    from qgis.core import QgsApplication

    return {p.id() for p in QgsApplication.processingRegistry().providers()}


def test_plugin_load_and_unload_leave_nothing(qgis_iface, qgis_app, plugin_package):
    from qgis.PyQt.QtWidgets import QAction, QDockWidget, QToolBar

    win = qgis_iface.mainWindow()
    toolbars_before = set(win.findChildren(QToolBar))
    docks_before = set(win.findChildren(QDockWidget))
    assert "unigeo" not in _registry_ids()

    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    assert "unigeo" in _registry_ids()
    assert plugin.actions and all(isinstance(a, QAction) for a in plugin.actions)
    assert plugin.toolbar is not None and plugin.toolbar.actions()

    plugin.unload()
    qgis_app.processEvents()
    from qgis.PyQt.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert "unigeo" not in _registry_ids()
    assert plugin.actions == [] and plugin.toolbar is None
    assert set(win.findChildren(QToolBar)) <= toolbars_before
    assert set(win.findChildren(QDockWidget)) <= docks_before


def test_plugin_can_be_loaded_twice(qgis_iface, plugin_package):
    for _ in range(2):
        plugin = plugin_package.classFactory(qgis_iface)
        plugin.initGui()
        plugin.unload()
    assert "unigeo" not in _registry_ids()
