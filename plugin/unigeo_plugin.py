"""The plugin object QGIS loads: toolbar, menu, map tools, search dock, dialogs, Processing provider.

Every GUI object added in ``initGui`` is removed in ``unload``, which also cancels running tasks
and releases the loaded models. On a first run without any model bundle (the plugin zip from the
QGIS repository carries none) it shows a message with a button that installs the default model.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox, QPushButton

from . import deps

PLUGIN_DIR = Path(__file__).resolve().parent.parent
MENU = "&UniGeo"
LOG_TAG = "UniGeo"
# One icon per toolbar action (resources/icons); anything else gets the plugin icon.
ACTION_ICONS = {
    "Find similar places": "find_similar.svg",
    "Similar to region": "region.svg",
    "Text → map": "text.svg",
    "Photo → map": "photo.svg",
    "Classify land use": "classify.svg",
    "Settings": "settings.svg",
}


class UniGeoPlugin:
    """Owns every GUI object it adds, so that ``unload`` can remove each one."""

    def __init__(self, iface):
        self.iface = iface
        self.toolbar = None
        self.actions: list[QAction] = []
        self.provider = None
        self.controller = None
        self.dock = None
        self.point_tool = None
        self.polygon_tool = None
        self.tool_actions: dict[object, QAction] = {}
        self.first_run_item = None  # the "no model yet" message bar item
        self.model_manager = None  # the Model manager dialog, once opened
        deps.activate()

    def icon(self, name: str = "unigeo.svg") -> QIcon:
        return QIcon(str(PLUGIN_DIR / "resources" / "icons" / name))

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        self.toolbar = self.iface.addToolBar("UniGeo")
        self.toolbar.setObjectName("UniGeoToolbar")
        self.init_processing()
        missing = deps.missing()
        if missing:
            self._add_action("About UniGeo and device check", self.show_about)
            self._warn_missing(missing)
            return  # the engine cannot run: offer only the about box and Processing
        self._init_tools()
        self._add_action("About UniGeo and device check", self.show_about)
        self.check_first_run()

    def _init_tools(self) -> None:
        from .controller import Controller
        from .docks.search_dock import SearchDock
        from .tools.point_tool import PointTool
        from .tools.polygon_tool import PolygonTool

        canvas = self.iface.mapCanvas()
        self.controller = Controller(self.iface)
        self.dock = SearchDock(canvas, self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.point_tool = PointTool(canvas)
        self.polygon_tool = PolygonTool(canvas)
        self._connect()
        find = self._add_action("Find similar places", self.activate_point_tool, checkable=True)
        region = self._add_action("Similar to region", self.activate_polygon_tool, checkable=True)
        self.tool_actions = {self.point_tool: find, self.polygon_tool: region}
        for tool, action in self.tool_actions.items():
            tool.setAction(action)
        text = self._add_action("Text → map", self.dock.setVisible, checkable=True)
        self.dock.visibilityChanged.connect(text.setChecked)
        self._add_action("Photo → map", self.show_photo_search)
        self._add_action("Classify land use", self.show_classify)
        self._add_action("Settings", self.show_settings)
        self._add_action("Model manager", self.show_model_manager)
        self.update_badge()

    def _connect(self) -> None:
        c, d = self.controller, self.dock
        d.searchRequested.connect(self.search)
        d.markPhotoRequested.connect(c.mark_location)
        c.deviceChanged.connect(d.set_device)
        c.domainChecked.connect(d.set_warning)
        c.modelChanged.connect(lambda model: d.set_templates(model.bundle.prompt_templates))
        c.modelChanged.connect(self.refresh_bands)
        # a model loads, so one was installed (Processing, the shell): the first-run message goes
        c.modelChanged.connect(lambda _model: self._pop_first_run())
        d.layer_combo.layerChanged.connect(self.refresh_bands)
        d.visibilityChanged.connect(self.refresh_bands)
        self.point_tool.pointClicked.connect(self._point_clicked)
        self.polygon_tool.polygonDrawn.connect(self._polygon_drawn)

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        self.init_processing()

    def init_processing(self) -> None:
        if self.provider is not None:
            return
        from .processing.provider import UniGeoProvider

        self.provider = UniGeoProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def _add_action(self, text: str, slot, checkable: bool = False) -> QAction:
        action = QAction(
            self.icon(ACTION_ICONS.get(text, "unigeo.svg")), text, self.iface.mainWindow()
        )
        action.setObjectName("UniGeo " + text)
        action.setCheckable(checkable)
        (action.toggled if checkable else action.triggered).connect(slot)
        self.toolbar.addAction(action)
        self.iface.addPluginToMenu(MENU, action)
        self.actions.append(action)
        return action

    def _warn_missing(self, missing: list[str]) -> None:
        cmd = " ".join(deps.install_command(deps.deps_dir(), missing))
        msg = f"UniGeo needs {', '.join(missing)}. Install with: {cmd}"
        bad = deps.known_bad()
        if bad:  # a broken copy outside the private folder would still be imported first
            msg += f". Known to crash QGIS: {'; '.join(bad)} (upgrade or remove that copy)"
        QgsMessageLog.logMessage(msg, LOG_TAG, Qgis.Warning)
        self.iface.messageBar().pushMessage("UniGeo", msg, level=Qgis.Warning, duration=0)

    # -- device badge -----------------------------------------------------------------------
    def update_badge(self) -> None:
        """Badge from the loaded model if any, else predicted from the provider setting."""
        from ..engine.errors import EngineError
        from .controller import device_badge
        from .model_cache import loaded_models
        from .settings import Settings

        try:
            models = loaded_models()
            if models:
                text, tip = device_badge(models[0])
            else:
                text, tip = device_badge(provider=Settings.load().provider_arg())
        except (EngineError, ImportError) as e:
            text, tip = "—", str(e)
        self.dock.set_device(text, tip)

    def refresh_bands(self, *_: object) -> None:
        """Show the source layer's band choice for the model (only while the dock is open)."""
        from ..engine.errors import EngineError
        from . import source_bands

        if self.dock is None or self.dock.isHidden():
            return  # loading the model for a closed dock would only slow QGIS down
        try:
            wanted, optional = source_bands.wanted_bands(self.controller.model())
        except EngineError as e:
            self.dock.band_panel.set_unavailable(str(e))
            return
        self.dock.band_panel.set_source(self.dock.source_layer(), wanted, optional)

    # -- map tools and searches -------------------------------------------------------------
    def activate_point_tool(self, on: bool = True) -> None:
        self._set_tool(self.point_tool, on)

    def activate_polygon_tool(self, on: bool = True) -> None:
        self._set_tool(self.polygon_tool, on)

    def _set_tool(self, tool, on: bool) -> None:
        canvas = self.iface.mapCanvas()
        if on:
            canvas.setMapTool(tool)
            self.dock.show()
        elif canvas.mapTool() is tool:
            canvas.unsetMapTool(tool)

    def _point_clicked(self, point, wgs84, mode: str) -> None:
        crs = self.iface.mapCanvas().mapSettings().destinationCrs()
        self.dock.add_example(point, crs, wgs84, mode)

    def _polygon_drawn(self, geometry, crs) -> None:
        from ..engine.pipeline import QuerySpec
        from .controller import crs_string

        self.search(QuerySpec(regions=((geometry.asWkt(), crs_string(crs)),)))

    def search(self, spec) -> int:
        """Run a heatmap query on the dock's source layer and area."""
        return self.controller.run_query(spec, self.dock.source_layer(), self.dock.area_choice())

    def show_photo_search(self) -> None:
        self.dock.show()
        self.dock.raise_()
        self.dock.photo_file.setFocus()

    def show_classify(self) -> None:
        from ..engine.errors import EngineError
        from .dialogs.classify_dialog import ClassifyDialog

        try:
            bundle = self.controller.model().bundle
        except EngineError as e:
            self.controller.message(str(e), Qgis.Critical)
            return
        dlg = ClassifyDialog(bundle.class_prompts, self.iface.mainWindow(), bundle=bundle)
        if dlg.exec_() and dlg.result_spec is not None:
            self.controller.classify(
                dlg.result_spec, self.dock.source_layer(), self.dock.area_choice()
            )

    def show_settings(self) -> None:
        from .dialogs.settings_dialog import SettingsDialog
        from .model_cache import release_all

        dlg = SettingsDialog(parent=self.iface.mainWindow())
        if dlg.exec_():
            release_all()  # the next query loads the model with the new settings
            self.update_badge()

    # -- models ----------------------------------------------------------------------------
    def check_first_run(self) -> bool:
        """Without any model bundle, show the message with the one-click install; True if shown."""
        from .settings import Settings, first_run_message, first_run_short

        s = Settings.load()
        if s.resolve_bundle() is not None:
            return False
        bar = self.iface.messageBar()
        # the bar has room for about one line: the short form; the log keeps the shell command
        item = bar.createMessage("UniGeo", first_run_short())
        button = QPushButton("Install default model", item)
        button.setObjectName("UniGeoInstallDefaultModel")
        button.clicked.connect(lambda: self.show_model_manager(install_default=True))
        item.layout().addWidget(button)
        self.first_run_item = bar.pushWidget(item, Qgis.Warning, 0)
        QgsMessageLog.logMessage(first_run_message(s.models_path()), LOG_TAG, Qgis.Warning)
        return True

    def _pop_first_run(self) -> None:
        if self.first_run_item is not None:
            try:
                self.iface.messageBar().popWidget(self.first_run_item)
            except RuntimeError:  # the user closed the message: Qt deleted it already
                pass
            self.first_run_item = None

    def show_model_manager(self, install_default: bool = False):
        """Open the Model manager (and start the default install when asked); returns it."""
        from .dialogs.model_manager_dialog import ModelManagerDialog

        if self.model_manager is None:
            self.model_manager = ModelManagerDialog(parent=self.iface.mainWindow())
            self.model_manager.activeChanged.connect(self._model_changed)
        dlg = self.model_manager
        dlg.refresh()
        if install_default:
            dlg.install_default()
        dlg.open()
        dlg.raise_()
        return dlg

    def _model_changed(self, _folder: str = "") -> None:
        from .model_cache import release_all
        from .settings import Settings

        release_all()
        if Settings.load().resolve_bundle() is not None:
            self._pop_first_run()
        if self.dock is not None:
            self.update_badge()
            self.refresh_bands()

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

    # -- unload -----------------------------------------------------------------------------
    def _unload_tools(self) -> None:
        if self.controller is not None:
            self.controller.cancel_all()
            self.controller = None
        canvas = self.iface.mapCanvas()
        for tool in (self.point_tool, self.polygon_tool):
            if tool is not None:
                if canvas.mapTool() is tool:
                    canvas.unsetMapTool(tool)
                tool.setAction(None)
        if self.polygon_tool is not None:
            self.polygon_tool.remove()
        self.point_tool = self.polygon_tool = None
        self.tool_actions = {}
        if self.dock is not None:
            self.dock.teardown()
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        from .model_cache import release_all

        release_all()

    def unload(self) -> None:
        self._pop_first_run()
        if self.model_manager is not None:
            self.model_manager.reject()  # cancels an install in progress
            self.model_manager.deleteLater()
            self.model_manager = None
        self._unload_tools()
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
