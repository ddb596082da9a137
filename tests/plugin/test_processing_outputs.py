"""Processing outputs as good as the GUI's: styles and metadata on load, EXTENT on a STORE,
DSM embedding, Shapefile/GeoJSON hits, one table row per input feature, honest messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

pytestmark = pytest.mark.qgis

# 5 x 5 tiles (rows 5..9, cols 5..9) of the 20 x 20 analytic store of ``utm_tif``
EXTENT = "500850,501550,5001650,5002350 [EPSG:32633]"


@pytest.fixture(scope="module")
def store(run, utm_tif, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out_stores") / "utm.store"
    run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(out))
    return out


@pytest.fixture
def load(unigeo_provider, unigeo_settings, analytic_bundle):
    """``load(name, **params)``: processing.runAndLoadResults; the loaded layers by name."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    project = QgsProject.instance()
    added: list[str] = []

    def _load(name: str, **params):
        params.setdefault("MODEL", str(analytic_bundle))
        before = set(project.mapLayers())
        ctx = QgsProcessingContext()
        ctx.setProject(project)
        processing.runAndLoadResults(
            f"unigeo:{name}", params, feedback=QgsProcessingFeedback(), context=ctx
        )
        new = [project.mapLayer(i) for i in set(project.mapLayers()) - before]
        added.extend(layer.id() for layer in new)
        return {layer.name(): layer for layer in new}

    yield _load
    project.removeMapLayers(added)


def _abstract(layer) -> str:
    return layer.metadata().abstract()


# -- F5: outputs loaded by Processing are styled and documented like the GUI's -----------------
def test_loaded_heatmap_and_hits_are_styled_with_provenance(load, store, tmp_path):
    heat = load("heatmap", STORE=str(store), QUERY_TEXT="blue", OUTPUT=str(tmp_path / "h.tif"))
    layer = heat["similarity: text 'blue'"]
    r = layer.renderer()
    assert r.type() == "singlebandpseudocolor" and r.band() == 2  # the percentile band
    assert (r.classificationMin(), r.classificationMax()) == (0.0, 100.0)
    assert "query: text 'blue'" in _abstract(layer) and "model_hash:" in _abstract(layer)
    hits = load("tophits", STORE=str(store), QUERY_TEXT="blue", K=3, OUTPUT=str(tmp_path / "k.shp"))
    layer = hits["top 3: text 'blue'"]
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "rank"
    assert layer.renderer().symbol().color().name() == "#ff2d55"
    assert "k: 3" in _abstract(layer) and layer.featureCount() == 3


def test_loaded_classification_has_named_palette_and_confidence_ramp(load, store, tmp_path):
    out = load(
        "classify",
        STORE=str(store),
        OUTPUT_CLASSES=str(tmp_path / "c.tif"),
        OUTPUT_CONFIDENCE=str(tmp_path / "cc.tif"),
    )
    classes = next(v for k, v in out.items() if k.startswith("classes"))
    conf = next(v for k, v in out.items() if k.startswith("confidence"))
    assert classes.renderer().type() == "paletted"
    labels = [c.label for c in classes.renderer().classes()]
    assert labels[:4] == ["water", "vegetation", "bare", "built"]
    assert conf.renderer().type() == "singlebandpseudocolor"
    assert (conf.renderer().classificationMin(), conf.renderer().classificationMax()) == (0, 1)
    assert "model_hash" in _abstract(classes) and "classes" in _abstract(conf)


# -- F6: EXTENT restricts a STORE query to the extent's tiles ---------------------------------
def test_store_extent_equals_embedding_the_extent(run, store, utm_tif, tmp_path):
    a, b = tmp_path / "store.tif", tmp_path / "input.tif"
    run("heatmap", STORE=str(store), EXTENT=EXTENT, QUERY_TEXT="green", OUTPUT=str(a))
    run("heatmap", INPUT=str(utm_tif), EXTENT=EXTENT, QUERY_TEXT="green", OUTPUT=str(b))
    with rasterio.open(a) as sa, rasterio.open(b) as sb:
        assert sa.shape == sb.shape == (5, 5) and sa.transform == sb.transform
        assert sa.transform.c == 500_800.0 and sa.transform.f == 5_003_200.0 - 5 * 160
        np.testing.assert_allclose(sa.read(1), sb.read(1), atol=1e-6)
        pct = sa.read(2)
    assert np.nanmin(pct) == pytest.approx(0.0) and np.nanmax(pct) == pytest.approx(100.0)


