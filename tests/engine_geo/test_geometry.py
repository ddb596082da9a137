"""engine.geo.geometry: WKT/WKB/GeoJSON in, WKB out; clear errors; cell centres inside polygons.

shapely and pyproj are independent references here (tests only; the engine uses OGR/OSR).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from engine.errors import InputError
from engine.geo import geometry as G
from engine.grid import TileGrid

UTM = "EPSG:32633"
GRID = TileGrid(UTM, 10.0, 1, 1, 0, 0, 60, 70, 0.0, 600.0)  # 10 m cells, x 0..700, y 0..600


def _mask(grid, rows, cols):
    m = np.zeros(grid.shape, bool)
    m[rows, cols] = True
    return m


def _reference(grid, poly):
    xs, ys = grid.centers()
    return shapely.contains_xy(poly, xs, ys)


def test_every_input_form_gives_the_same_wkb():
    poly = shapely.Polygon([(0, 0), (10, 0), (10, 5), (0, 0)])
    want = G.to_wkb(poly.wkt)
    forms = [
        poly.wkb,
        bytearray(poly.wkb),
        memoryview(poly.wkb),
        poly.wkt,
        json.dumps(shapely.geometry.mapping(poly)),
        json.dumps({"type": "Feature", "geometry": shapely.geometry.mapping(poly)}),
        poly,  # __geo_interface__
        "Polygon ((0 0, 10 0, 10 5, 0 0))",  # QGIS's spelling
        "PolygonZ ((0 0 1, 10 0 1, 10 5 1, 0 0 1))",  # QGIS's 3-D spelling
        "MultiPolygonZM (((0 0 1 2, 10 0 1 2, 10 5 1 2, 0 0 1 2)))",
    ]
    for form in forms:
        got = shapely.from_wkb(G.polygon_wkb(form))
        assert got.equals(poly) and not got.has_z, form
    assert shapely.from_wkb(want).equals(poly)
    assert G.point_wkb(1.5, -2) == shapely.to_wkb(shapely.Point(1.5, -2), byte_order=1)
    assert shapely.from_wkb(G.box_wkb(0, 1, 2, 3)).equals(shapely.box(0, 1, 2, 3))
    assert G.bounds(G.box_wkb(0, 1, 2, 3)) == (0.0, 1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    ("geom", "message"),
    [
        ("", "not a readable geometry"),
        (b"", "not a readable geometry"),
        ("garbage", "not a readable geometry"),
        (b"\x01\x02", "not a readable geometry"),
        ("POLYGON EMPTY", "non-empty polygon, got an empty geometry"),
        (shapely.Polygon(), "non-empty polygon, got an empty geometry"),
        ("POINT (1 2)", "non-empty polygon, got a Point"),
        ("LINESTRING (0 0, 1 1)", "non-empty polygon, got a LineString"),
        ("POLYGON ((0 0, 1 1, 2 2, 0 0))", "has no area"),
        (struct.pack("<BIII8d", 1, 3, 1, 4, np.nan, 0, 1, 0, 1, 1, np.nan, 0), "non-finite"),
        (42, "must be WKT, WKB or GeoJSON, got a int"),
    ],
)
def test_bad_polygons_get_one_clear_error(geom, message):
    with pytest.raises(InputError, match=message) as e:
        G.polygon_wkb(geom, what="the region")
    assert str(e.value).startswith("the region ")


def test_invalid_polygons_are_repaired_and_transforms_match_pyproj():
    bowtie = "POLYGON ((0 0, 10 10, 10 0, 0 10, 0 0))"
    fixed = shapely.from_wkb(G.make_valid(bowtie))
    assert fixed.is_valid and fixed.area == pytest.approx(50.0)
    ring = [(500_000.0, 5_000_000.0), (500_300.0, 5_000_000.0), (500_300.0, 5_000_200.0)]
    wgs = shapely.from_wkb(G.transform(shapely.Polygon(ring).wkt, UTM, "EPSG:4326"))
    tr = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    want = np.column_stack(tr.transform(*np.array(ring + ring[:1]).T))
    np.testing.assert_allclose(shapely.get_coordinates(wgs), want, atol=1e-9)
    assert 14 < want[0, 0] < 16  # longitude first
    with pytest.raises(InputError, match="cannot be transformed"):
        G.transform("POINT (1e12 1e12)", UTM, "EPSG:4326")


def test_union_of_overlapping_and_separate_polygons():
    a, b = shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3)
    c = shapely.box(10, 10, 11, 11)
    got = shapely.from_wkb(G.union([a.wkb, b.wkt, c]))
    assert got.equals(shapely.union_all([a, b, c]))
    assert got.area == pytest.approx(8.0)
    with pytest.raises(InputError, match="no polygon to unite"):
        G.union([])


def test_cells_inside_boxes_holes_and_boundaries():
    # edges on cell boundaries, on cell centres, and a hole
    for box in [(0, 0, 100, 100), (5, 5, 95, 95), (5, 0, 100, 100), (15, 15, 16, 16)]:
        rows, cols = G.cells_inside(GRID, G.box_wkb(*box))
        np.testing.assert_array_equal(_mask(GRID, rows, cols), _reference(GRID, shapely.box(*box)))
    donut = shapely.box(100, 100, 400, 400).difference(shapely.box(200, 200, 300, 300))
    rows, cols = G.cells_inside(GRID, donut.wkb)
    assert len(rows) == 900 - 100
    np.testing.assert_array_equal(_mask(GRID, rows, cols), _reference(GRID, donut))
    assert list(zip(rows, cols, strict=True)) == sorted(zip(rows, cols, strict=True))  # row-major
    off = G.cells_inside(GRID, G.box_wkb(-500, -500, -400, -400))
    assert off[0].size == 0 and off[1].size == 0
    whole = G.cells_inside(GRID, G.box_wkb(-1e6, -1e6, 1e6, 1e6))
    assert whole[0].size == GRID.n_tiles


def test_cells_inside_a_polygon_given_in_another_crs():
    grid = TileGrid(UTM, 10.0, 1, 1, 0, 0, 40, 40, 500_000.0, 5_000_400.0)
    x0, y0, x1, y1 = grid.bounds
    tr = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    ring = [(x0 + 53, y0 + 41), (x0 + 301, y0 + 77), (x0 + 222, y0 + 355), (x0 + 31, y0 + 299)]
    wgs = shapely.Polygon([tr.transform(x, y) for x, y in ring])
    rows, cols = G.cells_inside(grid, wgs.wkt, "EPSG:4326")
    back = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    ref = shapely.Polygon([back.transform(*p) for p in wgs.exterior.coords])
    np.testing.assert_array_equal(_mask(grid, rows, cols), _reference(grid, ref))
    assert 500 < len(rows) < 900


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 14),
    st.floats(40, 300),
    st.floats(0, 700),
    st.floats(0, 600),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_cells_inside_matches_shapely_on_random_star_polygons(n, radius, cx, cy, snap, rnd):
    """Valid star-shaped polygons, some with vertices snapped onto cell centres and edges."""
    ang = np.sort([rnd.uniform(0, 2 * np.pi) for _ in range(n)])
    r = np.array([rnd.uniform(0.3, 1.0) * radius for _ in range(n)])
    pts = np.c_[cx + r * np.cos(ang), cy + r * np.sin(ang)]
    if snap:
        pts = np.round(pts / 5) * 5
    poly = shapely.Polygon(pts)
    if not poly.is_valid or poly.area == 0:
        return
    rows, cols = G.cells_inside(GRID, poly.wkb)
    np.testing.assert_array_equal(_mask(GRID, rows, cols), _reference(GRID, poly))
