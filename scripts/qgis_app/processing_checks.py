"""Every UniGeo Processing algorithm with every kind of query, run as the toolbox runs them.

Algorithms run in a QgsProcessingAlgRunnerTask on a worker thread (what the Processing dialog
does for thread-safe algorithms); one heatmap runs through ``processing.runAndLoadResults`` on
the main thread (what scripts do), which also loads and styles its output layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)

from . import inputs as I
from . import verify as V
from .harness import CheckFailed, ensure, wait_until

ALG_TIMEOUT = 240  # seconds per algorithm run


class Feedback(QgsProcessingFeedback):
    """Keeps every message of a run: on failure they say why."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API)
        self.messages.append(f"error: {error}")

    def pushWarning(self, warning):  # noqa: N802 (QGIS API)
        self.messages.append(f"warning: {warning}")

    def pushInfo(self, info):  # noqa: N802 (QGIS API)
        self.messages.append(f"info: {info}")

    def failure(self) -> str:
        errors = [m for m in self.messages if m.startswith("error")] or self.messages
        return "\n".join(errors)[-3000:]


def run_task(alg_id: str, params: dict) -> tuple[dict, Feedback]:
    """Run ``alg_id`` in a background QgsProcessingAlgRunnerTask; its results and feedback."""
    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    ensure(alg is not None, f"no algorithm {alg_id} in the Processing registry")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = Feedback()
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    state: dict[str, Any] = {}
    task.executed.connect(lambda ok, res: state.update(ok=ok, res=res))
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: "ok" in state, ALG_TIMEOUT, f"{alg_id} to finish")
    if not state["ok"]:
        raise CheckFailed(f"{alg_id} failed:\n{feedback.failure()}")
    return dict(state["res"]), feedback


def _heat(ctx, name: str, **params) -> dict:
    """Run unigeo:heatmap on the window raster and check its output."""
    out = ctx.outputs / f"{name}.tif"
    params = {"INPUT": str(ctx.inputs.raster), "OUTPUT": str(out), **params}
    res, fb = run_task("unigeo:heatmap", params)
    ensure(Path(res["OUTPUT"]) == out, f"OUTPUT {res['OUTPUT']}, expected {out}")
    return V.heatmap(out, ctx.inputs.srs_wkt, ctx.tile_m)


def alg_embedraster(ctx) -> dict:
    store, tiff = ctx.outputs / "store", ctx.outputs / "embeddings.tif"
    params = {
        "INPUT": str(ctx.inputs.raster),
        "BANDS": [1, 2, 3, 4],
        "OUTPUT_STORE": str(store),
        "OUTPUT_TIFF": str(tiff),
    }
    res, fb = run_task("unigeo:embedraster", params)
    ensure((store / "store.json").is_file(), f"no store.json in {store}")
    out = V.embeddings_tiff(tiff, ctx.inputs.srs_wkt, ctx.dim, ctx.tile_m)
    return {**out, "log": [m for m in fb.messages if "tiles" in m]}


def _loaded(path: Path) -> list:
    return [
        lyr
        for lyr in QgsProject.instance().mapLayers().values()
        if Path(lyr.source().split("|")[0]) == path
    ]


def _run_and_load(params: dict) -> tuple[Path, Any]:
    """``processing.runAndLoadResults`` of unigeo:heatmap; its output and the layer loaded."""
    import processing

    fb, context = Feedback(), QgsProcessingContext()
    context.setProject(QgsProject.instance())
    res = processing.runAndLoadResults("unigeo:heatmap", params, feedback=fb, context=context)
    out = Path(res["OUTPUT"])
    loaded = _loaded(out)
    ensure(len(loaded) == 1, f"{len(loaded)} project layers show {out}, expected 1")
    kind = loaded[0].renderer().type()
    ensure(kind == "singlebandpseudocolor", f"loaded heatmap rendered as '{kind}'")
    return out, loaded[0]


