"""Every UniGeo toolbar tool driven as a user would: actions, real mouse events, the dock, dialogs.

Clicks are real Qt mouse events sent to the map canvas (QTest), so they pass through the canvas
and its map tool exactly as a user's do; results are awaited with the event loop running.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QPoint, Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication, QDialogButtonBox, QMessageBox, QPushButton

from . import inputs as I
from . import verify as V
from .harness import CheckFailed, ensure, wait_until

RESULT_TIMEOUT = 180  # seconds from a click to its layers (embedding included)


def action(ctx, text: str):
    found = [a for a in ctx.plugin.actions if a.text() == text]
    ensure(
        len(found) == 1,
        f"toolbar action '{text}' not found in {[a.text() for a in ctx.plugin.actions]}",
    )
    return found[0]


def click_map(ctx, px: float, py: float, button=Qt.LeftButton, mods=Qt.NoModifier) -> None:
    """A real mouse click on the canvas at window pixel (px, py) of the source raster."""
    x, y = ctx.inputs.map_xy(px, py)
    p = ctx.canvas.getCoordinateTransform().transform(x, y)
    pos = QPoint(int(round(p.x())), int(round(p.y())))
    ensure(ctx.canvas.viewport().rect().contains(pos), f"map point {x}, {y} is off the canvas")
    QTest.mouseClick(ctx.canvas.viewport(), button, mods, pos)


def expect_layers(ctx, trigger: Callable[[], Any], what: str, count: int = 1) -> list:
    """Call ``trigger`` and wait for the controller's result layers (or its error message)."""
    got: list[list] = []
    start = len(ctx.capture.lines)

    def slot(layers) -> None:
        got.append(list(layers))

    ctx.plugin.controller.layersAdded.connect(slot)
    try:
        trigger()
        errors = lambda: [m for m in ctx.capture.lines[start:] if m.startswith("[UniGeo] critical")]  # noqa: E731
        wait_until(lambda: got or errors(), RESULT_TIMEOUT, what)
        ensure(not errors(), f"{what}: {errors()}")
    finally:
        ctx.plugin.controller.layersAdded.disconnect(slot)
    wait_until(lambda: ctx.idle(), 60, "UniGeo tasks to end")
    layers = got[-1]
    ensure(len(layers) == count, f"{what}: {len(layers)} layers, expected {count}")
    for lyr in layers:
        in_group(ctx, lyr)
    return layers


def in_group(ctx, layer) -> None:
    """The result layer is in the project, under the source layer's group, in the outputs folder."""
    ensure(
        QgsProject.instance().mapLayer(layer.id()) is not None, f"'{layer.name()}' not in project"
    )
    group = QgsProject.instance().layerTreeRoot().findGroup(ctx.window_layer.name())
    ensure(group is not None, f"no layer group '{ctx.window_layer.name()}'")
    ids = {node.layerId() for node in group.findLayers()}
    ensure(layer.id() in ids, f"'{layer.name()}' is not in the group '{group.name()}'")
    path = Path(layer.source().split("|")[0])
    ensure(path.parent == ctx.default_outputs, f"{path} is not in {ctx.default_outputs}")


def open_dock(ctx, area: str, polygon_layer=None):
    """Open the search dock on the source raster with the given area."""
    text = action(ctx, "Text → map")
    if not text.isChecked():
        text.trigger()
    dock = ctx.plugin.dock
    wait_until(dock.isVisible, 5, "the search dock to show")
    dock.layer_combo.setLayer(ctx.window_layer)
    dock.area_combo.setCurrentIndex(dock.area_combo.findData(area))
    if polygon_layer is not None:
        dock.polygon_combo.setLayer(polygon_layer)
    ensure(dock.source_layer() is ctx.window_layer, "the dock's source raster is not the window")
    return dock


