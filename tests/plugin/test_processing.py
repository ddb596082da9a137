"""Every unigeo:* algorithm through processing.run on generated and real rasters (pytest-qgis)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis

IDS = ("embedraster", "heatmap", "tophits", "classify", "embedfeatures", "encodetable", "gpsfield")
NAIP = "naip_north_dakota/m_4709963_se_14_1_20200831.tif"


@pytest.fixture(scope="module")
def utm_store(run, utm_tif, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "utm.store"
    run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(out))
    return out


def _recording_feedback():
    """A feedback that records its warnings in ``.warnings``."""
    from qgis.core import QgsProcessingFeedback

    class Recording(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings: list[str] = []

        def pushWarning(self, text):  # noqa: N802 (QGIS API)
            self.warnings.append(text)

    return Recording()


def _read(path, band: int = 1) -> tuple[np.ndarray, str]:
    with rasterio.open(path) as src:
        return src.read(band), src.crs.to_string()


def _quadrant_means(scores: np.ndarray) -> dict[str, float]:
    h, w = scores.shape[0] // 2, scores.shape[1] // 2
    return {
        "water": float(np.nanmean(scores[:h, :w])),
        "vegetation": float(np.nanmean(scores[:h, w:])),
        "bare": float(np.nanmean(scores[h:, :w])),
        "built": float(np.nanmean(scores[h:, w:])),
    }


def test_provider_offers_every_algorithm(unigeo_provider):
    from qgis.core import QgsApplication

    for name in IDS:
        alg = QgsApplication.processingRegistry().algorithmById(f"unigeo:{name}")
        assert alg is not None, name
        assert alg.shortHelpString() and alg.displayName() and alg.group()
        assert alg.createInstance().name() == name
        assert alg.parameterDefinition("MODEL") is not None


def test_embedraster_store_and_tiff(run, utm_store, utm_tif, tmp_path):
    from unigeo.engine.store.npy import EmbeddingStore

    store = EmbeddingStore.open(utm_store)
    assert store.grid.shape == (20, 20) and store.crs == "EPSG:32633" and store.dim == 8
    assert bool(np.all(store.valid))
    tif = tmp_path / "emb.tif"
    res = run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(utm_store), OUTPUT_TIFF=str(tif))
    assert res["OUTPUT_STORE"] == str(utm_store) and Path(res["OUTPUT_TIFF"]) == tif
    with rasterio.open(tif) as src:
        assert src.count == 8 and src.crs.to_epsg() == 32633 and src.shape == (20, 20)
        assert src.transform.a == 160.0 and src.bounds.left == 500_000.0
        np.testing.assert_allclose(src.read(3), store.embeddings[:, :, 2].astype(np.float32))


def test_embedraster_cancel_leaves_no_output_then_resumes(run, utm_tif, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback
    from unigeo.engine.store.base import partial_path
    from unigeo.engine.store.npy import EmbeddingStore

    out, tif = tmp_path / "c.store", tmp_path / "c.tif"
    fb = QgsProcessingFeedback()
    fb.progressChanged.connect(lambda p: fb.cancel() if p > 0 else None)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run("embedraster", fb, INPUT=str(utm_tif), OUTPUT_STORE=str(out), OUTPUT_TIFF=str(tif))
    assert not out.exists() and not tif.exists() and partial_path(out).is_dir()
    assert not list(tmp_path.glob(".c.tif*"))
    run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(out))
    store = EmbeddingStore.open(out)
    assert store.meta["tiles_this_run"] < 400  # resumed: the first block was not redone
    assert bool(np.all(store.valid)) and not partial_path(out).exists()


def test_heatmap_text_blue_scores_water_highest(run, utm_store, tmp_path):
    out = tmp_path / "blue.tif"
    res = run("heatmap", STORE=str(utm_store), QUERY_TEXT="blue", OUTPUT=str(out))
    cos, crs = _read(res["OUTPUT"])
    pct, _ = _read(out, 2)
    assert crs == "EPSG:32633" and cos.shape == (20, 20)
    means = _quadrant_means(cos)
    assert means["water"] > 0.7  # the bundle's templates add filler words: not 1.0
    assert all(
        v < means["water"] - 0.2 for k, v in means.items() if k != "water"
    ), means  # built is blue-ish too
    assert np.nanmax(pct) == pytest.approx(100.0) and np.nanmin(pct) == pytest.approx(0.0)
    assert np.unravel_index(np.nanargmax(cos), cos.shape) < (10, 10)


def test_heatmap_point_in_epsg4326_hits_its_own_tile(run, utm_store, tmp_path):
    from pyproj import Transformer

    x, y = 500_000.0 + 15.5 * 160, 5_003_200.0 - 4.5 * 160  # centre of tile (row 4, col 15)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x, y)
    out = tmp_path / "pt.tif"
    run("heatmap", STORE=str(utm_store), QUERY_POINT=f"{lon},{lat} [EPSG:4326]", OUTPUT=str(out))
    cos, _ = _read(out)
    assert cos[4, 15] == pytest.approx(1.0, abs=1e-3)
    assert _quadrant_means(cos)["vegetation"] > 0.95 > _quadrant_means(cos)["bare"]


def test_heatmap_on_demand_epsg4326_raster_with_polygon_and_negative(
    run, geo_tif, tmp_path, unigeo_settings
):
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    poly = QgsVectorLayer("Polygon?crs=EPSG:4326", "region", "memory")
    f = QgsFeature()
    f.setGeometry(
        QgsGeometry.fromWkt(
            "POLYGON((15.0 44.9885,15.0155 44.9885,15.0155 44.9765,15.0 44.9765,15.0 44.9885))"
        )
    )
    poly.dataProvider().addFeatures([f])
    out = tmp_path / "geo.tif"
    fb = _recording_feedback()
    params = dict(INPUT=str(geo_tif), QUERY_POLYGON=poly, NEGATIVE_TEXT="water", OUTPUT=str(out))
    run("heatmap", fb, **params)
    cos, crs = _read(out)
    assert crs == "EPSG:32633"  # the UTM zone of the EPSG:4326 raster
    means = _quadrant_means(cos)
    assert max(means, key=means.get) == "bare"
    assert any("outside the model's training domain" in w for w in fb.warnings)
    cached = [p for p in unigeo_settings.cache_path().iterdir() if p.is_dir()]
    assert len(cached) == 1 and (cached[0] / "store.json").is_file()
    run("heatmap", **dict(params, OUTPUT=str(tmp_path / "again.tif")))
    assert [p for p in unigeo_settings.cache_path().iterdir() if p.is_dir()] == cached


def test_heatmap_errors_are_actionable(run, utm_store, utm_tif, tmp_path):
    from qgis.core import QgsProcessingException

    out = tmp_path / "e.tif"
    with pytest.raises(QgsProcessingException, match="Give a query"):
        run("heatmap", STORE=str(utm_store), OUTPUT=str(out))
    with pytest.raises(QgsProcessingException, match="No UniGeo model bundle"):
        run(
            "heatmap", STORE=str(utm_store), QUERY_TEXT="blue", MODEL=str(tmp_path), OUTPUT=str(out)
        )
    with pytest.raises(QgsProcessingException, match="selects 2 band.*needs 4"):
        run("heatmap", INPUT=str(utm_tif), BANDS=[1, 2], QUERY_TEXT="blue", OUTPUT=str(out))
    with pytest.raises(QgsProcessingException, match="lat,lon"):
        run("heatmap", STORE=str(utm_store), QUERY_GPS="north", OUTPUT=str(out))
    with pytest.raises(QgsProcessingException, match="outside the embedded area"):
        run("heatmap", STORE=str(utm_store), QUERY_POINT="0,0 [EPSG:32633]", OUTPUT=str(out))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_tophits_points_and_polygons(run, utm_store, tmp_path):
    import pyogrio

    out = tmp_path / "hits.gpkg"
    run(
        "tophits",
        STORE=str(utm_store),
        QUERY_TEXT="vegetation",
        K=5,
        MIN_DISTANCE=1,
        OUTPUT=str(out),
    )
    meta, _, geoms, fields = pyogrio.raw.read(out)
    assert len(geoms) == 5 and "32633" in meta["crs"]
    ranks, scores, rows, cols = fields[0], fields[1], fields[3], fields[4]
    assert list(ranks) == [1, 2, 3, 4, 5] and np.all(np.diff(scores) <= 0)
    assert np.all(rows < 10) and np.all(cols >= 10)  # the vegetation quadrant
    poly = tmp_path / "hits_poly.gpkg"
    run("tophits", STORE=str(utm_store), QUERY_TEXT="red", K=3, AS_POLYGONS=True, OUTPUT=str(poly))
    meta, _, geoms, _ = pyogrio.raw.read(poly)
    assert meta["geometry_type"] == "Polygon" and len(geoms) == 3


def test_classify_zero_shot_and_few_shot(run, utm_store, tmp_path):
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    cls, conf = tmp_path / "cls.tif", tmp_path / "conf.tif"
    run("classify", STORE=str(utm_store), OUTPUT_CLASSES=str(cls), OUTPUT_CONFIDENCE=str(conf))
    with rasterio.open(cls) as src:
        names = [src.tags(1)[f"CLASS_{i}"] for i in range(4)]
        c = src.read(1)
    got = {q: names[int(np.bincount(v.ravel()).argmax())] for q, v in _split(c).items()}
    assert got == {"water": "water", "vegetation": "vegetation", "bare": "bare", "built": "built"}
    assert np.nanmin(_read(conf)[0]) > 0.25
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "examples", "memory")
    layer.dataProvider().addAttributes([QgsField("label", QVariant.String)])
    layer.updateFields()
    feats = []
    for label, (x, y) in {"wet": (500_400, 5_002_800), "dry": (502_800, 5_000_400)}.items():
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromRect(_rect(x, y, 400)))
        f.setAttributes([label])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    res = run(
        "classify",
        STORE=str(utm_store),
        EXAMPLES=layer,
        CLASS_FIELD="label",
        METHOD=1,
        OUTPUT_CLASSES=str(tmp_path / "few.tif"),
        OUTPUT_CONFIDENCE=str(tmp_path / "fewc.tif"),
    )
    with rasterio.open(res["OUTPUT_CLASSES"]) as src:
        c = src.read(1)
        names = [src.tags(1)[f"CLASS_{i}"] for i in range(2)]
    assert names[c[2, 2]] == "wet" and names[c[17, 17]] == "dry"


def _rect(x: float, y: float, half: float):
    from qgis.core import QgsRectangle

    return QgsRectangle(x - half, y - half, x + half, y + half)


def _split(a: np.ndarray) -> dict[str, np.ndarray]:
    h, w = a.shape[0] // 2, a.shape[1] // 2
    return {"water": a[:h, :w], "vegetation": a[:h, w:], "bare": a[h:, :w], "built": a[h:, w:]}


def test_classify_custom_classes_and_bad_text(run, utm_store, tmp_path):
    from qgis.core import QgsProcessingException

    cls, conf = tmp_path / "k.tif", tmp_path / "kc.tif"
    run(
        "classify",
        STORE=str(utm_store),
        CLASSES="lake: water; river\nforest: trees",
        OUTPUT_CLASSES=str(cls),
        OUTPUT_CONFIDENCE=str(conf),
    )
    with rasterio.open(cls) as src:
        assert src.tags(1)["CLASS_0"] == "lake" and src.read(1)[0, 0] == 0
    with pytest.raises(QgsProcessingException, match="at least two classes"):
        run(
            "classify",
            STORE=str(utm_store),
            CLASSES="lake: water",
            OUTPUT_CLASSES=str(tmp_path / "x.tif"),
            OUTPUT_CONFIDENCE=str(tmp_path / "y.tif"),
        )


def test_embedfeatures_points_and_polygons(run, utm_store, utm_tif, tmp_path):
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsPointXY, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant
    from unigeo.engine.store.npy import EmbeddingStore

    pts = QgsVectorLayer("Point?crs=EPSG:32633", "pts", "memory")
    pts.dataProvider().addAttributes([QgsField("name", QVariant.String)])
    pts.updateFields()
    feats = []
    for name, (x, y) in {"a": (500_100, 5_003_100), "far": (0, 0)}.items():
        f = QgsFeature(pts.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        f.setAttributes([name])
        feats.append(f)
    pts.dataProvider().addFeatures(feats)
    out = tmp_path / "pts.gpkg"
    res = run("embedfeatures", INPUT=pts, STORE=str(utm_store), OUTPUT=str(out))
    layer = _vector(res["OUTPUT"])
    rows = {f["name"]: f for f in layer.getFeatures()}
    store = EmbeddingStore.open(utm_store)
    vec = np.array(json.loads(rows["a"]["unigeo_embedding"]))
    expected = store.embeddings[0, 0].astype(np.float64)
    np.testing.assert_allclose(vec, expected / np.linalg.norm(expected), atol=1e-3)
    assert rows["a"]["unigeo_n_tiles"] == 1 and rows["far"]["unigeo_n_tiles"] == 0
    poly = QgsVectorLayer("Polygon?crs=EPSG:32633", "poly", "memory")
    f = QgsFeature()
    f.setGeometry(QgsGeometry.fromRect(_rect(500_720, 5_002_480, 400)))  # 5 x 5 water tiles
    poly.dataProvider().addFeatures([f])
    res = run("embedfeatures", INPUT=poly, RASTER=str(utm_tif), OUTPUT=str(tmp_path / "poly.gpkg"))
    feat = next(_vector(res["OUTPUT"]).getFeatures())
    assert feat["unigeo_n_tiles"] == 25
    mean = store.embeddings[:10, :10].astype(np.float64).reshape(-1, 8)
    assert (
        float(np.dot(json.loads(feat["unigeo_embedding"]), mean[0] / np.linalg.norm(mean[0])))
        > 0.99
    )


def _vector(path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path), "out", "ogr")
    assert layer.isValid()
    return layer


def test_encodetable_texts_and_photos(run, analytic_bundle, shared_data, tmp_path):
    from qgis.core import QgsFeature, QgsField, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    table = QgsVectorLayer("None", "texts", "memory")
    table.dataProvider().addAttributes([QgsField("txt", QVariant.String)])
    table.updateFields()
    feats = []
    for t in ("blue", "green", "dense forest"):
        f = QgsFeature(table.fields())
        f.setAttributes([t])
        feats.append(f)
    table.dataProvider().addFeatures(feats)
    res = run("encodetable", INPUT=table, FIELD="txt", OUTPUT=str(tmp_path / "texts.csv"))
    rows = list(_vector(res["OUTPUT"]).getFeatures())
    assert [r["txt"] for r in rows] == ["blue", "green", "dense forest"]
    assert {r["unigeo_status"] for r in rows} == {"ok"}
    blue = np.array(json.loads(rows[0]["unigeo_embedding"]))
    assert blue[2] > 0.99 and abs(np.linalg.norm(blue) - 1) < 1e-4  # the blue axis
    folder = shared_data / "street_photos" / "berlin"
    res = run("encodetable", PHOTO_FOLDER=str(folder), OUTPUT=str(tmp_path / "photos.gpkg"))
    rows = list(_vector(res["OUTPUT"]).getFeatures())
    assert len(rows) == 3 and all(abs(r["latitude"] - 52.52) < 0.01 for r in rows)
    assert len(json.loads(rows[0]["unigeo_embedding"])) == 8


def test_gpsfield_embeddings_and_heatmap(run, tmp_path):
    out = tmp_path / "gps.tif"
    run("gpsfield", EXTENT="10,12,40,42 [EPSG:4326]", RESOLUTION=0.5, OUTPUT=str(out))
    with rasterio.open(out) as src:
        assert src.count == 8 and src.shape == (4, 4) and src.crs.to_epsg() == 4326
        emb = src.read()
    lat, lon = np.radians(41.75), np.radians(10.25)  # centre of the top-left cell
    expected = [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]
    np.testing.assert_allclose(emb[:3, 0, 0], expected, atol=1e-5)
    heat = tmp_path / "gpsq.tif"
    run(
        "gpsfield",
        EXTENT="10,12,40,42 [EPSG:4326]",
        RESOLUTION=0.5,
        QUERY_GPS="40.25,11.75",
        OUTPUT=str(heat),
    )
    cos, _ = _read(heat)
    assert np.unravel_index(np.argmax(cos), cos.shape) == (3, 3)
    assert cos[3, 3] == pytest.approx(1.0, abs=1e-5)


def test_real_naip_embed_extent_and_heatmap(run, shared_data, tmp_path):
    from unigeo.engine.store.npy import EmbeddingStore

    naip = str(shared_data / NAIP)
    extent = "486000,488000,5206000,5207500 [EPSG:26914]"
    store = tmp_path / "naip.store"
    run("embedraster", INPUT=naip, EXTENT=extent, OUTPUT_STORE=str(store))
    s = EmbeddingStore.open(store)
    assert s.crs == "EPSG:26914" and s.grid.shape == (10, 13) and s.valid.mean() > 0.9
    out = tmp_path / "water.tif"
    fb = _recording_feedback()
    run("heatmap", fb, STORE=str(store), QUERY_TEXT="water", OUTPUT=str(out))
    assert fb.warnings == []  # North Dakota at 10 m lies inside the bundle's training domain
    cos, crs = _read(out)
    assert crs == "EPSG:26914" and cos.shape == (10, 13)
    assert np.nanmax(cos) > np.nanmean(cos) + 0.1
    hits = tmp_path / "water.gpkg"
    run("tophits", INPUT=naip, EXTENT=extent, QUERY_TEXT="water", K=4, OUTPUT=str(hits))
    import pyogrio

    _, _, geoms, fields = pyogrio.raw.read(hits)
    best = np.unravel_index(np.nanargmax(cos), cos.shape)
    assert len(geoms) == 4 and (fields[3][0], fields[4][0]) == best  # same grid, same winner


def test_embedraster_default_store_in_cache_and_layer_named_after_query(
    run, utm_tif, utm_store, unigeo_settings, analytic_bundle
):
    import processing
    from qgis.core import QgsProject

    res = run("embedraster", INPUT=str(utm_tif))
    assert Path(res["OUTPUT_STORE"]).parent == unigeo_settings.cache_path()
    assert (Path(res["OUTPUT_STORE"]) / "store.json").is_file()
    params = {"STORE": str(utm_store), "QUERY_TEXT": "lake", "MODEL": str(analytic_bundle)}
    params["OUTPUT"] = "TEMPORARY_OUTPUT"
    processing.runAndLoadResults("unigeo:heatmap", params)
    layers = QgsProject.instance().mapLayersByName("similarity: text 'lake'")
    assert len(layers) == 1 and layers[0].crs().authid() == "EPSG:32633"
    QgsProject.instance().removeMapLayer(layers[0].id())


def test_model_cache_shares_and_releases(unigeo_settings, analytic_bundle):
    from unigeo.plugin import model_cache

    a = model_cache.get_model()
    assert a is model_cache.get_model(str(analytic_bundle), provider="auto")
    assert a.folder.resolve() == analytic_bundle.resolve()
    b = model_cache.get_model(threads=2)
    assert b is not a and a in model_cache.loaded_models()
    model_cache.release_all()
    assert model_cache.loaded_models() == [] and model_cache.get_model() is not a


def test_heatmap_from_a_non_file_layer_goes_through_the_qgis_reader(
    run, utm_tif, utm_store, tmp_path
):
    from osgeo import gdal
    from qgis.core import QgsRasterLayer

    mem = "/vsimem/unigeo_processing_test.tif"
    gdal.Translate(mem, str(utm_tif))
    try:
        layer = QgsRasterLayer(mem, "in memory")
        assert layer.isValid()
        out = tmp_path / "mem.tif"
        run("heatmap", INPUT=layer, QUERY_TEXT="vegetation", OUTPUT=str(out))
    finally:
        gdal.Unlink(mem)
    ref = tmp_path / "ref.tif"
    run("heatmap", STORE=str(utm_store), QUERY_TEXT="vegetation", OUTPUT=str(ref))
    a, crs = _read(out)
    b, _ = _read(ref)
    assert crs == "EPSG:32633" and a.shape == b.shape == (20, 20)
    np.testing.assert_allclose(a, b, atol=2e-3)  # same tiles, read by QGIS instead of rasterio


def test_cancelled_on_demand_heatmap_writes_nothing(run, utm_tif, tmp_path, unigeo_settings):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback
    from unigeo.plugin.settings import Settings

    s = Settings.load()
    s.stride_px = 8  # another grid than the cached one: the raster is embedded again
    fb = QgsProcessingFeedback()
    fb.progressChanged.connect(lambda p: fb.cancel() if p > 0 else None)
    out = tmp_path / "cancel.tif"
    try:
        with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
            run("heatmap", fb, INPUT=str(utm_tif), QUERY_TEXT="blue", OUTPUT=str(out))
    finally:
        s.stride_px = 0
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(QgsProcessingException, match="Give a raster layer"):
        run("heatmap", QUERY_TEXT="blue", OUTPUT=str(out))


def test_model_builder_chain_embed_then_tophits(run, utm_tif, analytic_bundle, tmp_path):
    from qgis.core import (
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelOutput,
    )
    from qgis.core import (
        QgsProcessingModelChildParameterSource as Src,
    )

    model = QgsProcessingModelAlgorithm("embed and search", "tests")
    embed = QgsProcessingModelChildAlgorithm("unigeo:embedraster")
    embed.setChildId("embed")
    embed.addParameterSources("INPUT", [Src.fromStaticValue(str(utm_tif))])
    embed.addParameterSources("MODEL", [Src.fromStaticValue(str(analytic_bundle))])
    embed.addParameterSources("OUTPUT_STORE", [Src.fromStaticValue(str(tmp_path / "m.store"))])
    model.addChildAlgorithm(embed)
    hits = QgsProcessingModelChildAlgorithm("unigeo:tophits")
    hits.setChildId("hits")
    hits.addParameterSources("STORE", [Src.fromChildOutput("embed", "OUTPUT_STORE")])
    hits.addParameterSources("MODEL", [Src.fromStaticValue(str(analytic_bundle))])
    hits.addParameterSources("QUERY_TEXT", [Src.fromStaticValue("bare soil")])
    hits.addParameterSources("K", [Src.fromStaticValue(3)])
    out = QgsProcessingModelOutput("hits_out")
    out.setChildOutputName("OUTPUT")
    hits.setModelOutputs({"hits_out": out})
    model.addChildAlgorithm(hits)
    model.updateDestinationParameters()
    dest = str(tmp_path / "model_hits.gpkg")
    results, ok = model.run(
        {"hits:hits_out": dest}, QgsProcessingContext(), QgsProcessingFeedback()
    )
    assert ok
    import pyogrio

    _, _, geoms, fields = pyogrio.raw.read(dest)
    assert len(geoms) == 3 and np.all(fields[3] >= 10) and np.all(fields[4] < 10)  # bare quadrant


def test_heatmap_reads_a_distributed_zarr_store(run, utm_store, tmp_path):
    """A store written by the Dask path (Zarr) is a valid STORE input, with identical results."""
    from unigeo.engine.store.npy import EmbeddingStore
    from unigeo.engine.store.zarr import ZarrEmbeddingStore

    src = EmbeddingStore.open(utm_store)
    z = ZarrEmbeddingStore.create(
        tmp_path / "utm.zarr",
        src.grid,
        src.dim,
        src.model_hash,
        src.source_fingerprint,
        meta={"bands": src.info["bands"], "scaling": src.info["scaling"]},
        block_tiles=src.block_tiles,
    )
    for bid, (r0, c0, nr, nc) in enumerate(z.blocks()):
        emb = np.asarray(src.embeddings[r0 : r0 + nr, c0 : c0 + nc], np.float32)
        z.write_block(r0, c0, emb, np.asarray(src.valid[r0 : r0 + nr, c0 : c0 + nc]))
        z.mark_done(bid)
    z.finalize()
    a = run("heatmap", STORE=str(utm_store), QUERY_TEXT="blue", OUTPUT=str(tmp_path / "a.tif"))
    b = run(
        "heatmap",
        STORE=str(tmp_path / "utm.zarr"),
        QUERY_TEXT="blue",
        OUTPUT=str(tmp_path / "b.tif"),
    )
    (ca, crs_a), (cb, crs_b) = _read(a["OUTPUT"]), _read(b["OUTPUT"])
    assert crs_a == crs_b == "EPSG:32633"
    np.testing.assert_array_equal(ca, cb)
