"""Start the real-QGIS check: wait for the plugin, build inputs and the project, run the checks.

Environment (set by tests/qgis_app/test_real_qgis.py):
  UNIGEO_APP_OUT      output folder: report.json, faulthandler.<session>.log, screens/, outputs/
  UNIGEO_APP_DATA     the shared real data folder (../shared/data)
  UNIGEO_APP_SESSION  1, 2, ...: the QGIS start (a crash ends one; the next skips checks done)
  UNIGEO_APP_TIMEOUT  seconds before the watchdog dumps every thread's stack and exits QGIS
  UNIGEO_APP_ONLY     optional comma-separated check names to run (others are skipped)
  UNIGEO_APP_SELFTEST "crash" adds a check that crashes QGIS on purpose (tests the reporting)
  UNIGEO_APP_MODEL_ZIP the default model bundle zip of `make package` (with its .sha256), which
                      the first session installs through the model manager (model_checks.py)
"""

from __future__ import annotations

import faulthandler
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsFillSymbol,
    QgsMarkerSymbol,
    QgsProject,
    QgsRasterLayer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QPoint, QTimer

from . import dialog_checks, gui_checks, inputs, model_checks, processing_checks
from .harness import (
    MessageCapture,
    Report,
    Runner,
    ensure,
    foreign_libraries,
    geo_libraries,
    pause,
    wait_until,
)

_KEEP: list[Any] = []  # objects that must live as long as QGIS (the log file, the runner)


@dataclass
class Context:
    """What every check uses: paths, the plugin, the project's layers, the model's geometry."""

    out: Path
    inputs: inputs.Inputs
    iface: Any
    plugin: Any
    capture: MessageCapture
    window_layer: Any = None
    vectors: dict[str, Any] = field(default_factory=dict)
    authid: str = ""
    dim: int = 0
    tile_m: float = 0.0
    class_names: list[str] = field(default_factory=list)
    report: Any = None

    @property
    def outputs(self) -> Path:
        return self.out / "outputs"

    @property
    def screens(self) -> Path:
        return self.out / "screens"

    @property
    def canvas(self) -> Any:
        return self.iface.mapCanvas()

    @property
    def default_outputs(self) -> Path:
        """Where the plugin puts results while the project is unsaved and no folder is set."""
        return Path(QgsApplication.qgisSettingsDirPath()) / "unigeo" / "outputs"

    def idle(self) -> bool:
        return QgsApplication.taskManager().countActiveTasks() == 0

    def reset_canvas(self) -> None:
        self.canvas.setExtent(self.window_layer.extent())
        self.canvas.refresh()

    def load_model_facts(self, folder: Path) -> None:
        """Load the model UniGeo uses now (it must be ``folder``) and keep its geometry."""
        from unigeo.engine.model.contract import Modality

        model = self.plugin.controller.model()
        ensure(
            Path(model.folder).resolve() == Path(folder).resolve(),
            f"UniGeo loaded the model in {model.folder}, expected {folder}",
        )
        spec = model.spec(Modality.AERIAL).preprocess
        self.dim, self.tile_m = int(model.dim), float(spec.size * spec.gsd_m)
        self.class_names = list(model.bundle.class_prompts)

    def screenshot(
        self, name: str, show: tuple = (), vectors: tuple[str, ...] = (), messages: bool = False
    ) -> None:
        """The main window as screens/<name>.png once the canvas has rendered.

        Only the source raster, the layers in ``show`` and the input vector layers named in
        ``vectors`` are visible, so each picture shows the result it is about; the message bar
        is cleared first unless ``messages``. The map canvas and the search dock (when shown)
        are also saved alone (<name>.canvas.png, <name>.dock.png), and where the canvas, the
        dock and the message bar lie in the window goes to <name>.json, so that
        scripts/refresh_screenshots.py can cut the README's pictures out of them.
        """
        keep = {self.window_layer.id(), *(lyr.id() for lyr in show)}
        keep |= {self.vectors[v].id() for v in vectors}
        for node in QgsProject.instance().layerTreeRoot().findLayers():
            node.setItemVisibilityChecked(node.layerId() in keep)
        if not messages:
            self.iface.messageBar().clearWidgets()
        self.canvas.refresh()
        pause(0.3)
        wait_until(lambda: not self.canvas.isDrawing(), 30, "the canvas to render")
        window = self.iface.mainWindow()
        window.grab().save(str(self.screens / f"{name}.png"))
        self.canvas.grab().save(str(self.screens / f"{name}.canvas.png"))
        dock = self.plugin.dock
        parts = {"canvas": self.canvas, "messagebar": self.iface.messageBar()}
        if dock is not None and dock.isVisible():
            dock.grab().save(str(self.screens / f"{name}.dock.png"))
            parts["dock"] = dock
        boxes = {}
        for key, widget in parts.items():
            if widget.isVisible():
                p = widget.mapTo(window, QPoint(0, 0))
                boxes[key] = [p.x(), p.y(), widget.width(), widget.height()]
        (self.screens / f"{name}.json").write_text(json.dumps(boxes))


