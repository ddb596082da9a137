"""A UniGeo algorithm run from its Processing dialog, as a user runs it from the toolbox.

The dialog is the one QGIS builds (``processing.createAlgorithmDialog``), filled with the window
raster and a text, and run with its own Run button; the result is loaded, named and styled by
Processing and the plugin's post-processor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from . import verify as V
from .harness import ensure, pause, wait_until

RUN_TIMEOUT = 180


def gui_processing_dialog(ctx) -> dict:
    """unigeo:heatmap from its dialog: Run, the log, the result layer named after the query."""
    import processing

    params = {"INPUT": ctx.window_layer, "QUERY_TEXT": "prairie pothole wetland"}
    dlg = processing.createAlgorithmDialog(
        "unigeo:heatmap", {**params, "OUTPUT": "TEMPORARY_OUTPUT"}
    )
    ensure(dlg is not None, "no dialog for unigeo:heatmap")
    state: dict[str, Any] = {}
    dlg.algorithmFinished.connect(lambda ok, res: state.update(ok=ok, res=dict(res)))
    before = set(QgsProject.instance().mapLayers())
    try:
        dlg.show()
        dlg.move(60, 60)
        dlg.resize(1000, 720)
        pause(0.5)
        dlg.grab().save(str(ctx.screens / "processing_dialog.png"))
        QTest.mouseClick(dlg.runButton(), Qt.LeftButton)
        wait_until(lambda: "ok" in state, RUN_TIMEOUT, "the dialog's run to finish")
        pause(0.3)
        dlg.grab().save(str(ctx.screens / "processing_dialog_log.png"))
    finally:
        dlg.close()
        dlg.deleteLater()
    ensure(state["ok"], f"the dialog's run failed: {state.get('res')}")
    out = Path(state["res"]["OUTPUT"])
    new = [
        QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before
    ]
    ensure(len(new) == 1, f"the dialog's run added {[lyr.name() for lyr in new]}")
    lyr = new[0]
    ensure(Path(lyr.source().split("|")[0]) == out, f"the loaded layer shows {lyr.source()}")
    name = lyr.name()
    ensure(name.startswith("similarity:") and "prairie" in name, f"loaded layer named '{name}'")
    kind = lyr.renderer().type()
    ensure(kind == "singlebandpseudocolor", f"loaded heatmap rendered as '{kind}'")
    got = V.heatmap(out, ctx.inputs.srs_wkt, ctx.tile_m)
    ctx.screenshot("processing_result", (lyr,))
    return {**got, "layer": name}


CHECKS = [("gui_processing_dialog", gui_processing_dialog)]
