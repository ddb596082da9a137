"""The plugin object QGIS loads: builds the toolbar, menu and Processing provider, and removes them."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from . import deps

PLUGIN_DIR = Path(__file__).resolve().parent.parent
MENU = "&UniGeo"
LOG_TAG = "UniGeo"


class UniGeoPlugin:
    """Owns every GUI object it adds, so that ``unload`` can remove each one."""

    def __init__(self, iface):
        self.iface = iface
        self.toolbar = None
        self.actions: list[QAction] = []
        self.provider = None
        deps.activate()

    def icon(self, name: str = "unigeo.svg") -> QIcon:
        return QIcon(str(PLUGIN_DIR / "resources" / "icons" / name))

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        self.toolbar = self.iface.addToolBar("UniGeo")
        self.toolbar.setObjectName("UniGeoToolbar")
        self._add_action("About UniGeo and device check", self.show_about)
        self.init_processing()
        missing = deps.missing()
        if missing:
            self._warn_missing(missing)

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        self.init_processing()

    def init_processing(self) -> None:
        if self.provider is not None:
            return
        from .processing.provider import UniGeoProvider

        self.provider = UniGeoProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def _add_action(self, text: str, slot) -> QAction:
        action = QAction(self.icon(), text, self.iface.mainWindow())
        action.triggered.connect(slot)
        self.toolbar.addAction(action)
        self.iface.addPluginToMenu(MENU, action)
        self.actions.append(action)
        return action

    def _warn_missing(self, missing: list[str]) -> None:
        cmd = " ".join(deps.install_command(deps.deps_dir(), missing))
        msg = f"UniGeo needs {', '.join(missing)}. Install with: {cmd}"
        QgsMessageLog.logMessage(msg, LOG_TAG, Qgis.Warning)
        self.iface.messageBar().pushMessage("UniGeo", msg, level=Qgis.Warning, duration=0)

    def show_about(self) -> None:
        missing = deps.missing()
        if missing:
            text = f"Missing runtime dependencies: {', '.join(missing)}"
        else:
            import onnxruntime

            text = (
                f"onnxruntime {onnxruntime.__version__}, providers: "
                f"{', '.join(onnxruntime.get_available_providers())}"
            )
        QMessageBox.information(self.iface.mainWindow(), "UniGeo", text)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            if self.toolbar is not None:
                self.toolbar.removeAction(action)
            action.deleteLater()
        self.actions.clear()
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
