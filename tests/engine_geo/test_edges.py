"""Raster edges: edge tiles read shifted inside, outputs drawn inside the raster's outline, and
queries that skip tiles with much no data (issue 15: heatmap cells ran ~140 m past the raster and
left ~130 m uncovered; top hits gathered on part-empty edge tiles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from engine.cli.main import main as cli_main
from engine.geo.render import render_for
from engine.raster.batch import edge_shift
from engine.store import open_store
from engine.store.window import restrict_nodata
from tests.reliability.conftest import random_uint8, write_raster

# the analytic bundle: 16-px tiles at 10 m, so 160 m cells; a raster 5 px off the lattice
OFF = 50.0


def _raster(tmp_path: Path, size: int = 100, nodata_cols: int = 0) -> Path:
    from affine import Affine

    data = random_uint8(size=size, seed=7)
    if nodata_cols:
        data[:, :, :nodata_cols] = 0
    t = Affine(10.0, 0, 500_000.0 + OFF, 0, -10.0, 5_000_000.0 - OFF)
    return write_raster(tmp_path / "r.tif", data, transform=t, nodata=0 if nodata_cols else None)


def _embed(src: Path, bundle: Path, out: Path, *extra: str) -> None:
    assert cli_main(["embed", str(src), "--model", str(bundle), "--out", str(out), *extra]) == 0


def test_edge_shift_moves_whole_pixels_inside():
    box = (100.0, 100.0, 900.0, 900.0)
    assert edge_shift((50.0, 200.0, 210.0, 360.0), box, 10.0) == (100.0, 200.0, 260.0, 360.0)
    # x overhangs by 60 m (moves); y by 110 m, more than half the tile: it would land on its
    # neighbour's chip, so that axis stays (the cell is skipped and drawn from the neighbour)
    assert edge_shift((800.0, 850.0, 960.0, 1010.0), box, 10.0) == (740.0, 850.0, 900.0, 1010.0)
    assert edge_shift((95.0, 200.0, 255.0, 360.0), box, 10.0) == (105.0, 200.0, 265.0, 360.0)
    inside = (200.0, 200.0, 360.0, 360.0)
    assert edge_shift(inside, box, 10.0) == inside
    # a box narrower than the tile: that axis stays
    assert edge_shift((50.0, 200.0, 210.0, 360.0), (100.0, 0.0, 150.0, 900.0), 10.0)[0] == 50.0


def test_edge_tiles_are_full_chips_and_every_cell_is_covered(analytic_bundle, tmp_path):
    src = _raster(tmp_path)
    _embed(src, analytic_bundle, tmp_path / "s.store")
    store = open_store(tmp_path / "s.store")
    # 1000 m raster, 50 m off a 160 m lattice: 7 x 7 cells, the outer ring hangs over the edge
    assert store.grid.shape == (7, 7)
    assert store.valid.all()
    np.testing.assert_array_equal(np.asarray(store.nodata), 0.0)


def test_edge_cells_get_the_same_chip_whatever_the_extent(analytic_bundle, tmp_path):
    src = _raster(tmp_path)
    _embed(src, analytic_bundle, tmp_path / "all.store")
    # only the western half: its edge cells on the raster's west side must not change
    _embed(
        src, analytic_bundle, tmp_path / "west.store", "--extent", "500050,4999050,500450,4999950"
    )
    full, west = open_store(tmp_path / "all.store"), open_store(tmp_path / "west.store")
    dc = west.grid.col0 - full.grid.col0
    dr = west.grid.row0 - full.grid.row0
    a = np.asarray(full.embeddings)[dr : dr + west.grid.rows, dc : dc + 1]
    np.testing.assert_array_equal(a, np.asarray(west.embeddings)[:, :1])


def test_heatmap_is_drawn_inside_the_raster(analytic_bundle, tmp_path):
    src = _raster(tmp_path)
    _embed(src, analytic_bundle, tmp_path / "s.store")
    out = tmp_path / "h.tif"
    argv = ["heatmap", str(tmp_path / "s.store"), "--model", str(analytic_bundle)]
    assert cli_main([*argv, "--text", "blue", "--out", str(out)]) == 0
    ds = gdal.Open(str(out))
    x0, px, _, y1, _, py = ds.GetGeoTransform()
    x1, y0 = x0 + px * ds.RasterXSize, y1 + py * ds.RasterYSize
    # the raster spans 500050..501050 and 4998950..4999950: the output at most one pixel past
    assert px == 20.0 and -py == 20.0  # 160 m cells drawn as 8 x 8 pixels of the 10 m source
    assert 500050 - px <= x0 <= 500050 and 501050 <= x1 <= 501050 + px
    assert 4998950 - px <= y0 <= 4998950 and 4999950 <= y1 <= 4999950 + px
    cos = ds.GetRasterBand(1).ReadAsArray()
    # every pixel whose centre is inside the raster has a score, the others none
    xs = x0 + (np.arange(ds.RasterXSize) + 0.5) * px
    ys = y1 - (np.arange(ds.RasterYSize) + 0.5) * px
    inside = ((xs > 500050) & (xs < 501050))[None, :] & ((ys > 4998950) & (ys < 4999950))[:, None]
    assert np.isfinite(cos[inside]).all() and np.isnan(cos[~inside]).all()
    assert np.nanmax(np.abs(cos)) <= 1.0


@pytest.fixture()
def good_store(analytic_bundle, tmp_path) -> Path:
    """64 x 64 px on the lattice: every cell full."""
    src = write_raster(tmp_path / "good.tif", random_uint8())
    _embed(src, analytic_bundle, tmp_path / "good.store")
    return tmp_path / "good.store"


def test_a_store_that_fills_its_cells_keeps_one_pixel_per_tile(good_store):
    assert render_for(open_store(good_store)) is None


def test_tiles_with_much_no_data_are_skipped_by_queries(analytic_bundle, tmp_path):
    """A no-data collar inside the raster: those tiles are embedded but never win by default."""
    src = _raster(tmp_path, nodata_cols=35)  # the western 350 m hold no data
    _embed(src, analytic_bundle, tmp_path / "s.store")  # tiles up to half empty are embedded
    store = open_store(tmp_path / "s.store")
    frac = np.asarray(store.nodata, dtype=np.float32)
    partial = (frac > 0.25) & store.valid
    assert partial.any()
    view = restrict_nodata(store)  # the default threshold, 0.25
    assert not (view.valid & partial).any() and view.valid.sum() == (store.valid & ~partial).sum()
    assert restrict_nodata(store, 1.0) is store
    hits = tmp_path / "hits.gpkg"
    argv = ["hits", str(tmp_path / "s.store"), "--model", str(analytic_bundle), "--text", "blue"]
    assert cli_main([*argv, "--k", "64", "--out", str(hits)]) == 0
    rows = _hit_cells(hits)
    assert rows and not any(partial[r, c] for r, c in rows)
    assert cli_main([*argv, "--k", "64", "--max-nodata", "1", "--out", str(hits)]) == 0
    assert any(partial[r, c] for r, c in _hit_cells(hits))


def _hit_cells(path: Path) -> list[tuple[int, int]]:
    from osgeo import ogr

    ds = ogr.Open(str(path))
    return [(f.GetField("row"), f.GetField("col")) for f in ds.GetLayer(0)]


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "nan"])
def test_max_nodata_out_of_range_is_refused(bad, analytic_bundle, good_store, capsys):
    argv = ["heatmap", str(good_store), "--model", str(analytic_bundle), "--text", "blue"]
    assert cli_main([*argv, "--max-nodata", bad, "--out", "/tmp/never.tif"]) == 2
    assert "max_nodata must be a fraction" in capsys.readouterr().err
    assert not Path("/tmp/never.tif").exists()