# the input layers as outlines and dots, so that screenshots show the results under them
INPUT_COLORS = {"labels": "#ffffff", "area": "#00e5ff", "region": "#ff00ff", "avoid": "#ff3030",
                "extra": "#00c853", "negative": "#ff3030"}  # fmt: skip


def _symbol(layer: QgsVectorLayer, color: str) -> Any:
    if layer.geometryType() == QgsWkbTypes.PolygonGeometry:
        props = {"color": "0,0,0,0", "outline_color": color, "outline_width": "0.8"}
        return QgsFillSymbol.createSimple(props)
    return QgsMarkerSymbol.createSimple({"name": "circle", "color": color, "size": "2.5"})


def setup_project(ctx: Context) -> None:
    """The window raster and the input vector layers in the project, the canvas on the raster."""
    project = QgsProject.instance()
    raster = QgsRasterLayer(str(ctx.inputs.raster), "NAIP window")
    ensure(raster.isValid(), f"QGIS cannot open {ctx.inputs.raster}")
    project.setCrs(raster.crs())
    project.addMapLayer(raster)
    ctx.window_layer, ctx.authid = raster, raster.crs().authid()
    for name in ("labels", "area", "region", "avoid", "extra", "negative"):
        layer = QgsVectorLayer(ctx.inputs.layer(name), name, "ogr")
        ensure(layer.isValid(), f"QGIS cannot open {ctx.inputs.layer(name)}")
        layer.setRenderer(QgsSingleSymbolRenderer(_symbol(layer, INPUT_COLORS[name])))
        project.addMapLayer(layer)
        ctx.vectors[name] = layer
    window = ctx.iface.mainWindow()  # the whole Xvfb screen (no window manager maximises)
    window.move(0, 0)
    window.resize(1600, 1000)
    ctx.reset_canvas()


def check_plugin_loaded(ctx: Context) -> dict:
    from qgis.utils import active_plugins

    ensure("unigeo" in active_plugins, f"unigeo is not active: {active_plugins}")
    algs = sorted(
        a.id()
        for a in QgsApplication.processingRegistry().algorithms()
        if a.provider() is not None and a.provider().id() == "unigeo"
    )
    ensure(len(algs) == 9, f"{len(algs)} UniGeo algorithms: {algs}")
    texts = [a.text() for a in ctx.plugin.actions]
    for t in (
        "Find similar places",
        "Similar to region",
        "Text → map",
        "Photo → map",
        "Classify land use",
        "Settings",
        "Model manager",
    ):
        ensure(t in texts, f"no toolbar action '{t}' (actions: {texts})")
    import onnxruntime

    return {
        "qgis": Qgis.QGIS_VERSION,
        "geos": Qgis.geosVersion(),
        "algorithms": algs,
        "onnxruntime": onnxruntime.__file__,
        "geo_libs_at_start": sorted(geo_libraries()),
    }


def check_single_geo_stack(ctx: Context) -> dict:
    """One GEOS, GDAL and PROJ in the process: those QGIS links, none from a Python wheel."""
    report = ctx.report.data["geo_libs"]
    now = foreign_libraries(geo_libraries())
    known = {f["path"] for f in report["foreign"]}
    found = report["foreign"] + [{"path": p, "after": "(now)"} for p in now if p not in known]
    lines = [f"{f['path']} (loaded by '{f['after']}')" for f in found]
    ensure(not found, "a second GEOS/GDAL/PROJ was loaded into QGIS:\n" + "\n".join(lines))
    return {"loaded": sorted(geo_libraries())}


