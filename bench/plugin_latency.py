"""Plugin responsiveness: click → heatmap layer on a cached store, and the UI event loop while a task runs.

Headless QGIS (``QT_QPA_PLATFORM=offscreen``) with the real plugin controller and the real QGIS task
manager: nothing is mocked except the QGIS main window (pytest-qgis's interface stand-in).

1. **Click to layer.** For each store size, a raster layer covering that many tiles is created (a
   sparse GeoTIFF: its pixels are never read here) and its store is put into the plugin's store
   cache under the exact key the plugin computes, filled with unit embeddings. A "click" is
   ``Controller.run_query`` with a point example (what the point tool emits); the clock stops when
   ``layersAdded`` fires, i.e. the heatmap GeoTIFF is written and its styled layer is in the
   project. Medians over repeats after a warm-up.
2. **UI responsiveness.** A real raster is embedded by an ``EmbedTask`` in the task manager while a
   10 ms ``QTimer`` ticks on the main thread; the largest gap between ticks is the longest the UI
   was frozen.

Usage: ``python bench/plugin_latency.py [--tiles 10000 100000 1000000] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.common import md_table  # noqa: E402
from scripts.plugin_loader import load_plugin_package  # noqa: E402

NAIP = "naip_north_dakota/m_4709963_se_14_1_20190904.tif"
CRS = "EPSG:32614"


def make_layer_raster(path: Path, tiles: int, tile_m: float) -> None:
    """A sparse 4-band GeoTIFF (reads as zeros) whose extent covers ``tiles`` model tiles."""
    import rasterio
    from affine import Affine

    side_tiles = int(round(tiles**0.5))
    px = tile_m / 4  # 4 raster pixels per tile side keeps the file small
    n = side_tiles * 4
    profile = dict(driver="GTiff", width=n, height=n, count=4, dtype="uint8", crs=CRS)
    profile.update(tiled=True, blockxsize=256, blockysize=256, sparse_ok=True)
    profile["transform"] = Affine(px, 0, 400_000.0, 0, -px, 5_300_000.0)
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(("red", "green", "blue", "nir"), start=1):
            dst.set_band_description(i, name)


def fill_cached_store(ctl, layer, model) -> tuple[int, str]:
    """Put a store of unit embeddings into the plugin cache under the key the plugin computes."""
    from unigeo.engine.pipeline import cached_store, tile_grid
    from unigeo.engine.store.npy import EmbeddingStore
    from unigeo.plugin.qgis_reader import reader_for_layer

    s = ctl.settings()
    reader = reader_for_layer(layer, bands=ctl.bands_for(layer, model).bands)  # as with_store
    grid = tile_grid(model, reader, stride_px=s.stride_arg())
    entry = cached_store(model, reader, grid, s.cache_path(), s.cache_bytes())
    key = entry.key
    store = EmbeddingStore.create(
        entry.path, grid, model.dim, model.model_hash, reader.fingerprint()
    )
    rng = np.random.default_rng(0)
    for bid, (r0, c0, nr, nc) in enumerate(store.blocks()):
        emb = rng.standard_normal((nr, nc, model.dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
        store.write_block(r0, c0, emb, np.ones((nr, nc), bool))
        store.mark_done(bid)
    store.finalize()
    return grid.n_tiles, key


def click_to_layer(app, ctl, layer, repeats: int) -> list[float]:
    """Seconds from run_query (a point click) to layersAdded, ``repeats`` times after a warm-up."""
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice

    ext = layer.extent()
    x, y = ext.center().x(), ext.center().y()
    added: list[float] = []
    ctl.layersAdded.connect(lambda _layers: added.append(time.perf_counter()))
    times = []
    for i in range(repeats + 1):
        n = len(added)
        spec = QuerySpec(points=((x + i, y, CRS),))
        t0 = time.perf_counter()
        if not ctl.run_query(spec, layer, AreaChoice()):
            raise RuntimeError("the query did not start")
        while len(added) == n:
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("no heatmap layer after 120 s")
        if i:  # the first one is the warm-up (model sessions, GDAL drivers)
            times.append(added[-1] - t0)
    return times


def ui_stall_during_embedding(app, ctl, layer) -> dict:
    """Largest gap between 10 ms main-thread timer ticks while a real EmbedTask runs."""
    from qgis.PyQt.QtCore import QTimer
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice
    from unigeo.plugin.tasks import EngineTask

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    t0 = time.perf_counter()
    ctl.run_query(QuerySpec(texts=("cropland",)), layer, AreaChoice())
    while EngineTask.live or len(ticks) < 2:
        app.processEvents()
        time.sleep(0.001)
    wall = time.perf_counter() - t0
    timer.stop()
    gaps = np.diff(ticks) * 1000
    return {
        "task_wall_s": round(wall, 2),
        "ticks": len(ticks),
        "max_gap_ms": round(float(gaps.max()), 1),
        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
        "median_gap_ms": round(float(np.median(gaps)), 1),
    }


class _Iface:
    """The two parts of QgisInterface the controller uses: the message bar and the map canvas."""

    def __init__(self, window, canvas_cls, bar_cls) -> None:
        self.window = window
        self.canvas = canvas_cls(window)
        self.bar = bar_cls(window)

    def messageBar(self):  # noqa: N802 (QGIS API)
        return self.bar

    def mapCanvas(self):  # noqa: N802 (QGIS API)
        return self.canvas


def start(tmp: Path, bundle: Path):
    from qgis.core import QgsApplication
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtWidgets import QMainWindow

    app = QgsApplication([], True)
    app.initQgis()
    load_plugin_package()
    from unigeo.plugin import model_cache
    from unigeo.plugin.controller import Controller
    from unigeo.plugin.settings import Settings

    s = Settings(
        bundle=str(bundle),
        provider="cpu",
        threads=2,
        cache_folder=str(tmp / "cache"),
        output_folder=str(tmp / "out"),
    )
    Settings.load = classmethod(lambda cls: s)
    model_cache.release_all()
    return app, Controller(_Iface(QMainWindow(), QgsMapCanvas, QgsMessageBar))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", type=Path, default=ROOT / "resources" / "models" / "default")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from qgis.core import QgsProject, QgsRasterLayer

    with tempfile.TemporaryDirectory(prefix="unigeo-bench-plugin-") as tmp:
        tmp = Path(tmp)
        app, ctl = start(tmp, args.model)
        model = ctl.model()
        from unigeo.engine.model.contract import (
            Modality,  # importable once start() loaded the plugin
        )

        pre = model.spec(Modality.AERIAL).preprocess
        tile_m = pre.size * pre.gsd_m
        rows = []
        for n in args.tiles:
            tif = tmp / f"area_{n}.tif"
            make_layer_raster(tif, n, tile_m)
            layer = QgsRasterLayer(str(tif), f"area {n}")
            QgsProject.instance().addMapLayer(layer)
            tiles, _ = fill_cached_store(ctl, layer, model)
            t = click_to_layer(app, ctl, layer, args.repeats)
            rows.append(
                {
                    "tiles": tiles,
                    "click_to_layer_ms": round(1000 * float(np.median(t)), 1),
                    "min_ms": round(1000 * min(t), 1),
                    "max_ms": round(1000 * max(t), 1),
                    "repeats": len(t),
                }
            )
            print(md_table(rows[-1:]), flush=True)
        stall = None
        naip = args.shared / NAIP
        if naip.is_file():
            layer = QgsRasterLayer(str(naip), "NAIP")
            QgsProject.instance().addMapLayer(layer)
            stall = ui_stall_during_embedding(app, ctl, layer)
            print(md_table([stall]), flush=True)
        ctl.cancel_all()
        QgsProject.instance().clear()
    result = {"click_to_layer": rows, "ui_stall": stall, "model": str(args.model.name)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