def prefer_filename() -> bool:
    """QGIS's Processing option 'Prefer output filename for layer names' (default on)."""
    from qgis.core import QgsSettings

    key = "Processing/Configuration/PREFER_FILENAME_AS_LAYER_NAME"
    return QgsSettings().value(key, True, type=bool)


def alg_heatmap_text(ctx) -> dict:
    """Main thread, as a script does; the output is loaded into the project and styled.

    A temporary output (the toolbox's default) is named after the query; an output file the
    user named is named as QGIS's option 'Prefer output filename for layer names' says (on by
    default: the file's name, as for every other algorithm).
    """
    params = {"INPUT": str(ctx.inputs.raster), "QUERY_TEXT": "open water"}
    out, lyr = _run_and_load({**params, "OUTPUT": "TEMPORARY_OUTPUT"})
    name = lyr.name()
    ensure(name.startswith("similarity:") and "open water" in name, f"loaded layer named '{name}'")
    got = V.heatmap(out, ctx.inputs.srs_wkt, ctx.tile_m)
    ensure("open water" in (got["query"] or ""), f"UNIGEO_QUERY is {got['query']!r}")
    named = ctx.outputs / "heatmap_text.tif"
    out2, lyr2 = _run_and_load({**params, "OUTPUT": str(named)})
    ensure(out2 == named, f"OUTPUT {out2}, expected {named}")
    # QGIS's rule (QgsProcessingContext.LayerDetails.setOutputLayerName): the file name when
    # that option is on and the layer is not temporary (a file under the system's temp folder
    # counts as temporary, e.g. a checkout in /tmp), else the name the algorithm gave
    use_file = prefer_filename() and not lyr2.isTemporary()
    want = named.stem if use_file else lyr.name()
    ensure(lyr2.name() == want, f"layer of {named.name} named '{lyr2.name()}', expected '{want}'")
    V.heatmap(named, ctx.inputs.srs_wkt, ctx.tile_m)
    return {**got, "layer": lyr.name(), "named_output_layer": lyr2.name()}


def alg_heatmap_sensor(ctx) -> dict:
    """SENSOR=display8 (8-bit display products: value / 255) on the 8-bit NAIP window: the same
    cosines as the automatic scaling (uint8 / 255), through a store of its own in the cache."""
    auto, rule = ctx.outputs / "heatmap_auto.tif", ctx.outputs / "heatmap_display8.tif"
    params = {"INPUT": str(ctx.inputs.raster), "QUERY_TEXT": "open water"}
    run_task("unigeo:heatmap", {**params, "OUTPUT": str(auto)})
    run_task("unigeo:heatmap", {**params, "SENSOR": "display8", "OUTPUT": str(rule)})
    a, b = V.band(auto, 1), V.band(rule, 1)
    ensure(np.array_equal(np.isfinite(a), np.isfinite(b)), "valid cells differ with SENSOR")
    gap = float(np.nanmax(np.abs(a - b)))
    ensure(gap < 1e-5, f"SENSOR=display8 moved the 8-bit cosines by {gap}")
    got = V.heatmap(rule, ctx.inputs.srs_wkt, ctx.tile_m)
    return {**got, "max_abs_diff_vs_auto": gap}


def alg_heatmap_point(ctx) -> dict:
    """QUERY_POINT given in EPSG:4326: the tile under it scores cosine 1, percentile 100."""
    lon, lat = I.lonlat(ctx.inputs, *I.POINT)
    got = _heat(ctx, "heatmap_point", QUERY_POINT=f"{lon},{lat} [EPSG:4326]")
    x, y = ctx.inputs.map_xy(*I.POINT)
    out = ctx.outputs / "heatmap_point.tif"
    cos, pct = V.value_at(out, x, y, 1), V.value_at(out, x, y, 2)
    ensure(cos > 0.999 and pct > 99.9, f"at the query point cosine {cos}, percentile {pct}")
    return {**got, "at_point": [cos, pct]}


