"""The engine inside a process that has already loaded the system GDAL, GEOS and PROJ globally.

That is the QGIS application: the ``qgis`` binary links GDAL, GEOS and PROJ, so their symbols
sit in the global scope before any plugin runs, and wheels that bundle their own copies get the
system's symbols interposed ("Similar to region" segfaulted in shapely's GEOS, ``unigeo:tophits``
failed with "WKB output dimension must be 2 or 3"). A subprocess loads the libraries that GDAL's
Python bindings link with ``RTLD_GLOBAL`` first, as QGIS does, then runs a polygon query, a
heatmap (in memory, streamed, and from the CLI with a region file) and hits in every vector
format. Everything must complete, the outputs must match independent references computed here,
and no wheel with its own geo libraries may have been imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ("rasterio", "shapely", "pyproj", "pyogrio", "fiona", "affine")
K = 3

FIND_LIBS = """
from osgeo import gdal, ogr, osr
names = ("libgdal.so", "libgeos_c.so", "libproj.so")
with open("/proc/self/maps") as f:
    print("\\n".join(sorted({ln.split()[-1] for ln in f if any(n in ln for n in names)})))
"""

# argv: JSON {libs, store, bundle, out, region_wkt, region_wgs84_wkt, region_file, k, bundled}
SCRIPT = """
import ctypes, json, sys
args = json.loads(sys.argv[1])
for lib in args["libs"]:  # as the qgis binary: the system's geo libraries first, globally
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)

from engine.cli.main import main
from engine.search.query import region_query, tiles_in_polygon
from engine.search.similarity import similarity, write_heatmap
from engine.search.hits import top_k, write_hits
from engine.search.streaming import write_heatmap_chunked
from engine.store import open_store

out = args["out"]
store = open_store(args["store"])
rows, cols = tiles_in_polygon(store, args["region_wkt"])
q = region_query(store, args["region_wkt"])
q84 = region_query(store, args["region_wgs84_wkt"], crs="EPSG:4326")
scores = similarity(store, q.vector())
write_heatmap(out + "/heat.tif", store, scores, provenance={"query": q.description()})
write_heatmap_chunked(out + "/heat_chunked.tif", store, q)
hits = top_k(store, scores, k=args["k"], min_distance_tiles=0)
for name in ("hits.gpkg", "hits.geojson", "hits.shp"):
    write_hits(out + "/" + name, hits, store.crs, provenance={"query": "region"})
write_hits(out + "/tiles.gpkg", hits, store.crs, as_polygons=True)
rc = main(["heatmap", args["store"], "--model", args["bundle"], "--region", args["region_file"],
           "--out", out + "/cli_heat.tif"])
print(json.dumps({
    "rc": rc,
    "rows": rows.tolist(), "cols": cols.tolist(),
    "vector": q.vector().tolist(), "vector84": q84.vector().tolist(),
    "hits": [[h.row, h.col] for h in hits],
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(args["bundled"])),
}))
"""


def _system_geo_libs() -> list[str]:
    if not Path("/proc/self/maps").is_file():
        pytest.skip("needs Linux /proc to find the libraries GDAL's bindings link")
    out = subprocess.run(
        [sys.executable, "-c", FIND_LIBS], capture_output=True, text=True, timeout=60
    )
    libs = out.stdout.split()
    if out.returncode != 0 or len(libs) != 3:
        pytest.skip(f"GDAL's bindings or their GDAL/GEOS/PROJ not found: {out.stderr[-300:]}")
    return libs


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_engine_runs_with_the_system_geo_libraries_loaded_globally(
    good_store, analytic_bundle, tmp_path
):
    from engine.store import open_store

    store = open_store(good_store)
    grid = store.grid
    x0, y0, x1, y1 = grid.bounds
    # the centres of the 2 x 2 tiles at rows 1-2, cols 1-2 (cells are 160 m)
    s = grid.cell_size
    box = shapely.box(x0 + 1.2 * s, y1 - 2.8 * s, x0 + 2.8 * s, y1 - 1.2 * s)
    to84 = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    box84 = shapely.transform(
        box.segmentize(s / 8), lambda c: np.column_stack(to84.transform(*c.T))
    )
    region_file = tmp_path / "region.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(box84)}
    region_file.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    out = tmp_path / "out"
    out.mkdir()
    args = {
        "libs": _system_geo_libs(),
        "store": str(good_store),
        "bundle": str(analytic_bundle),
        "out": str(out),
        "region_wkt": box.wkt,
        "region_wgs84_wkt": box84.wkt,
        "region_file": str(region_file),
        "k": K,
        "bundled": BUNDLED,
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode} (-11 = segfault): {proc.stderr[-3000:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0 and got["loaded"] == [], got["loaded"]

    # the polygon query: the valid tiles whose centre lies inside, by shapely here
    xs, ys = grid.centers()
    inside = shapely.contains_xy(box, xs, ys) & np.asarray(store.valid, bool)
    assert inside.sum() == 4
    assert (got["rows"], got["cols"]) == tuple(a.tolist() for a in np.nonzero(inside))
    emb = np.asarray(store.embeddings, np.float64)
    want = _unit(emb[inside].mean(axis=0))
    np.testing.assert_allclose(got["vector"], want, atol=1e-6)
    np.testing.assert_allclose(got["vector84"], want, atol=1e-6)  # same tiles from WGS84

    # heatmaps: band 1 is the cosine of every valid tile with the region's mean
    cos = np.where(np.asarray(store.valid, bool), emb @ want, np.nan)
    for name in ("heat.tif", "heat_chunked.tif", "cli_heat.tif"):
        with rasterio.open(out / name) as r:
            assert r.count == 2 and r.shape == grid.shape and r.crs.to_epsg() == 32633
            assert r.transform.to_gdal() == pytest.approx(grid.geotransform)
            np.testing.assert_allclose(r.read(1), cos, atol=2e-3, equal_nan=True)  # float16 store
            assert np.nanmax(r.read(2)) == 100.0

    # hits: the K best tiles, at their centres (GeoJSON in WGS84 longitude, latitude)
    order = np.argsort(-np.nan_to_num(cos, nan=-9).ravel(), kind="stable")[:K]
    assert [tuple(h) for h in got["hits"]] == [tuple(divmod(int(i), grid.cols)) for i in order]
    centres = np.array([grid.tile_center(r, c) for r, c in got["hits"]])
    for name in ("hits.gpkg", "hits.geojson", "hits.shp"):
        _, _, geoms, fields = pyogrio.raw.read(out / name)
        xy = shapely.get_coordinates(shapely.from_wkb(geoms))
        if name.endswith(".geojson"):
            want_xy = np.column_stack(to84.transform(centres[:, 0], centres[:, 1]))
            np.testing.assert_allclose(xy, want_xy, atol=1e-6)
        else:
            np.testing.assert_allclose(xy, centres, atol=1e-6)
        assert list(fields[0]) == list(range(1, K + 1))  # rank
    tiles = shapely.from_wkb(pyogrio.raw.read(out / "tiles.gpkg")[2])
    assert [t.bounds for t in tiles] == [grid.tile_bounds(r, c) for r, c in got["hits"]]
