"""Query maths and builders: weighted positive/negative terms, point/region/text/photo/DSM/GPS."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pyproj import Transformer
from shapely.geometry import Polygon, box

from engine.errors import InputError
from engine.model.contract import Modality
from engine.search.query import (
    Query,
    combine,
    dsm_query,
    gps_query,
    photo_query,
    point_query,
    region_query,
    text_query,
)


def _onehot(i: int, d: int = 8) -> np.ndarray:
    v = np.zeros(d)
    v[i] = 1.0
    return v


def _basis_store(fx, rows=4, cols=5, d=8, valid=None):
    """Tile (r, c) holds a distinct unit vector: e_{(r*cols+c) % d} + 0.1*r*e_0 (all distinct)."""
    vec = np.zeros((rows, cols, d))
    for r in range(rows):
        for c in range(cols):
            vec[r, c, (r * cols + c) % d] += 1.0
            vec[r, c, (r + c) % d] += 0.5 * (r + 1)
    return fx.make_store(vec, valid)


def test_vector_is_normalised_weighted_sum_minus_negatives(fx):
    a, b, c = fx.unit([1, 2, 0, 0]), fx.unit([0, 1, 1, 0]), fx.unit([0, 0, 1, 3])
    q = Query().add(a, 2.0, description="a").add(b, 1.0).add(c, 0.5, negative=True)
    want = fx.unit(2 * a + b - 0.5 * c)
    np.testing.assert_allclose(q.vector(), want, atol=1e-6)
    assert q.vector().dtype == np.float32
    assert abs(np.linalg.norm(q.vector()) - 1) < 1e-6
    assert q.description() == "2×a + vector − 0.5×vector"
    prov = q.provenance()
    assert prov["query_terms"][2] == {"description": "vector", "weight": 0.5, "negative": True}


def test_terms_are_normalised_before_weighting(fx):
    q = Query().add([10.0, 0.0]).add([0.0, 0.1])
    np.testing.assert_allclose(q.vector(), fx.unit([1, 1]), atol=1e-6)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Query().vector(),  # empty
        lambda: Query().add([1.0, 0.0]).add([1.0, 0.0], negative=True).vector(),  # cancels
        lambda: Query().add([0.0, 0.0]),  # zero vector
        lambda: Query().add([1.0, np.nan]),  # non-finite
        lambda: Query().add([1.0, 0.0], weight=0.0),  # zero weight
        lambda: Query().add([1.0, 0.0]).add([1.0, 0.0, 0.0]),  # dimension mismatch
    ],
)
def test_bad_queries_raise_input_error(build):
    with pytest.raises(InputError):
        build()


def test_point_query_returns_the_tile_under_the_point(fx):
    store = _basis_store(fx)
    ox, oy = fx.ORIGIN
    # centre of local tile (2, 3): x = ox + 3.5 cells, y = oy - 2.5 cells
    q = point_query(store, ox + 35.0, oy - 25.0)
    want = store.embeddings[2, 3].astype(np.float64)
    np.testing.assert_allclose(q.vector(), fx.unit(want), atol=1e-6)
    assert q.description().startswith("point (")


def test_point_query_transforms_the_point_crs(fx):
    store = _basis_store(fx)
    ox, oy = fx.ORIGIN
    lon, lat = Transformer.from_crs(fx.UTM, "EPSG:4326", always_xy=True).transform(
        ox + 12.0, oy - 37.0
    )
    q = point_query(store, lon, lat, crs="EPSG:4326")  # falls in tile (3, 1)
    np.testing.assert_allclose(
        q.vector(), fx.unit(store.embeddings[3, 1].astype(np.float64)), atol=1e-6
    )


def test_point_outside_or_on_nodata_raises(fx):
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    store = _basis_store(fx, valid=valid)
    ox, oy = fx.ORIGIN
    with pytest.raises(InputError, match="outside the embedded area"):
        point_query(store, ox - 1.0, oy - 5.0)
    with pytest.raises(InputError, match="outside the embedded area"):
        point_query(store, ox + 5.0, oy - 40.5)  # just below the last row
    with pytest.raises(InputError, match="nodata tile"):
        point_query(store, ox + 5.0, oy - 5.0)


def test_point_query_mixes_in_the_gps_embedding(fx):
    store = _basis_store(fx)
    model = fx.FakeModel(8)
    ox, oy = fx.ORIGIN
    q = point_query(store, ox + 5.0, oy - 5.0, gps_weight=0.25, model=model)
    lon, lat = Transformer.from_crs(fx.UTM, "EPSG:4326", always_xy=True).transform(
        ox + 5.0, oy - 5.0
    )
    gps = model.encode_gps([lat], [lon])[0].astype(np.float64)
    tile = fx.unit(store.embeddings[0, 0].astype(np.float64))
    np.testing.assert_allclose(q.vector(), fx.unit(0.75 * tile + 0.25 * gps), atol=1e-5)
    with pytest.raises(InputError, match="needs a loaded model"):
        point_query(store, ox + 5.0, oy - 5.0, gps_weight=0.5)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        point_query(store, ox + 5.0, oy - 5.0, gps_weight=1.5, model=model)


def test_region_query_is_the_mean_of_valid_tiles_inside(fx):
    valid = np.ones((4, 5), bool)
    valid[1, 2] = False
    store = _basis_store(fx, valid=valid)
    ox, oy = fx.ORIGIN
    # covers the centres of rows 1..2 and cols 1..2 (4 tiles, one of them invalid)
    poly = box(ox + 12.0, oy - 29.0, ox + 29.0, oy - 12.0)
    q = region_query(store, poly)
    tiles = [store.embeddings[r, c].astype(np.float64) for r, c in [(1, 1), (2, 1), (2, 2)]]
    np.testing.assert_allclose(q.vector(), fx.unit(np.mean(tiles, axis=0)), atol=1e-6)
    assert q.terms[0].description == "region of 3 tiles"


def test_region_query_in_another_crs_and_empty_region(fx):
    store = _basis_store(fx)
    ox, oy = fx.ORIGIN
    tr = Transformer.from_crs(fx.UTM, "EPSG:4326", always_xy=True)
    ring = [tr.transform(ox + dx, oy - dy) for dx, dy in [(1, 1), (19, 1), (19, 9), (1, 9)]]
    q = region_query(store, Polygon(ring), crs="EPSG:4326")  # centres of (0,0) and (0,1)
    want = fx.unit(store.embeddings[0, :2].astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(q.vector(), want, atol=1e-6)
    with pytest.raises(InputError, match="covers 0"):
        region_query(store, box(ox + 1, oy - 4, ox + 4, oy - 1))  # no centre inside
    with pytest.raises(InputError, match="covers 0"):
        region_query(store, box(ox - 500, oy - 500, ox - 400, oy - 400))  # off the grid
    with pytest.raises(InputError, match="non-empty polygon"):
        region_query(store, Polygon())


def test_text_query_uses_the_bundle_templates_by_default(fx):
    model = fx.FakeModel(
        8, {"wetland": _onehot(2)}, prompt_templates=("an aerial photo of {}", "{} from above")
    )
    q = text_query(model, " wetland ")
    np.testing.assert_allclose(q.vector(), _onehot(2), atol=1e-7)
    assert model.calls[-1] == ("text", (["wetland"], ["an aerial photo of {}", "{} from above"]))
    text_query(model, "wetland", templates=["{}"])
    assert model.calls[-1][1][1] == ["{}"]
    with pytest.raises(InputError, match="type some text"):
        text_query(model, "   ")
    model.modalities.discard(Modality.TEXT)
    with pytest.raises(InputError, match="no text encoder"):
        text_query(model, "wetland")


def test_photo_dsm_and_gps_queries(fx, tmp_path):
    model = fx.FakeModel(8)
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"x" * 13)
    np.testing.assert_allclose(photo_query(model, photo).vector(), _onehot(13 % 8), atol=1e-7)
    with pytest.raises(InputError, match="does not exist"):
        photo_query(model, tmp_path / "missing.jpg")
    heights = np.arange(16.0).reshape(4, 4)
    q = dsm_query(model, heights)
    assert model.calls[-1] == ("dsm", (1, 1, 4, 4))
    np.testing.assert_allclose(q.vector()[:2], fx.unit([1.0, heights.std()]), atol=1e-6)
    with pytest.raises(InputError, match="all nodata"):
        dsm_query(model, np.full((4, 4), np.nan))
    with pytest.raises(InputError, match="infinite"):
        dsm_query(model, np.where(heights > 3, heights, np.inf))
    with pytest.raises(InputError, match="2-D"):
        dsm_query(model, np.ones(5))
    g = gps_query(model, 55.7, 13.2).vector()
    np.testing.assert_allclose(g, model.encode_gps([55.7], [13.2])[0], atol=1e-6)
    with pytest.raises(InputError, match="latitude"):
        gps_query(model, 95.0, 0.0)


def test_dsm_patch_is_resampled_to_the_encoder_size(fx):
    model = fx.FakeModel(8)
    model.spec = lambda modality: SimpleNamespace(preprocess=SimpleNamespace(size=4))
    heights = np.kron(np.arange(4.0).reshape(2, 2), np.ones((4, 4)))  # 8x8 in 2x2 blocks
    q = dsm_query(model, heights)
    assert model.calls[-1] == ("dsm", (1, 1, 4, 4))
    assert q.terms[0].description == "dsm patch 8x8"
    small = np.kron(np.arange(4.0).reshape(2, 2), np.ones((2, 2)))  # the same field at 4x4
    np.testing.assert_allclose(q.vector(), dsm_query(model, small).vector(), atol=1e-7)
    dsm_query(model, np.arange(9.0).reshape(3, 3))  # upsampled
    assert model.calls[-1] == ("dsm", (1, 1, 4, 4))


def test_combine_weights_and_negative_queries(fx):
    a = Query().add(_onehot(0), description="a")
    b = Query().add(_onehot(1), description="b").add(_onehot(2), 3.0)
    c = combine(a, b, weights=[2.0, -1.0])
    want = fx.unit(2 * _onehot(0) - fx.unit(_onehot(1) + 3 * _onehot(2)))
    np.testing.assert_allclose(c.vector(), want, atol=1e-6)
    assert [t.negative for t in c.terms] == [False, True]
    assert c.description() == "2×a − (b + 3×vector)"
    np.testing.assert_allclose(combine(a).vector(), _onehot(0), atol=1e-7)
    with pytest.raises(InputError):
        combine(a, b, weights=[1.0])
    with pytest.raises(InputError):
        combine(a, b, weights=[1.0, 0.0])
    with pytest.raises(InputError):
        combine()
