"""Property-based tests (hypothesis, bounded) that the per-module suites do not already hold.

Already covered elsewhere and not repeated here: grid coverage, sub-extent invariance,
``cell_of``/centres, blocks and geometry (tests/engine_geo/test_grid.py); calibrate's bounds,
monotonicity, ties and NaN (tests/engine_query/test_similarity.py); Equal Earth on fixed lines
and against pyproj (tests/training/test_gps.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyproj import Transformer

from engine.grid import TileGrid
from engine.model.preprocess import validate_latlon
from engine.raster.tiling import choose_grid_crs
from engine.search.calibration import calibrate

FAST = settings(max_examples=60, deadline=None)
lats = st.floats(-84.0, 84.0, allow_nan=False)  # UTM's range
lons = st.floats(-179.999, 179.999, allow_nan=False)


@st.composite
def grids(draw) -> TileGrid:
    """A grid of at most 12 x 12 tiles on a random lattice in a random UTM zone."""
    zone = draw(st.integers(1, 60))
    north = draw(st.booleans())
    tile = draw(st.sampled_from([8, 16, 32]))
    stride = draw(st.integers(1, tile))
    gsd = draw(st.sampled_from([0.5, 1.0, 2.5, 10.0]))
    x0 = draw(st.floats(3e5, 6.5e5))
    y0 = draw(st.floats(1e5, 8e6))
    w, h = draw(st.floats(0.01, 12)), draw(st.floats(0.01, 12))
    s = stride * gsd
    crs = f"EPSG:{(32600 if north else 32700) + zone}"
    return TileGrid.for_extent(crs, gsd, tile, stride, (x0, y0, x0 + w * s, y0 + h * s))


@FAST
@given(grids(), st.floats(0.01, 0.99))
def test_two_halves_of_an_extent_hold_the_tiles_of_the_whole(g, f):
    """Splitting an extent anywhere gives two grids whose tiles together are the whole's."""
    x0, y0, x1, y1 = g.bounds
    cut = x0 + f * (x1 - x0)
    left, right = g.subgrid((x0, y0, cut, y1)), g.subgrid((cut, y0, x1, y1))

    def cells(sub: TileGrid) -> set[tuple[int, int]]:
        return {(sub.row0 + r, sub.col0 + c) for r in range(sub.rows) for c in range(sub.cols)}

    whole = cells(g)
    assert cells(left) | cells(right) == whole
    assert len(cells(left) & cells(right)) <= g.rows  # only the column the cut runs through


@FAST
@given(grids())
def test_neighbouring_cells_abut_without_gap_or_overlap(g):
    for r in range(g.rows):
        for c in range(g.cols - 1):
            a, b = g.cell_bounds(r, c), g.cell_bounds(r, c + 1)
            assert math.isclose(a[2], b[0], rel_tol=0, abs_tol=1e-6)
    for r in range(g.rows - 1):
        a, b = g.cell_bounds(r, 0), g.cell_bounds(r + 1, 0)
        assert math.isclose(a[1], b[3], rel_tol=0, abs_tol=1e-6)


@FAST
@given(grids())
def test_tile_centres_round_trip_through_wgs84(g):
    xs, ys = (np.asarray(v, np.float64).ravel() for v in g.centers())
    fwd = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    inv = Transformer.from_crs("EPSG:4326", g.crs, always_xy=True)
    # lists, not arrays: pyproj warns on one-element arrays with numpy >= 1.25
    lon, lat = map(np.asarray, fwd.transform(xs.tolist(), ys.tolist()))
    assert np.isfinite(lon).all() and (np.abs(lat) <= 90).all()
    bx, by = map(np.asarray, inv.transform(lon.tolist(), lat.tolist()))
    np.testing.assert_allclose(bx, xs, rtol=0, atol=1e-3)  # 1 mm
    np.testing.assert_allclose(by, ys, rtol=0, atol=1e-3)


@FAST
@given(grids())
def test_grid_serialisation_keeps_every_tile(g):
    back = TileGrid.from_dict(g.to_dict())
    assert back == g and back.lattice_key() == g.lattice_key()
    assert back.geotransform == g.geotransform


@dataclass
class _BoxReader:
    """Just what choose_grid_crs reads from a RasterReader."""

    crs: str
    bounds: tuple[float, float, float, float]


