"""Tests of engine/grid.py: the anchored tile lattice (property tests with hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.grid import TileGrid

CRS = "EPSG:32633"

tile_px = st.sampled_from([8, 16, 32, 224])
gsd = st.sampled_from([0.3, 0.5, 1.0, 2.5, 10.0, 0.1 + 0.2])
origin = st.tuples(
    st.floats(-1e5, 1e5, allow_nan=False), st.floats(-1e5, 1e5, allow_nan=False)
) | st.just((0.0, 0.0))


@st.composite
def lattices(draw):
    """(gsd, tile_px, stride_px, origin)."""
    t = draw(tile_px)
    s = draw(st.integers(1, t))
    return draw(gsd), t, s, draw(origin)


@st.composite
def extents(draw, max_cells: float = 40.0):
    """A non-empty box in a UTM-like coordinate range, at most ``max_cells`` cells a side."""
    x0 = draw(st.floats(2e5, 8e5, allow_nan=False))
    y0 = draw(st.floats(0, 9e6, allow_nan=False))
    w = draw(st.floats(0.001, max_cells))
    h = draw(st.floats(0.001, max_cells))
    return (x0, y0, w, h)


def _box(lat, ext) -> tuple[float, float, float, float]:
    """The extent ``(x0, y0, w, h)`` (w, h in cells of the lattice) as a box in CRS units."""
    g, _, s, _ = lat
    x0, y0, w, h = ext
    return (x0, y0, x0 + w * s * g, y0 + h * s * g)


def _grid(lat, box) -> TileGrid:
    g, t, s, o = lat
    return TileGrid.for_extent(CRS, g, t, s, box, origin=o)


def _tol(g: TileGrid) -> float:
    return 1e-6 * g.cell_size + 1e-9 * max(abs(v) for v in g.bounds)


@settings(max_examples=150, deadline=None)
@given(lattices(), extents())
def test_cells_cover_the_extent_without_gaps_or_extra(lat, ext):
    box = _box(lat, ext)
    g = _grid(lat, box)
    tol = _tol(g)
    gx0, gy0, gx1, gy1 = g.bounds
    assert gx0 <= box[0] + tol and gy0 <= box[1] + tol
    assert gx1 >= box[2] - tol and gy1 >= box[3] - tol
    # no extra row or column: the outer cells reach into the extent
    assert gx0 + g.cell_size > box[0] - tol and gx1 - g.cell_size < box[2] + tol
    assert gy0 + g.cell_size > box[1] - tol and gy1 - g.cell_size < box[3] + tol
    # neighbouring cells share edges (no gaps, no overlaps)
    if g.cols > 1:
        assert math.isclose(g.cell_bounds(0, 0)[2], g.cell_bounds(0, 1)[0], abs_tol=tol)
    if g.rows > 1:
        assert math.isclose(g.cell_bounds(0, 0)[1], g.cell_bounds(1, 0)[3], abs_tol=tol)


@settings(max_examples=150, deadline=None)
@given(lattices(), extents(), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_sub_extent_selects_the_same_tiles(lat, ext, a, b, c, d):
    box = _box(lat, ext)
    full = _grid(lat, box)
    x0, y0, x1, y1 = box
    sx0, sx1 = sorted((x0 + a * (x1 - x0), x0 + b * (x1 - x0)))
    sy0, sy1 = sorted((y0 + c * (y1 - y0), y0 + d * (y1 - y0)))
    if sx1 - sx0 < 1e-3 or sy1 - sy0 < 1e-3:
        return
    sub = _grid(lat, (sx0, sy0, sx1, sy1))
    assert sub.lattice_key() == full.lattice_key()
    # the sub-grid's tiles are tiles of the full grid, with identical footprints
    dr, dc = sub.row0 - full.row0, sub.col0 - full.col0
    assert 0 <= dr and dr + sub.rows <= full.rows and 0 <= dc and dc + sub.cols <= full.cols
    for r, c in [(0, 0), (sub.rows - 1, sub.cols - 1)]:
        assert sub.tile_bounds(r, c) == full.tile_bounds(r + dr, c + dc)
    assert full.subgrid(sub.bounds) == sub


@settings(max_examples=100, deadline=None)
@given(lattices(), extents())
def test_centers_and_cell_of_agree(lat, ext):
    g = _grid(lat, _box(lat, ext))
    xs, ys = g.centers()
    assert xs.shape == ys.shape == g.shape
    for r in range(g.rows):
        for c in range(g.cols):
            assert g.cell_of(float(xs[r, c]), float(ys[r, c])) == (r, c)
            assert np.allclose(g.tile_center(r, c), (xs[r, c], ys[r, c]))
    x0, y0, x1, y1 = g.bounds
    assert g.cell_of(x0 - g.cell_size / 2, y1 - g.cell_size / 2) is None
    assert g.cell_of(x1 + g.cell_size / 2, y0 + g.cell_size / 2) is None


@settings(max_examples=100, deadline=None)
@given(lattices(), extents(), st.integers(1, 7))
def test_blocks_cover_every_tile_once(lat, ext, block):
    g = _grid(lat, _box(lat, ext))
    seen = np.zeros(g.shape, int)
    for r0, c0, nr, nc in g.iter_blocks(block):
        assert 1 <= nr <= block and 1 <= nc <= block
        seen[r0 : r0 + nr, c0 : c0 + nc] += 1
    assert (seen == 1).all()


@settings(max_examples=100, deadline=None)
@given(lattices(), extents())
def test_geometry_is_consistent(lat, ext):
    g = _grid(lat, _box(lat, ext))
    gt = g.geotransform
    assert gt[1] == g.cell_size and gt[5] == -g.cell_size and gt[2] == gt[4] == 0
    assert (gt[0], gt[3]) == (g.bounds[0], g.bounds[3])
    tb, cb = g.tile_bounds(0, 0), g.cell_bounds(0, 0)
    assert math.isclose(tb[2] - tb[0], g.tile_size, rel_tol=1e-9, abs_tol=_tol(g))
    assert tb[0] <= cb[0] and tb[1] <= cb[1] and tb[2] >= cb[2] and tb[3] >= cb[3]
    # the cell is centred in its tile
    assert math.isclose((tb[0] + tb[2]) / 2, (cb[0] + cb[2]) / 2, abs_tol=_tol(g))
    assert TileGrid.from_dict(g.to_dict()) == g


def test_known_grid():
    g = TileGrid.for_extent(CRS, 1.0, 32, None, (500_000, 5_000_000, 500_100, 5_000_040))
    assert (g.row0, g.col0, g.rows, g.cols) == (-156_252, 15_625, 2, 4)
    assert g.bounds == (500_000.0, 5_000_000.0, 500_128.0, 5_000_064.0)
    o = TileGrid.for_extent(CRS, 1.0, 32, 16, (500_000, 5_000_000, 500_100, 5_000_040))
    assert o.tile_bounds(0, 0)[2] - o.tile_bounds(0, 0)[0] == 32 and o.cell_size == 16


def test_edges_on_cell_boundaries_add_no_tile():
    g = TileGrid.for_extent(CRS, 2.0, 16, None, (0.0, 0.0, 64.0, 32.0))
    assert g.shape == (1, 2) and g.bounds == (0.0, 0.0, 64.0, 32.0)


def test_bad_grids_are_refused():
    with pytest.raises(InputError, match="empty"):
        TileGrid.for_extent(CRS, 1.0, 8, None, (0, 0, 0, 10))
    with pytest.raises(InputError, match="not finite"):
        TileGrid.for_extent(CRS, 1.0, 8, None, (0, 0, math.inf, 10))
    with pytest.raises(InputError, match="tiles"):
        TileGrid.for_extent(CRS, 0.1, 8, None, (0, 0, 1e6, 1e6), max_tiles=1000)
    with pytest.raises(InputError, match="GSD"):
        TileGrid(CRS, 0.0, 8, 8, 0, 0, 1, 1)
    with pytest.raises(InputError, match="stride"):
        TileGrid(CRS, 1.0, 8, 9, 0, 0, 1, 1)
    with pytest.raises(InputError, match="tile-grid"):
        TileGrid.from_dict({"crs": CRS})


def test_subgrid_of_a_larger_box_clips_to_the_grid():
    g = TileGrid.for_extent(CRS, 1.0, 8, None, (0, 0, 80, 80))
    assert g.subgrid((-1e7, -1e7, 1e7, 1e7)) == g
    assert g.subgrid((1000, 1000, 2000, 2000)).n_tiles == 0
    with pytest.raises(InputError, match="empty"):
        g.subgrid((10, 10, 10, 20))
