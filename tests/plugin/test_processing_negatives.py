"""Processing queries with several positives and negatives (EXTRA_POINTS, NEGATIVE_POINTS,
NEGATIVE_POLYGON), checked against the engine's Query built from the same terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis

UTM = "EPSG:32633"
X0, Y0, TILE = 500_000.0, 5_003_200.0, 160.0  # the utm_tif lattice (tests/plugin/conftest.py)


def centre(row: int, col: int) -> tuple[float, float]:
    """UTM centre of tile (row, col) of the 20 x 20 utm store."""
    return X0 + (col + 0.5) * TILE, Y0 - (row + 0.5) * TILE


def to_wgs84(x: float, y: float) -> tuple[float, float]:
    from pyproj import Transformer

    return Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(x, y)


@pytest.fixture(scope="module")
def utm_store(run, utm_tif, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("neg_stores") / "utm.store"
    run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(out))
    return out


@pytest.fixture(scope="module")
def engine_side(utm_store, analytic_bundle):
    """The store and model as the engine sees them, to build the same query directly."""
    from unigeo.engine.model import UniGeoModel
    from unigeo.engine.store.npy import EmbeddingStore

    return EmbeddingStore.open(utm_store), UniGeoModel.load(analytic_bundle)


def point_layer(crs: str, *wkts: str, name: str = "pts"):
    """A memory point layer (multipoints allowed) with one feature per WKT."""
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    kind = "MultiPoint" if any(w.startswith("MULTI") for w in wkts) else "Point"
    layer = QgsVectorLayer(f"{kind}?crs={crs}", name, "memory")
    feats = []
    for w in wkts:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromWkt(w))
        feats.append(f)
    assert layer.dataProvider().addFeatures(feats)[0]
    return layer


def polygon_layer(crs: str, *boxes: tuple[float, float, float, float], name: str = "poly"):
    from qgis.core import QgsFeature, QgsGeometry, QgsRectangle, QgsVectorLayer

    layer = QgsVectorLayer(f"Polygon?crs={crs}", name, "memory")
    feats = []
    for b in boxes:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(*b)))
        feats.append(f)
    assert layer.dataProvider().addFeatures(feats)[0]
    return layer


def read(path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as src:
        return src.read(1), src.tags()


def engine_cosine(store, terms: list[tuple[object, bool]]) -> np.ndarray:
    """Cosine band of the engine Query of ``terms`` (each term weight 1, as the GUI adds them)."""
    from unigeo.engine.search.query import Query
    from unigeo.engine.search.similarity import similarity

    query = Query()
    for q, negative in terms:
        query.add(q.vector(), 1.0, negative=negative, description=q.description())
    return similarity(store, query)


def test_negative_point_lowers_its_tile_and_matches_engine(run, utm_store, engine_side, tmp_path):
    from unigeo.engine.search import query as Q

    store, _ = engine_side
    pos, neg = centre(15, 15), centre(14, 3)  # built, bare
    lon, lat = to_wgs84(*pos)
    base = dict(STORE=str(utm_store), QUERY_POINT=f"{lon},{lat} [EPSG:4326]")
    run("heatmap", **base, OUTPUT=str(tmp_path / "plain.tif"))
    avoid = point_layer("EPSG:4326", "POINT({} {})".format(*to_wgs84(*neg)), name="avoid")
    run("heatmap", **base, NEGATIVE_POINTS=avoid, OUTPUT=str(tmp_path / "neg.tif"))
    plain, _ = read(tmp_path / "plain.tif")
    cos, tags = read(tmp_path / "neg.tif")
    assert plain[14, 3] - cos[14, 3] > 0.2  # the place to avoid drops
    assert plain[15, 15] == pytest.approx(1.0, abs=1e-3)
    assert cos[15, 15] > cos[14, 3] + 0.5  # the example still scores far above it
    assert np.nanmean(cos[10:, :10]) < np.nanmean(plain[10:, :10]) - 0.2  # the whole bare area
    expected = engine_cosine(
        store, [(Q.point_query(store, *pos), False), (Q.point_query(store, *neg), True)]
    )
    np.testing.assert_allclose(cos, expected, atol=1e-5)
    terms = json.loads(tags["UNIGEO_QUERY_TERMS"])
    assert [t["negative"] for t in terms] == [False, True]
    assert terms[1]["description"] == "point ({:.1f}, {:.1f})".format(*neg)
    assert "− point" in tags["UNIGEO_QUERY"]


def test_multiple_positives_multipoint_and_negative_polygon(run, utm_store, engine_side, tmp_path):
    from shapely.geometry import box
    from unigeo.engine.search import query as Q

    store, model = engine_side
    water, veg, veg2 = centre(2, 2), centre(3, 16), centre(7, 12)
    extra = point_layer(
        UTM, "MULTIPOINT(({} {}),({} {}))".format(*water, *veg), "POINT({} {})".format(*veg2)
    )
    region = (X0, Y0 - 20 * TILE, X0 + 10 * TILE, Y0 - 10 * TILE)  # the bare quadrant
    out = tmp_path / "multi.tif"
    run(
        "heatmap",
        STORE=str(utm_store),
        QUERY_TEXT="green",
        EXTRA_POINTS=extra,
        NEGATIVE_POLYGON=polygon_layer(UTM, region),
        NEGATIVE_TEXT="red",
        OUTPUT=str(out),
    )
    cos, tags = read(out)
    terms = [(Q.text_query(model, "green"), False)]
    terms += [(Q.point_query(store, *p), False) for p in (water, veg, veg2)]
    terms += [(Q.text_query(model, "red"), True), (Q.region_query(store, box(*region)), True)]
    np.testing.assert_allclose(cos, engine_cosine(store, terms), atol=1e-5)
    got = json.loads(tags["UNIGEO_QUERY_TERMS"])
    assert [t["negative"] for t in got] == [False] * 4 + [True] * 2
    assert got[5]["description"] == "region of 100 tiles"
    assert np.nanmean(cos[10:, :10]) < min(np.nanmean(cos[:10, :10]), np.nanmean(cos[:10, 10:]))


def test_tophits_refined_with_the_wrong_hits_as_negatives(run, utm_store, tmp_path):
    import pyogrio

    pos = centre(4, 15)  # vegetation; the bare quadrant comes next without negatives
    params = dict(STORE=str(utm_store), QUERY_POINT=f"{pos[0]},{pos[1]} [{UTM}]", K=200)
    first, second = tmp_path / "first.gpkg", tmp_path / "second.gpkg"
    run("tophits", **params, MIN_DISTANCE=0, OUTPUT=str(first))
    rows, cols = pyogrio.raw.read(first)[3][3:5]
    assert np.all((rows[:100] < 10) & (cols[:100] >= 10))  # vegetation first
    assert np.all((rows[100:] >= 10) & (cols[100:] < 10))  # then bare: wrong hits
    wrong = [(int(r), int(c)) for r, c in zip(rows[100:102], cols[100:102], strict=True)]
    avoid = point_layer(UTM, *("POINT({} {})".format(*centre(*rc)) for rc in wrong))
    run("tophits", **params, MIN_DISTANCE=0, NEGATIVE_POINTS=avoid, OUTPUT=str(second))
    _, _, _, fields = pyogrio.raw.read(second)
    rows, cols, scores = fields[3], fields[4], fields[1]
    assert np.all((rows[:100] < 10) & (cols[:100] >= 10))  # the examples' kind still first
    assert np.all((rows[100:] < 10) & (cols[100:] < 10))  # water now, bare is pushed away
    assert scores[0] > 0.6 and scores[100] < 0.3
    terms = json.loads(pyogrio.read_info(second)["layer_metadata"]["UNIGEO_QUERY_TERMS"])
    assert [t["negative"] for t in terms] == [False, True, True]
    assert terms[1]["description"] == "point ({:.1f}, {:.1f})".format(*centre(*wrong[0]))


def test_gps_weight_mixes_into_extra_points_not_into_negatives(
    run, utm_store, engine_side, tmp_path
):
    from unigeo.engine.search import query as Q

    store, model = engine_side
    pos, neg = centre(4, 15), centre(15, 4)
    out = tmp_path / "gps.tif"
    run(
        "heatmap",
        STORE=str(utm_store),
        EXTRA_POINTS=point_layer(UTM, "POINT({} {})".format(*pos)),
        NEGATIVE_POINTS=point_layer(UTM, "POINT({} {})".format(*neg)),
        GPS_WEIGHT=0.5,
        OUTPUT=str(out),
    )
    cos, tags = read(out)
    positive = Q.point_query(store, *pos, gps_weight=0.5, model=model)
    terms = [(positive, False), (Q.point_query(store, *neg), True)]
    np.testing.assert_allclose(cos, engine_cosine(store, terms), atol=1e-5)
    assert tags["UNIGEO_QUERY"].count("gps (") == 1  # the positive's GPS term only


def test_empty_layers_are_ignored(run, utm_store, tmp_path):
    pos = centre(4, 15)
    base = dict(STORE=str(utm_store), QUERY_POINT=f"{pos[0]},{pos[1]} [{UTM}]")
    run("heatmap", **base, OUTPUT=str(tmp_path / "a.tif"))
    empty_pts, empty_poly = point_layer(UTM), polygon_layer(UTM)
    run(
        "heatmap",
        **base,
        EXTRA_POINTS=empty_pts,
        NEGATIVE_POINTS=point_layer(UTM),
        NEGATIVE_POLYGON=empty_poly,
        OUTPUT=str(tmp_path / "b.tif"),
    )
    a, _ = read(tmp_path / "a.tif")
    b, tags = read(tmp_path / "b.tif")
    np.testing.assert_array_equal(a, b)
    assert len(json.loads(tags["UNIGEO_QUERY_TERMS"])) == 1


def test_refusals_name_the_problem_and_write_nothing(run, utm_store, tmp_path):
    from qgis.core import QgsProcessingException

    out = tmp_path / "e.tif"
    ok = "POINT({} {})".format(*centre(5, 5))
    avoid = point_layer(UTM, ok, name="avoid")
    region = polygon_layer(UTM, (X0, Y0 - 800, X0 + 800, Y0))
    for negatives in (
        dict(NEGATIVE_POINTS=avoid),
        dict(NEGATIVE_POLYGON=region),
        dict(NEGATIVE_TEXT="water", NEGATIVE_POINTS=avoid, EXTRA_POINTS=point_layer(UTM)),
    ):
        with pytest.raises(QgsProcessingException, match="Give a query.*not enough alone"):
            run("heatmap", STORE=str(utm_store), **negatives, OUTPUT=str(out))
    far = point_layer(UTM, ok, "POINT(400000 5003000)", name="far away")
    with pytest.raises(
        QgsProcessingException,
        match=r"NEGATIVE_POINTS: feature 2 of layer 'far away': point \(400000, 5\.003e\+06\) "
        "lies outside the embedded area",
    ):
        run(
            "heatmap", STORE=str(utm_store), QUERY_TEXT="blue", NEGATIVE_POINTS=far, OUTPUT=str(out)
        )
    far_geo = point_layer("EPSG:4326", "POINT(10 50)", name="geo")
    with pytest.raises(QgsProcessingException, match="EXTRA_POINTS: feature 1 of layer 'geo'"):
        run("tophits", STORE=str(utm_store), EXTRA_POINTS=far_geo, OUTPUT=str(tmp_path / "h.gpkg"))
    off = polygon_layer(UTM, (0, 0, 1000, 1000), name="off")
    with pytest.raises(QgsProcessingException, match="NEGATIVE_POLYGON \\(layer 'off'\\).*0 emb"):
        run(
            "heatmap",
            STORE=str(utm_store),
            QUERY_TEXT="blue",
            NEGATIVE_POLYGON=off,
            OUTPUT=str(out),
        )
    assert not list(tmp_path.iterdir())


def test_help_describes_the_new_parameters(unigeo_provider):
    from qgis.core import QgsApplication

    for name in ("heatmap", "tophits"):
        alg = QgsApplication.processingRegistry().algorithmById(f"unigeo:{name}")
        for p in ("EXTRA_POINTS", "NEGATIVE_POINTS", "NEGATIVE_POLYGON"):
            assert p in alg.shortHelpString()
            assert alg.parameterDefinition(p).flags() & alg.parameterDefinition(p).FlagOptional