def alg_heatmap_points(ctx) -> dict:
    """QUERY_POINT + EXTRA_POINTS (EPSG:4326 layer) − NEGATIVE_POINTS − NEGATIVE_TEXT."""
    x, y = ctx.inputs.map_xy(*I.POINT)
    got = _heat(
        ctx,
        "heatmap_points",
        QUERY_POINT=f"{x},{y} [{ctx.authid}]",
        EXTRA_POINTS=ctx.inputs.layer("extra"),
        NEGATIVE_POINTS=ctx.inputs.layer("negative"),
        NEGATIVE_TEXT="gravel road",
    )
    q = got["query"] or ""
    ensure("gravel road" in q and "point" in q, f"UNIGEO_QUERY is {q!r}")
    return got


def alg_heatmap_polygon(ctx) -> dict:
    return _heat(ctx, "heatmap_polygon", QUERY_POLYGON=ctx.inputs.layer("region"))


def alg_heatmap_negative_polygon(ctx) -> dict:
    return _heat(
        ctx,
        "heatmap_negative_polygon",
        QUERY_TEXT="cropland",
        NEGATIVE_POLYGON=ctx.inputs.layer("avoid"),
    )


def alg_heatmap_photo(ctx) -> dict:
    return _heat(ctx, "heatmap_photo", QUERY_PHOTO=str(ctx.inputs.photo))


def alg_heatmap_gps(ctx) -> dict:
    """QUERY_GPS on the STORE written by embedraster (the STORE parameter)."""
    lon, lat = I.lonlat(ctx.inputs, 256, 256)
    out = ctx.outputs / "heatmap_gps.tif"
    store = ctx.outputs / "store"
    ensure(store.is_dir(), f"{store} is missing (alg_embedraster writes it)")
    run_task(
        "unigeo:heatmap", {"STORE": str(store), "QUERY_GPS": f"{lat},{lon}", "OUTPUT": str(out)}
    )
    return V.heatmap(out, ctx.inputs.srs_wkt, ctx.tile_m)


def _hits(ctx, suffix: str, polygons: bool, source: dict, crs_wkt: str | None = None) -> dict:
    out = ctx.outputs / f"tophits{suffix}"
    params = {
        **source,
        "QUERY_TEXT": "water",
        "K": 5,
        "MIN_DISTANCE": 1,
        "AS_POLYGONS": polygons,
        "OUTPUT": str(out),
    }
    run_task("unigeo:tophits", params)
    extent = ctx.inputs.extent()
    if crs_wkt is not None:  # WGS84 GeoJSON: the window's lon/lat box, with a margin
        (x0, y0), (x1, y1) = I.lonlat(ctx.inputs, 0, 512), I.lonlat(ctx.inputs, 512, 0)
        extent = (x0 - 0.01, y0 - 0.01, x1 + 0.01, y1 + 0.01)
    grow = ctx.tile_m  # a tile centre lies at most half a tile outside the window
    if crs_wkt is None:
        extent = (extent[0] - grow, extent[1] - grow, extent[2] + grow, extent[3] + grow)
    return V.hits(out, 5, crs_wkt or ctx.inputs.srs_wkt, polygons, extent)


def alg_tophits_gpkg(ctx) -> dict:
    return _hits(ctx, ".gpkg", False, {"INPUT": str(ctx.inputs.raster)})


def alg_tophits_geojson(ctx) -> dict:
    return _hits(ctx, ".geojson", False, {"INPUT": str(ctx.inputs.raster)}, V.wgs84_wkt())


def alg_tophits_shp(ctx) -> dict:
    return _hits(ctx, ".shp", True, {"STORE": str(ctx.outputs / "store")})


