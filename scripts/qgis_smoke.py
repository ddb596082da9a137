"""Run inside a real QGIS (``qgis --code``): check the installed UniGeo plugin end to end.

Used by scripts/qgis_smoke.sh. Reads UNIGEO_SMOKE_RASTER, UNIGEO_SMOKE_MODEL, UNIGEO_SMOKE_OUT
from the environment; writes ``report.txt``, ``heatmap.tif`` and ``window.png`` into the output
folder and exits QGIS with 0 on success.
"""

import os
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import active_plugins, iface, plugins

OUT = Path(os.environ["UNIGEO_SMOKE_OUT"])
BANDS = [int(b) for b in os.environ.get("UNIGEO_SMOKE_BANDS", "").split(",") if b]
report = open(OUT / "report.txt", "w")  # noqa: SIM115 (closed in finish)


def check():
    try:
        report.write(f"active plugins: {active_plugins}\n")
        plugin = plugins["unigeo"]
        algs = [
            a.id()
            for a in QgsApplication.processingRegistry().algorithms()
            if a.provider() is not None and a.provider().id() == "unigeo"
        ]
        report.write(f"algorithms: {algs}\nactions: {[a.text() for a in plugin.actions]}\n")
        layer = QgsRasterLayer(os.environ["UNIGEO_SMOKE_RASTER"], "source")
        QgsProject.instance().addMapLayer(layer)
        iface.mapCanvas().setExtent(layer.extent())
        import processing

        res = processing.run(
            "unigeo:heatmap",
            {
                "INPUT": layer,
                "BANDS": BANDS,
                "MODEL": os.environ["UNIGEO_SMOKE_MODEL"],
                "QUERY_TEXT": "water",
                "OUTPUT": str(OUT / "heatmap.tif"),
            },
        )
        report.write(f"heatmap: {res}\n")
        from unigeo.plugin import layers

        heat = layers.heatmap_layer(res["OUTPUT"], "text: water")
        QgsProject.instance().addMapLayer(heat)
        for action in plugin.actions:
            if "Text" in action.text():
                action.trigger()
        QTimer.singleShot(3000, lambda: finish(0))
    except Exception:  # noqa: BLE001 - everything goes to the report
        report.write(traceback.format_exc())
        finish(1)


def finish(code):
    iface.mainWindow().grab().save(str(OUT / "window.png"))
    report.write(f"exit {code}\n")
    report.close()
    QgsApplication.exit(code)


QTimer.singleShot(8000, check)