def test_store_extent_limits_hits_and_classes(run, store, tmp_path):
    hits = tmp_path / "h.gpkg"
    run("tophits", STORE=str(store), EXTENT=EXTENT, QUERY_TEXT="red", K=50, MIN_DISTANCE=0,
        OUTPUT=str(hits))  # fmt: skip
    _, _, geoms, _ = pyogrio.raw.read(hits)
    import shapely

    xy = shapely.get_coordinates(shapely.from_wkb(geoms))
    assert len(xy) == 25  # every tile of the extent, none outside
    assert np.all((xy[:, 0] > 500_800) & (xy[:, 0] < 501_600))
    assert np.all((xy[:, 1] > 5_001_600) & (xy[:, 1] < 5_002_400))
    cls = tmp_path / "c.tif"
    run("classify", STORE=str(store), EXTENT=EXTENT, OUTPUT_CLASSES=str(cls),
        OUTPUT_CONFIDENCE=str(tmp_path / "cc.tif"))  # fmt: skip
    with rasterio.open(cls) as src:
        assert src.shape == (5, 5) and src.bounds.left == 500_800.0


def test_store_extent_outside_is_an_error(run, store, tmp_path):
    from qgis.core import QgsProcessingException

    out = tmp_path / "x.tif"
    with pytest.raises(QgsProcessingException, match="EXTENT does not overlap the store"):
        run("heatmap", STORE=str(store), EXTENT="0,1000,0,1000 [EPSG:32633]",
            QUERY_TEXT="blue", OUTPUT=str(out))  # fmt: skip
    assert not out.exists()


def test_windowed_array_matches_numpy_slicing():
    from unigeo.engine.store.window import WindowedArray

    class Opaque:  # a non-NumPy array (like a Zarr one): only base[...] and shape/dtype
        def __init__(self, a):
            self.a, self.shape, self.dtype = a, a.shape, a.dtype

        def __getitem__(self, key):
            return self.a[key]

    base = np.arange(8 * 9 * 3, dtype=np.float32).reshape(8, 9, 3)
    w = WindowedArray(Opaque(base), 2, 3, 4, 5)
    view = base[2:6, 3:8]
    assert w.shape == view.shape
    np.testing.assert_array_equal(w[1:3], view[1:3])
    np.testing.assert_array_equal(w[np.array([0, 3]), np.array([4, 1])], view[[0, 3], [4, 1]])
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = mask[3, 0] = True
    np.testing.assert_array_equal(w[mask], view[mask])
    np.testing.assert_array_equal(np.asarray(w), view)
    np.testing.assert_array_equal(w[-1, ::-1], view[-1, ::-1])
    with pytest.raises(IndexError):
        w[np.array([4]), np.array([0])]


# -- F7: a DSM through Processing -----------------------------------------------------------
@pytest.fixture(scope="module")
def dsm_tif(tmp_path_factory) -> Path:
    """A 1-band float32 DSM (metres) of 160 x 160 px at 10 m in UTM 33N: 10 x 10 tiles."""
    y, x = np.mgrid[0:160, 0:160].astype(np.float32)
    heights = 120.0 + 15.0 * np.sin(x / 9.0) + 0.2 * y
    path = tmp_path_factory.mktemp("dsm") / "dsm.tif"
    profile = dict(driver="GTiff", width=160, height=160, count=1, dtype="float32",
                   crs="EPSG:32633", transform=Affine(10, 0, 500_000, 0, -10, 5_003_200))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(heights[None])
    return path


def test_embedraster_dsm_modality(run, dsm_tif, tmp_path):
    from qgis.core import QgsProcessingException
    from unigeo.engine.store.npy import EmbeddingStore

    out = tmp_path / "dsm.store"
    run("embedraster", INPUT=str(dsm_tif), MODALITY="dsm", OUTPUT_STORE=str(out))
    s = EmbeddingStore.open(out)
    assert s.meta["modality"] == "dsm" and s.info["scaling"] == "divide:1"
    assert s.info["bands"] == ["height"]
    assert s.grid.shape == (10, 10) and bool(s.valid.all()) and s.dim == 8
    with pytest.raises(QgsProcessingException, match="one band.*MODALITY=dsm"):
        run("embedraster", INPUT=str(dsm_tif), OUTPUT_STORE=str(tmp_path / "a.store"))
    assert not (tmp_path / "a.store").exists()