def alg_classify_zero_shot(ctx) -> dict:
    cls, conf = ctx.outputs / "zero_shot.tif", ctx.outputs / "zero_shot_confidence.tif"
    params = {
        "INPUT": str(ctx.inputs.raster),
        "OUTPUT_CLASSES": str(cls),
        "OUTPUT_CONFIDENCE": str(conf),
    }
    run_task("unigeo:classify", params)
    return V.classes(cls, conf, ctx.inputs.srs_wkt, ctx.class_names, ctx.tile_m)


def alg_classify_few_shot(ctx) -> dict:
    """Few-shot from labelled polygons (logreg), MIN_CONFIDENCE and the validation report."""
    cls, conf = ctx.outputs / "few_shot.tif", ctx.outputs / "few_shot_confidence.tif"
    report = ctx.outputs / "few_shot_report.html"
    params = {
        "INPUT": str(ctx.inputs.raster),
        "EXAMPLES": ctx.inputs.layer("labels"),
        "CLASS_FIELD": "class",
        "METHOD": 1,
        "MIN_CONFIDENCE": 0.4,
        "OUTPUT_CLASSES": str(cls),
        "OUTPUT_CONFIDENCE": str(conf),
        "REPORT": str(report),
    }
    run_task("unigeo:classify", params)
    got = V.classes(cls, conf, ctx.inputs.srs_wkt, None, ctx.tile_m)
    ensure(set(got["classes"]) - {"uncertain"} == {"bare", "water"}, f"classes {got['classes']}")
    for suffix in (".json", ".html", ".md"):
        p = report.with_suffix(suffix)
        ensure(p.is_file() and p.stat().st_size > 0, f"validation report {p} missing or empty")
    rep = json.loads(report.with_suffix(".json").read_text())
    ensure(rep["classes"] == ["bare", "water"], f"report classes {rep['classes']}")
    ensure(rep["folds_used"] >= 2, f"report ran {rep['folds_used']} folds")
    acc = rep["accuracy"]
    ensure(acc is not None and 0 <= acc <= 1, f"report accuracy {acc}")
    ensure(len(rep["confusion"]) == 2, f"confusion matrix {rep['confusion']}")
    return {**got, "accuracy": acc, "folds": rep["folds_used"], "tiles": rep["tiles"]}


def _embedded(ctx, name: str, layer: str) -> dict:
    out = ctx.outputs / f"{name}.gpkg"
    run_task(
        "unigeo:embedfeatures",
        {"INPUT": ctx.inputs.layer(layer), "RASTER": str(ctx.inputs.raster), "OUTPUT": str(out)},
    )
    rows = V.features(out, ("unigeo_n_tiles", "unigeo_embedding"))
    ensure(rows, f"{out} has no feature")
    for i, r in enumerate(rows):
        ensure((r["unigeo_n_tiles"] or 0) >= 1, f"{out} feature {i}: {r['unigeo_n_tiles']} tiles")
        V.unit_json(r["unigeo_embedding"], ctx.dim, f"{out} feature {i}")
    return {"features": len(rows), "tiles": [r["unigeo_n_tiles"] for r in rows]}


def alg_embedfeatures_points(ctx) -> dict:
    return _embedded(ctx, "features_points", "extra")


def alg_embedfeatures_polygons(ctx) -> dict:
    return _embedded(ctx, "features_polygons", "labels")


def alg_encodetable_texts(ctx) -> dict:
    out = ctx.outputs / "texts.gpkg"
    run_task(
        "unigeo:encodetable",
        {"INPUT": ctx.inputs.layer("texts"), "FIELD": "description", "OUTPUT": str(out)},
    )
    rows = V.features(out, ("description", "unigeo_fid", "unigeo_status", "unigeo_embedding"))
    ensure(len(rows) == len(I.TEXTS), f"{len(rows)} rows, expected {len(I.TEXTS)}")
    for text, r in zip(I.TEXTS, rows, strict=True):
        ensure(r["description"] == text, f"row order: {r['description']!r} where {text!r}")
        if text is None:
            ensure(
                r["unigeo_status"] != "ok" and r["unigeo_embedding"] is None,
                f"NULL text got status {r['unigeo_status']!r}",
            )
        else:
            ensure(r["unigeo_status"] == "ok", f"{text!r}: status {r['unigeo_status']!r}")
            V.unit_json(r["unigeo_embedding"], ctx.dim, f"{out} text {text!r}")
    return {"rows": len(rows), "status": [r["unigeo_status"] for r in rows]}