def check_outputs_complete(ctx: Context) -> dict:
    """Every file the tools left in the outputs folder is whole: no empty reserved name remains."""
    from osgeo import gdal

    files = sorted(p for p in ctx.default_outputs.glob("*") if p.is_file())
    empty = [p.name for p in files if p.stat().st_size == 0]
    ensure(not empty, f"empty files left in {ctx.default_outputs}: {empty}")
    bad = [p.name for p in files if p.suffix == ".tif" and gdal.Open(str(p)) is None]
    ensure(not bad, f"GeoTIFFs GDAL cannot open in {ctx.default_outputs}: {bad}")
    return {"files": len(files)}


def check_selftest_crash(ctx: Context) -> dict:
    """Crash QGIS on purpose in a task thread, as the GEOS clash did: tests the crash report."""
    import ctypes

    from qgis.core import QgsTask

    task = QgsTask.fromFunction("qgis_app self-test: crash", lambda task: ctypes.string_at(0))
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: False, 30, "the deliberate crash")  # QGIS dies before this ends
    return {}


def all_checks() -> list:
    checks = [("plugin_loaded", check_plugin_loaded)]
    if os.environ.get("UNIGEO_APP_SELFTEST") == "crash":
        checks.append(("selftest_crash", check_selftest_crash))
    checks = checks[:1] + model_checks.CHECKS + checks[1:]
    checks += gui_checks.CHECKS + processing_checks.CHECKS + dialog_checks.CHECKS
    checks += [("outputs_complete", check_outputs_complete)]
    checks += [("single_geo_stack", check_single_geo_stack)]
    only = [n for n in os.environ.get("UNIGEO_APP_ONLY", "").split(",") if n]
    keep = {*only, "plugin_loaded", "selftest_crash", *model_checks.SETUP}
    return [c for c in checks if not only or c[0] in keep]


def begin(out: Path, session: int) -> None:
    """Called once QGIS has loaded its plugins: build everything, then run the checks."""
    from qgis.utils import iface, plugins

    capture = MessageCapture()
    report = Report(out / "report.json", session)
    data = Path(os.environ["UNIGEO_APP_DATA"])
    ctx = Context(out, inputs.build(data, out / "inputs"), iface, plugins["unigeo"], capture)
    ctx.report = report
    for d in (ctx.outputs, ctx.screens):
        d.mkdir(parents=True, exist_ok=True)
    setup_project(ctx)
    from unigeo.plugin.settings import Settings

    installed = Settings.load().resolve_bundle()
    if installed is not None:  # a later session: the first one installed the bundle
        ctx.load_model_facts(Path(installed))
    report.note_libraries(after="QGIS start")
    checks = all_checks()
    report.data["planned"] = [name for name, _ in checks]
    runner = Runner(report, capture, ctx, checks)
    _KEEP.append(runner)
    runner.start()


def begin_or_exit(out: Path, session: int) -> None:
    """:func:`begin`; when setting up fails, the reason goes to the report and QGIS exits (4)."""
    try:
        begin(out, session)
    except Exception:  # noqa: BLE001 - nothing can run: say why and stop
        import json
        import traceback

        (out / "setup_error.json").write_text(json.dumps({"error": traceback.format_exc()}))
        QgsProject.instance().clear()  # QGIS 3.22 can crash in ~QgisApp while it holds layers
        QgsApplication.exit(4)


def start() -> None:
    """Entry point for ``qgis --code``: arm the crash and hang reporting, wait for the plugin."""
    out = Path(os.environ["UNIGEO_APP_OUT"])
    session = int(os.environ.get("UNIGEO_APP_SESSION", "1"))
    log = open(out / f"faulthandler.{session}.log", "w")  # noqa: SIM115 - open while QGIS runs
    _KEEP.append(log)
    faulthandler.enable(log, all_threads=True)  # then QGIS's own handler (chained)
    faulthandler.dump_traceback_later(
        float(os.environ.get("UNIGEO_APP_TIMEOUT", 600)), exit=True, file=log
    )
    t0 = time.monotonic()

    def ready() -> None:
        from qgis.utils import iface, plugins

        if "unigeo" in plugins and iface is not None and iface.mainWindow().isVisible():
            QTimer.singleShot(500, lambda: begin_or_exit(out, session))
        elif time.monotonic() - t0 > 120:
            (out / "setup_error.json").write_text('{"error": "UniGeo did not load within 120 s"}')
            QgsApplication.exit(4)
        else:
            QTimer.singleShot(200, ready)

    QTimer.singleShot(0, ready)