@FAST
@given(lats, lons, st.floats(0.001, 0.5))
def test_geographic_rasters_are_tiled_in_the_utm_zone_of_their_centre(lat, lon, half):
    assume(-180 < lon - half and lon + half < 180 and 1e-6 < abs(lat) and abs(lat) + half < 84)
    wkt = Transformer.from_crs("EPSG:4326", "EPSG:4326").source_crs.to_wkt()
    crs = choose_grid_crs(_BoxReader(wkt, (lon - half, lat - half, lon + half, lat + half)))
    code = int(crs.split(":")[1])
    zone = code % 100
    assert code // 100 == (326 if lat >= 0 else 327)
    assert (zone - 1) * 6 - 180 - 1e-6 <= lon <= zone * 6 - 180 + 1e-6


@FAST
@given(
    arrays(np.float32, st.integers(2, 50), elements=st.floats(-1, 1, width=32)),
    st.sampled_from(["cube", "affine", "tanh"]),
)
def test_calibrate_depends_only_on_the_order_of_scores(scores, how):
    """Percentiles are ranks: a strictly increasing map of the scores changes nothing."""
    f = {"cube": lambda v: v**3, "affine": lambda v: 3 * v + 1, "tanh": np.tanh}[how]
    mapped = f(scores.astype(np.float64))
    # the map must stay strictly increasing after float32 rounding for the property to apply
    order = np.argsort(scores, kind="stable")
    assume(np.all(np.diff(mapped[order]) > 0) or np.unique(scores).size < scores.size)
    assume(np.array_equal(np.unique(scores).size, np.unique(mapped.astype(np.float32)).size))
    np.testing.assert_allclose(calibrate(mapped.astype(np.float32)), calibrate(scores), atol=1e-4)


@FAST
@given(arrays(np.float32, st.integers(1, 50), elements=st.floats(-1, 1, width=32)), st.randoms())
def test_calibrate_commutes_with_shuffling(scores, rnd):
    perm = np.arange(scores.size)
    rnd.shuffle(perm)
    np.testing.assert_array_equal(calibrate(scores[perm]), calibrate(scores)[perm])


@FAST
@given(st.lists(st.tuples(st.floats(-90, 90), st.floats(-1e4, 1e4)), min_size=1, max_size=20))
def test_longitudes_wrap_into_one_turn(pts):
    lat, lon = np.array(pts).T
    la, lo = validate_latlon(lat, lon)
    assert (lo >= -180).all() and (lo <= 180).all()
    turns = (lon - lo.astype(np.float64)) / 360.0
    np.testing.assert_allclose(turns, np.round(turns), atol=1e-4)
    np.testing.assert_allclose(la, lat.astype(np.float32))


torch = pytest.importorskip("torch")


@FAST
@given(st.lists(st.tuples(st.floats(-90, 90), st.floats(-180, 180)), min_size=2, max_size=40))
def test_equal_earth_on_random_points(pts):
    """Finite, inside [-1, 1]², odd in lon and lat, and order-preserving along each axis."""
    from training.models.gps import equal_earth

    p = torch.tensor(pts, dtype=torch.float64)
    xy = equal_earth(p)
    assert torch.isfinite(xy).all() and xy.abs().max() <= 1 + 1e-9
    mirrored = equal_earth(-p)
    assert torch.allclose(mirrored, -xy, atol=1e-12)
    # y depends on latitude alone and grows with it; x grows with lon at a fixed latitude
    lat, lon = p[:, 0], p[:, 1]
    y = xy[:, 1]
    i, j = torch.triu_indices(len(pts), len(pts), 1)
    up = lat[i] < lat[j]
    assert (y[i][up] <= y[j][up]).all()
    far = lat[j] - lat[i] > 1e-6  # strictly, where float64 can tell the points apart
    assert (y[i][far] < y[j][far]).all()
    same_lat = torch.stack([lat[:1].expand_as(lon), lon], -1)
    x = equal_earth(same_lat)[:, 0]
    right = lon[i] < lon[j]
    assert (x[i][right] <= x[j][right]).all()
    far = lon[j] - lon[i] > 1e-6  # Equal Earth is flat-polar: true even at the poles
    assert (x[i][far] < x[j][far]).all()