def alg_encodetable_photos(ctx) -> dict:
    out = ctx.outputs / "photos.gpkg"
    run_task("unigeo:encodetable", {"PHOTO_FOLDER": str(ctx.inputs.photos), "OUTPUT": str(out)})
    rows = V.features(out, ("source", "latitude", "longitude", "unigeo_status", "unigeo_embedding"))
    names = sorted(p.name for p in ctx.inputs.photos.glob("*.jpg"))
    ensure([r["source"] for r in rows] == names, f"sources {[r['source'] for r in rows]}")
    for r in rows:
        ensure(r["unigeo_status"] == "ok", f"{r['source']}: status {r['unigeo_status']!r}")
        ensure(
            55.6 < (r["latitude"] or 0) < 55.8 and 13.1 < (r["longitude"] or 0) < 13.3,
            f"{r['source']}: EXIF position {r['latitude']}, {r['longitude']} is not Lund",
        )
        ensure(r["_xy"] is not None, f"{r['source']}: no point geometry")
        V.unit_json(r["unigeo_embedding"], ctx.dim, f"{out} {r['source']}")
    return {"rows": len(rows)}


def _extent_param(ctx) -> str:
    x0, y0, x1, y1 = ctx.inputs.extent()
    return f"{x0},{x1},{y0},{y1} [{ctx.authid}]"


def alg_gpsfield_embedding(ctx) -> dict:
    out = ctx.outputs / "gps_field.tif"
    run_task(
        "unigeo:gpsfield", {"EXTENT": _extent_param(ctx), "RESOLUTION": 320.0, "OUTPUT": str(out)}
    )
    return V.embeddings_tiff(out, ctx.inputs.srs_wkt, ctx.dim, 320.0)


def alg_gpsfield_text(ctx) -> dict:
    out = ctx.outputs / "gps_text.tif"
    run_task(
        "unigeo:gpsfield",
        {
            "EXTENT": _extent_param(ctx),
            "RESOLUTION": 160.0,
            "QUERY_TEXT": "lake",
            "OUTPUT": str(out),
        },
    )
    return V.heatmap(out, ctx.inputs.srs_wkt, 160.0)


CHECKS = [
    ("alg_embedraster", alg_embedraster),
    ("alg_heatmap_text", alg_heatmap_text),
    ("alg_heatmap_sensor_display8", alg_heatmap_sensor),
    ("alg_heatmap_point", alg_heatmap_point),
    ("alg_heatmap_points_extra_negative", alg_heatmap_points),
    ("alg_heatmap_polygon", alg_heatmap_polygon),
    ("alg_heatmap_negative_polygon", alg_heatmap_negative_polygon),
    ("alg_heatmap_photo", alg_heatmap_photo),
    ("alg_heatmap_gps_store", alg_heatmap_gps),
    ("alg_tophits_gpkg", alg_tophits_gpkg),
    ("alg_tophits_geojson", alg_tophits_geojson),
    ("alg_tophits_shp_polygons_store", alg_tophits_shp),
    ("alg_classify_zero_shot", alg_classify_zero_shot),
    ("alg_classify_few_shot_report", alg_classify_few_shot),
    ("alg_embedfeatures_points", alg_embedfeatures_points),
    ("alg_embedfeatures_polygons", alg_embedfeatures_polygons),
    ("alg_encodetable_texts", alg_encodetable_texts),
    ("alg_encodetable_photos", alg_encodetable_photos),
    ("alg_gpsfield_embedding", alg_gpsfield_embedding),
    ("alg_gpsfield_text", alg_gpsfield_text),
]