def gui_text_search(ctx) -> dict:
    dock = open_dock(ctx, "extent")
    body = dock.widget().widget()  # the dock's rows, in a scroll area
    wait_until(
        lambda: body.width() >= body.minimumSizeHint().width(), 5, "the dock to fit its rows"
    )
    dock.prompt.setEditText("open water")
    (layer,) = expect_layers(
        ctx, lambda: QTest.mouseClick(dock.text_button, Qt.LeftButton), "the text heatmap"
    )
    ensure("open water" in layer.name(), f"layer named '{layer.name()}'")
    got = V.heatmap(layer.source(), ctx.inputs.srs_wkt, ctx.tile_m)
    scaling = dock.band_panel.scaling_combo  # Where › Bands › Scaling: automatic for 8-bit NAIP
    ensure(scaling.isEnabled() and scaling.count() > 1, "the Scaling drop-down offers nothing")
    ensure(scaling.currentData() == "dtype", f"Scaling shows {scaling.currentData()!r}")
    abstract = layer.metadata().abstract()
    ensure("scaling: dtype" in abstract, "the heatmap's metadata does not record the scaling")
    ctx.screenshot("text_search", (layer,))
    return {**got, "layer": layer.name(), "scaling_choices": scaling.count()}


def gui_point_clicks(ctx) -> dict:
    """Click, Shift+click, Ctrl+click with the Find similar tool; a heatmap after each."""
    open_dock(ctx, "layer")
    find = action(ctx, "Find similar places")
    find.trigger()
    ensure(ctx.canvas.mapTool() is ctx.plugin.point_tool, "the point tool is not the map tool")
    dock = ctx.plugin.dock
    steps = (
        (I.POINT, Qt.NoModifier, 1, "1 point"),
        (I.EXTRA[1], Qt.ShiftModifier, 2, "2 points"),
        (I.NEGATIVE[0], Qt.ControlModifier, 3, "2 points − 1 point"),
    )
    out = {}
    for (px, py), mods, n, label in steps:
        (layer,) = expect_layers(
            ctx,
            lambda px=px, py=py, m=mods: click_map(ctx, px, py, mods=m),
            f"the heatmap of '{label}'",
        )
        ensure(
            dock.example_list.count() == n, f"{dock.example_list.count()} examples, expected {n}"
        )
        ensure(layer.name() == label, f"layer named '{layer.name()}', expected '{label}'")
        out[label] = V.heatmap(layer.source(), ctx.inputs.srs_wkt, ctx.tile_m)
        if n == 1:  # a lone example: its own tile is the best match
            cos = V.value_at(layer.source(), *ctx.inputs.map_xy(px, py))
            ensure(cos > 0.999, f"cosine {cos} at the clicked tile, expected 1")
    ctx.screenshot("point_clicks", (layer,), ("extra", "negative"))
    markers = dock.markers.markers  # a symbol and its white halo per place
    ensure(len(markers) == 6, f"{len(markers)} example-place markers on the map, expected 3 x 2")
    clear = [b for b in dock.findChildren(QPushButton) if b.text() == "Clear"]
    ensure(len(clear) == 1, "no 'Clear' button in the dock")
    QTest.mouseClick(clear[0], Qt.LeftButton)
    ensure(dock.example_list.count() == 0, "'Clear' left examples in the list")
    ensure(not dock.markers.markers, "'Clear' left example places marked on the map")
    find.trigger()  # back off
    return out


def gui_region_tool(ctx) -> dict:
    """Draw a polygon with four clicks and a right click: a '1 region' heatmap."""
    open_dock(ctx, "layer")
    region = action(ctx, "Similar to region")
    region.trigger()
    ensure(ctx.canvas.mapTool() is ctx.plugin.polygon_tool, "the region tool is not the map tool")
    x0, y0, x1, y1 = I.REGION

    def draw() -> None:
        for px, py in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            click_map(ctx, px, py)
        click_map(ctx, (x0 + x1) / 2, (y0 + y1) / 2, button=Qt.RightButton)

    (layer,) = expect_layers(ctx, draw, "the region heatmap")
    ensure(layer.name() == "1 region", f"layer named '{layer.name()}'")
    got = V.heatmap(layer.source(), ctx.inputs.srs_wkt, ctx.tile_m)
    ctx.screenshot("region_tool", (layer,), ("region",))
    region.trigger()
    return got