# -- F8: hits as Shapefile, GeoJSON in WGS84 ------------------------------------------------
def test_tophits_shapefile_and_wgs84_geojson(run, store, tmp_path):
    shp = tmp_path / "hits.shp"
    run("tophits", STORE=str(store), QUERY_TEXT="vegetation", K=4, OUTPUT=str(shp))
    info = pyogrio.read_info(shp)
    assert info["features"] == 4 and CRS.from_user_input(info["crs"]).to_epsg() == 32633
    assert list(info["fields"]) == ["rank", "score", "percentile", "row", "col"]
    gj = tmp_path / "hits.geojson"
    run("tophits", STORE=str(store), QUERY_TEXT="vegetation", K=4, OUTPUT=str(gj))
    doc = json.loads(gj.read_text())
    lon, lat = np.array([f["geometry"]["coordinates"] for f in doc["features"]]).T
    assert np.all((14.9 < lon) & (lon < 15.1)) and np.all((45.0 < lat) & (lat < 45.2))


# -- F10: encodetable keeps every input row, its id, attributes and geometry ------------------
def test_encodetable_one_row_per_feature_with_status(run, tmp_path):
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsPointXY, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer("Point?crs=EPSG:32633", "texts", "memory")
    layer.dataProvider().addAttributes([QgsField("txt", QVariant.String), QgsField("n", 2)])
    layer.updateFields()
    feats = []
    for i, text in enumerate(["blue", None, "   ", "green"]):
        f = QgsFeature(layer.fields())
        f.setAttributes([text, i * 10])
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(500_000 + i, 5_000_000)))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    ids = [f.id() for f in layer.getFeatures()]
    res = run("encodetable", INPUT=layer, FIELD="txt", OUTPUT=str(tmp_path / "t.gpkg"))
    out = QgsVectorLayer(res["OUTPUT"], "t", "ogr")
    rows = list(out.getFeatures())
    assert [r["unigeo_fid"] for r in rows] == ids and [r["n"] for r in rows] == [0, 10, 20, 30]
    assert [r["unigeo_status"] for r in rows][::3] == ["ok", "ok"]
    assert all("empty or NULL" in r["unigeo_status"] for r in rows[1:3])
    assert [r.geometry().asPoint().x() for r in rows] == [500_000, 500_001, 500_002, 500_003]
    emb = [r["unigeo_embedding"] for r in rows]
    assert not emb[1] and not emb[2] and len(json.loads(emb[3])) == 8
    assert out.crs().authid() == "EPSG:32633"


def test_encodetable_photos_have_points_and_per_photo_status(run, shared_data, tmp_path):
    from qgis.core import QgsVectorLayer

    folder = tmp_path / "photos"
    shutil.copytree(shared_data / "street_photos" / "berlin", folder)
    (folder / "zz_broken.jpg").write_bytes(b"not a jpeg")
    res = run("encodetable", PHOTO_FOLDER=str(folder), OUTPUT=str(tmp_path / "p.gpkg"))
    out = QgsVectorLayer(res["OUTPUT"], "p", "ogr")
    rows = list(out.getFeatures())
    assert len(rows) == 4 and out.crs().authid() == "EPSG:4326"
    good, bad = rows[:3], rows[3]
    for r in good:
        pt = r.geometry().asPoint()
        assert r["unigeo_status"] == "ok" and abs(pt.y() - 52.52) < 0.01
        assert pt.x() == pytest.approx(r["longitude"]) and abs(pt.x() - 13.4) < 0.1
    assert bad["source"] == "zz_broken.jpg" and bad["unigeo_status"].startswith("no embedding")
    assert not bad["unigeo_embedding"] and bad.geometry().isEmpty()


# -- F12: messages that name the real problem ------------------------------------------------
def test_gpsfield_resolution_in_degrees_is_explained(run, tmp_path):
    from qgis.core import QgsProcessingException

    out = tmp_path / "g.tif"
    with pytest.raises(QgsProcessingException) as e:
        run("gpsfield", EXTENT="-99.19,-99.12,47.00,47.04 [EPSG:4326]", OUTPUT=str(out))
    msg = str(e.value)
    assert "RESOLUTION 1000 is in the units of the extent's CRS (EPSG:4326: degrees" in msg
    assert "RESOLUTION=0.001" in msg and "swapped" not in msg
    assert not out.exists()


def test_band_mismatch_in_processing_names_bands_parameter(run, tmp_path):
    from qgis.core import QgsProcessingException

    src = tmp_path / "two.tif"  # red, green and blue are never optional (NIR is: band mask)
    profile = dict(driver="GTiff", width=64, height=64, count=2, dtype="uint8",
                   crs="EPSG:32633", transform=Affine(10, 0, 500_000, 0, -10, 5_003_200))  # fmt: skip
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(np.full((2, 64, 64), 90, np.uint8))
    with pytest.raises(QgsProcessingException, match="needs 4 band.*2 data band.*cannot provide"):
        run("embedraster", INPUT=str(src), OUTPUT_STORE=str(tmp_path / "s.store"))
