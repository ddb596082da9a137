"""Vector export (GeoPackage, GeoJSON in WGS84, Shapefile) and the band-mismatch messages."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import CRS, Transformer

from engine.errors import InputError, RasterInputError
from engine.geo.vector import shapefile_field_names, to_wgs84, write_vector
from engine.raster.bands import resolve_bands

UTM = "EPSG:26914"
PTS = [(487_000.0, 5_206_000.0), (488_500.5, 5_207_250.25)]


def _points():
    return [shapely.to_wkb(shapely.Point(x, y)) for x, y in PTS]


def _fields():
    return {
        "rank": np.array([1, 2], np.int32),
        "score": np.array([0.5, 0.25]),
        "percentile": np.array([99.0, 50.0]),
        "unigeo_embedding": np.array(["[1, 0]", "[0, 1]"], dtype=object),
        "unigeo_n_tiles": np.array([3, 0], np.int32),
    }


def test_geojson_is_rfc7946_wgs84(tmp_path):
    out = write_vector(
        tmp_path / "h.geojson",
        _points(),
        _fields(),
        UTM,
        geometry_type="Point",
        provenance={"query": "text 'wetlands'"},
    )
    doc = json.loads(out.read_text())
    assert "crs" not in doc  # RFC 7946: WGS84 implied, no crs member
    assert json.loads(doc["description"])["UNIGEO_QUERY"] == "text 'wetlands'"
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(
        *zip(*PTS, strict=True)
    )
    got = np.array([f["geometry"]["coordinates"] for f in doc["features"]])
    np.testing.assert_allclose(got[:, 0], lon, atol=1e-7)
    np.testing.assert_allclose(got[:, 1], lat, atol=1e-7)
    assert -100 < got[0, 0] < -98 and 46 < got[0, 1] < 48  # North Dakota, lon first
    assert CRS.from_user_input(pyogrio.read_info(out)["crs"]).to_epsg() == 4326
    assert [f["properties"]["rank"] for f in doc["features"]] == [1, 2]


def test_geojson_polygons_and_already_wgs84(tmp_path):
    box = shapely.box(487_000, 5_206_000, 487_640, 5_206_640)
    out = write_vector(
        tmp_path / "p.json", [shapely.to_wkb(box)], {"rank": np.array([1])}, UTM,
        geometry_type="Polygon",
    )  # fmt: skip
    ring = np.array(json.loads(out.read_text())["features"][0]["geometry"]["coordinates"][0])
    assert ring.shape == (5, 2) and np.all((ring[:, 0] < -98) & (ring[:, 1] > 46))
    wgs = to_wgs84([shapely.to_wkb(shapely.Point(-99.1, 47.0))], "EPSG:4326")
    assert shapely.from_wkb(wgs[0]).coords[0] == pytest.approx((-99.1, 47.0))


def test_geojson_refuses_positions_without_wgs84(tmp_path):
    far = [shapely.to_wkb(shapely.Point(1e12, 1e12))]
    with pytest.raises(InputError, match="no WGS84 position.*gpkg or .shp"):
        write_vector(tmp_path / "x.geojson", far, {"a": np.array([1])}, UTM, geometry_type="Point")
    assert list(tmp_path.iterdir()) == []


def test_shapefile_round_trip_with_short_unique_names(tmp_path):
    out = write_vector(tmp_path / "hits.shp", _points(), _fields(), UTM, geometry_type="Point")
    names = {p.name for p in tmp_path.iterdir()}
    assert {"hits.shp", "hits.shx", "hits.dbf", "hits.prj", "hits.cpg"} <= names
    assert not [n for n in names if n.startswith(".")]  # the temporary folder is gone
    info = pyogrio.read_info(out)
    assert list(info["fields"]) == ["rank", "score", "percentile", "unigeo_emb", "unigeo_n_t"]
    assert CRS.from_user_input(info["crs"]).to_epsg() == 26914 and info["features"] == 2
    _, _, geoms, fields = pyogrio.raw.read(out)
    assert shapely.from_wkb(geoms[1]).coords[0] == pytest.approx(PTS[1])
    assert list(fields[0]) == [1, 2] and list(fields[3]) == ["[1, 0]", "[0, 1]"]


def test_shapefile_names_collide_after_cutting():
    names = shapefile_field_names(["unigeo_embedding", "unigeo_embedding2", "UNIGEO_EMB", "row"])
    assert names == ["unigeo_emb", "unigeo_e_1", "UNIGEO_E_2", "row"]
    assert all(len(n) <= 10 for n in names)


def test_shapefile_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "h.shp"
    write_vector(target, _points(), _fields(), UTM, geometry_type="Point")
    (tmp_path / "h.qix").write_bytes(b"stale index")
    write_vector(target, _points()[:1], {"rank": np.array([7])}, UTM, geometry_type="Point")
    assert pyogrio.read_info(target)["features"] == 1 and not (tmp_path / "h.qix").exists()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    from engine.geo import vector

    real = vector._write_ogr

    def half_then_fail(path, *a, **k):
        real(path, *a, **k)  # every part of the shapefile exists, then the writer fails
        raise RuntimeError("interrupted")

    monkeypatch.setattr(vector, "_write_ogr", half_then_fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_vector(target, _points(), _fields(), UTM, geometry_type="Point")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_unknown_vector_extension_names_every_format(tmp_path):
    with pytest.raises(InputError, match=r"\.gpkg, \.geojson or \.shp"):
        write_vector(tmp_path / "h.kml", _points(), {}, UTM, geometry_type="Point")
    assert list(tmp_path.iterdir()) == []


# -- band-mismatch messages (engine/raster/bands.py) -------------------------------------------------
RGBN = ("red", "green", "blue", "nir")


def _message(**kw) -> str:
    with pytest.raises(RasterInputError) as e:
        resolve_bands(RGBN, where="r.tif", **kw)
    return str(e.value)


def test_band_message_never_suggests_an_alpha_band_as_data():
    msg = _message(names=("band1", "band2", "band3", "band4", "band5", "alpha"), alpha=(6,))
    assert "5 data band(s)" in msg and "alpha (mask) band(s) [6]" in msg
    assert "--bands 1,2,3,4;" in msg and "BANDS" in msg and "bands=[1, 2, 3, 4]" in msg
    assert "6" not in msg.split("Pick")[1]


def test_band_message_rgb_plus_alpha_asks_whether_alpha_is_data():
    msg = _message(names=("red", "green", "blue", "alpha"), alpha=(4,))
    assert "3 data band(s)" in msg and "If a band marked alpha really holds data" in msg
    assert "--bands 1,2,3,4" in msg
    assert "cannot provide" in _message(names=("red", "green"))


def test_band_message_one_band_points_to_the_dsm_encoder():
    msg = _message(names=("band1",))
    assert "1 data band(s)" in msg and "MODALITY=dsm" in msg and "--modality dsm" in msg
    assert "--bands" not in msg


def test_band_selection_message_is_neutral():
    with pytest.raises(RasterInputError, match=r"band selection \[1, 2\] selects 2 band.*needs 4"):
        resolve_bands(RGBN, ("a",) * 4, explicit=[1, 2])