def gui_area_polygon_layer(ctx) -> dict:
    """Area = a polygon layer: the heatmap is scored only inside it (NaN elsewhere)."""
    dock = open_dock(ctx, "polygons", ctx.vectors["area"])
    dock.prompt.setEditText("bare soil")
    (layer,) = expect_layers(
        ctx,
        lambda: QTest.mouseClick(dock.text_button, Qt.LeftButton),
        "the heatmap inside the polygon layer",
    )
    got = V.heatmap(layer.source(), ctx.inputs.srs_wkt, ctx.tile_m)
    ensure(got["valid"] < got["cells"], f"{got['valid']} of {got['cells']} cells scored: no mask")
    ctx.screenshot("area_polygon_layer", (layer,), ("area",))
    return got


def gui_photo_search(ctx) -> dict:
    """Photo → map: pick a photo, mark its EXIF position, search with it."""
    dock = open_dock(ctx, "layer")
    action(ctx, "Photo → map").trigger()
    dock.photo_file.setFilePath(str(ctx.inputs.photo))
    label = dock.gps_label.text()
    ensure(
        label.startswith("EXIF GPS 55."), f"GPS label '{label}' after picking {ctx.inputs.photo}"
    )
    ensure(dock.mark_button.isEnabled(), "'Mark on map' stays disabled")
    before = set(QgsProject.instance().mapLayers())
    QTest.mouseClick(dock.mark_button, Qt.LeftButton)
    new = [
        QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before
    ]
    ensure(len(new) == 1 and isinstance(new[0], QgsVectorLayer), f"'Mark on map' added {new}")
    feat = next(new[0].getFeatures())
    pt = feat.geometry().asPoint()
    ensure(55.6 < pt.y() < 55.8 and 13.1 < pt.x() < 13.3, f"photo marked at {pt.x()}, {pt.y()}")
    ctx.reset_canvas()  # marking centred the map on Lund
    name = ctx.inputs.photo.name
    (layer,) = expect_layers(
        ctx, lambda: QTest.mouseClick(dock.photo_button, Qt.LeftButton), "the photo heatmap"
    )
    ensure(name in layer.name(), f"layer named '{layer.name()}'")
    got = V.heatmap(layer.source(), ctx.inputs.srs_wkt, ctx.tile_m)
    ctx.screenshot("photo_search", (layer,))
    return {**got, "marked": [pt.x(), pt.y()]}


def _with_dialog(ctx, configure: Callable[[Any], None]) -> None:
    """Trigger 'Classify land use' and drive its modal dialog with ``configure(dialog)``."""
    state: dict[str, Any] = {"deadline": time.monotonic() + 20}

    def close_message_box() -> None:
        w = QApplication.activeModalWidget()
        if isinstance(w, QMessageBox):
            state["message"] = w.text()
            w.reject()

    def poll() -> None:
        w = QApplication.activeModalWidget()
        if w is not None and w.objectName() == "UniGeoClassifyDialog":
            try:
                configure(w)
                QTimer.singleShot(1000, close_message_box)
                QTest.mouseClick(
                    w.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok), Qt.LeftButton
                )
                if w.isVisible():
                    w.reject()
            except Exception:  # noqa: BLE001 - reported after the dialog is closed
                state["error"] = traceback.format_exc()
                w.reject()
        elif time.monotonic() > state["deadline"]:
            state["error"] = "the classify dialog did not open within 20 s"
        else:
            QTimer.singleShot(100, poll)

    QTimer.singleShot(100, poll)
    action(ctx, "Classify land use").trigger()  # returns when the dialog is closed
    if "error" in state or "message" in state:
        raise CheckFailed(state.get("error") or f"the dialog refused: {state['message']}")


def _classified(ctx, configure, what: str, names, shot: str, vectors=()) -> dict:
    """Drive the dialog, wait for the class and confidence layers, check them, screenshot."""
    open_dock(ctx, "layer")
    classes, conf = expect_layers(ctx, lambda: _with_dialog(ctx, configure), what, count=2)
    ensure(
        isinstance(classes, QgsRasterLayer) and "confidence" in conf.name(),
        f"layers '{classes.name()}', '{conf.name()}'",
    )
    got = V.classes(classes.source(), conf.source(), ctx.inputs.srs_wkt, names, ctx.tile_m)
    ctx.screenshot(shot, (classes,), vectors)
    return got


def gui_classify_zero_shot(ctx) -> dict:
    """The dialog lists the model's classes; one is removed; the map has the other ones."""
    names = list(ctx.class_names)

    def configure(dlg) -> None:
        dlg.grab().save(str(ctx.screens / "classify_dialog_opened.png"))
        if not dlg.zero.isChecked():  # the bundle's figures chose few-shot: the dialog says why
            advice = dlg.advice.text() if dlg.advice.isVisible() else ""
            ensure("zero-shot" in advice, f"few-shot first, with the advice '{advice}'")
            ensure(not dlg.table.isEnabled(), "the class table is editable in few-shot mode")
            # the user switches to zero-shot (on the indicator: the middle may not toggle it)
            mid = QPoint(8, dlg.zero.height() // 2)
            QTest.mouseClick(dlg.zero, Qt.LeftButton, Qt.NoModifier, mid)
            ensure(
                dlg.zero.isChecked(), "the 'Zero-shot from class prompts' option did not switch on"
            )
        ensure(dlg.table.isEnabled(), "the class table stays disabled in zero-shot mode")
        ensure(dlg.table.rowCount() == len(names), f"{dlg.table.rowCount()} class rows")
        dlg.table.selectRow(len(names) - 1)
        remove = [b for b in dlg.findChildren(QPushButton) if b.text() == "Remove class"]
        ensure(len(remove) == 1, "no 'Remove class' button")
        QTest.mouseClick(remove[0], Qt.LeftButton)
        ensure(dlg.table.rowCount() == len(names) - 1, "'Remove class' removed no row")
        dlg.grab().save(str(ctx.screens / "classify_dialog_zero_shot.png"))

    return _classified(ctx, configure, "the zero-shot class map", names[:-1], "classify_zero_shot")


def gui_classify_few_shot(ctx) -> dict:
    """From labelled polygons (logistic regression): classes 'bare' and 'water'."""

    def configure(dlg) -> None:
        # on the indicator: the button is wider than its label, its middle may not toggle it
        QTest.mouseClick(dlg.few, Qt.LeftButton, Qt.NoModifier, QPoint(8, dlg.few.height() // 2))
        ensure(dlg.few.isChecked(), "the 'From labelled polygons' option did not switch on")
        dlg.layer_combo.setLayer(ctx.vectors["labels"])
        dlg.field_combo.setField("class")
        dlg.method.setCurrentIndex(dlg.method.findData("logreg"))
        dlg.grab().save(str(ctx.screens / "classify_dialog_few_shot.png"))

    got = _classified(
        ctx, configure, "the few-shot class map", None, "classify_few_shot", ("labels",)
    )
    ensure(sorted(got["classes"]) == ["bare", "water"], f"classes {got['classes']}")
    return got


CHECKS = [
    ("gui_text_search", gui_text_search),
    ("gui_point_clicks_shift_ctrl", gui_point_clicks),
    ("gui_region_tool", gui_region_tool),
    ("gui_area_polygon_layer", gui_area_polygon_layer),
    ("gui_photo_search", gui_photo_search),
    ("gui_classify_dialog_zero_shot", gui_classify_zero_shot),
    ("gui_classify_dialog_few_shot", gui_classify_few_shot),
]
