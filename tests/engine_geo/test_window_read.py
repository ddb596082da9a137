"""Tests of the windowed read path: one read per block of tiles, native reads that skip the warper.

Every comparison is against the reference: ``GdalReader(fast=False).read_tile``, one
tile at a time through GDAL's warped VRT, which is what the engine did before windows.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from affine import Affine

from engine.embed.job import reader_threads
from engine.errors import RasterInputError
from engine.grid import TileGrid
from engine.model.contract import Preprocess
from engine.raster.batch import WINDOW_MAX_VALUES, read_batch, rectangles
from engine.raster.gdal_reader import GdalReader
from engine.raster.tiling import grid_for_raster
from tests.engine_geo.conftest import UTM_CRS, UTM_ORIGIN, write_tif

RGBN = ("red", "green", "blue", "nir")
RGB = ("red", "green", "blue")
NAIP = ("naip_north_dakota", "m_4709963_se_14_1_20190904.tif")


def pre(bands, size: int, gsd: float) -> Preprocess:
    n = len(bands)
    return Preprocess(size=size, bands=bands, mean=(0.0,) * n, std=(1.0,) * n, gsd_m=gsd)


def cells_of(grid: TileGrid) -> list[tuple[int, int]]:
    return [(r, c) for r in range(grid.rows) for c in range(grid.cols)]


def reference(path, grid: TileGrid, bands, cells, **kw) -> np.ndarray:
    """The old path: one warped read per tile."""
    with GdalReader(path, fast=False, **kw) as r:
        return np.stack(
            [
                r.read_tile(grid.tile_bounds(*c), grid.crs, grid.gsd, grid.tile_px, bands)
                for c in cells
            ]
        )


def windowed(path, grid: TileGrid, bands, cells, batch: int = 32, **kw) -> np.ndarray:
    """The new path, batch by batch as embed_raster reads."""
    with GdalReader(path, **kw) as r:
        parts = [
            read_batch(r, grid, bands, cells[k : k + batch])[0] for k in range(0, len(cells), batch)
        ]
    return np.concatenate(parts)


def plan(path, grid: TileGrid, **kw):
    with GdalReader(path, **kw) as r:
        return r._native_plan(grid.crs, grid.gsd, grid.tile_bounds(0, 0))


def assert_same(a: np.ndarray, b: np.ndarray, atol: float = 0.0) -> None:
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    if atol == 0.0:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, equal_nan=True)


@pytest.mark.parametrize("resampling", ["bilinear", "nearest", "average"])
def test_aligned_dsm_skips_the_warp_bitwise(shared_data, resampling):
    """Alexandria's DSM (EPSG:26918, 2 m, origin on the 2-m lattice): a plain windowed read.

    Grids with a stride below the tile and tiles over the raster edge and over no-data.
    """
    tif = shared_data / "alexandria_dsm" / "dsm.tif"
    kw = dict(scale=1.0, resampling=resampling)
    for stride in (16, 11):
        with GdalReader(tif, **kw) as r:
            grid = grid_for_raster(r, pre(("height",), 16, 2.0), stride_px=stride)
        p = plan(tif, grid, **kw)
        assert p is not None and (p.fx, p.fy) == (0.0, 0.0)
        cells = cells_of(grid)
        new, ref = (
            windowed(tif, grid, ("height",), cells, 23, **kw),
            reference(tif, grid, ("height",), cells, **kw),
        )
        assert_same(new, ref)
        assert np.isnan(new).any() and (~np.isnan(new)).any()  # the edge tiles reach outside


def test_shifted_naip_matches_the_warper(shared_data):
    """NAIP's 5-m pixels sit 0.8 px off the 5-m lattice: bilinear in numpy, as GDAL does.

    Tolerance: 1e-6 on [0, 1] values (GDAL's per-pixel transform may round the sub-pixel
    offset differently in its last bits); observed: bitwise equal.
    """
    tif = shared_data.joinpath(*NAIP)
    for stride in (64, 40):
        with GdalReader(tif) as r:
            grid = grid_for_raster(r, pre(RGBN, 64, 5.0), stride_px=stride)
        p = plan(tif, grid)
        assert p is not None and abs(p.fx - 0.2) < 1e-6 and abs(p.fy - 0.2) < 1e-6
        cells = cells_of(grid)[:: 3 if stride == 40 else 1]
        new, ref = windowed(tif, grid, RGBN, cells), reference(tif, grid, RGBN, cells)
        assert_same(new, ref, atol=1e-6)
        nan = np.isnan(new).reshape(len(cells), -1).mean(axis=1)
        assert ((nan > 0) & (nan < 1)).any() and (nan == 0).any()  # edge tiles and inner ones


def test_other_crs_goes_through_the_warper(shared_data):
    """A grid in another CRS than the raster: no native read; windows equal per-tile reads."""
    tif = shared_data.joinpath(*NAIP)
    with GdalReader(tif) as r:
        box = grid_for_raster(r, pre(RGBN, 64, 5.0)).bounds
    from rasterio.warp import transform_bounds

    box = transform_bounds("EPSG:26914", "EPSG:32614", *box)
    grid = TileGrid.for_extent("EPSG:32614", 5.0, 32, 24, box).subgrid(
        (box[0], box[1], box[0] + 2500, box[1] + 1500)
    )
    assert plan(tif, grid) is None
    cells = cells_of(grid)
    assert_same(windowed(tif, grid, RGBN, cells, 17), reference(tif, grid, RGBN, cells))


def test_epsg4326_rgba_warped_windows_equal_tiles(shared_data):
    """Swellendam RGBA in EPSG:4326 on its UTM grid: alpha masks, warped either way."""
    tif = shared_data / "swellendam" / "3320D_2010_315_RGB_LATLNG.tif"
    with GdalReader(tif) as r:
        grid = grid_for_raster(r, pre(RGB, 32, 0.0), stride_px=20)
    assert plan(tif, grid) is None
    cells = cells_of(grid)[::2]
    new, ref = windowed(tif, grid, RGB, cells, 40), reference(tif, grid, RGB, cells)
    assert_same(new, ref)
    assert np.isnan(new).any() and (~np.isnan(new)).any()  # the empty UTM corners


@pytest.mark.parametrize(
    ("shift", "resampling"),
    [((0, 0), "bilinear"), ((0.3, 0.7), "bilinear"), ((0.6, 0.5), "nearest")],
)
def test_native_nodata_semantics_match_gdal(tmp_path, shift, resampling):
    """No data as GDAL's warper sees it: a pixel is invalid only where every band is no data;
    bilinear drops invalid neighbours and renormalises; outside the file is invalid."""
    rng = np.random.default_rng(5)
    data = rng.integers(1, 255, (3, 60, 70)).astype(np.uint8)
    data[:, 10:20, 15:30] = 0  # a hole in every band
    data[0, 30:40, 30:40] = 0  # band 1 alone is 0 there: still valid data
    data[:, 45, 50] = 0
    x0, y0 = UTM_ORIGIN[0] + shift[0], UTM_ORIGIN[1] - shift[1]
    tif = write_tif(tmp_path / "s.tif", data, UTM_CRS, Affine(1, 0, x0, 0, -1, y0), nodata=0)
    with GdalReader(tif, resampling=resampling) as r:
        grid = grid_for_raster(r, pre(RGB, 16, 1.0), stride_px=12)
    assert grid.n_tiles >= 30
    cells = cells_of(grid)
    new = windowed(tif, grid, RGB, cells, 7, resampling=resampling)
    assert_same(new, reference(tif, grid, RGB, cells, resampling=resampling))
    assert plan(tif, grid, resampling=resampling) is not None
    assert 0 < np.isnan(new).mean() < 0.5


def test_float_raster_with_nan_nodata(tmp_path):
    h = np.linspace(10, 50, 48 * 40, dtype=np.float32).reshape(1, 48, 40)
    h[:, 5:12, 5:12] = np.nan
    t = Affine(2, 0, UTM_ORIGIN[0] + 0.5, 0, -2, UTM_ORIGIN[1])
    tif = write_tif(tmp_path / "f.tif", h, UTM_CRS, t, nodata=float("nan"))
    with GdalReader(tif, scale=1.0) as r:
        grid = grid_for_raster(r, pre(("height",), 8, 2.0))
    assert plan(tif, grid, scale=1.0) is not None
    cells = cells_of(grid)
    new = windowed(tif, grid, ("height",), cells, scale=1.0)
    assert_same(new, reference(tif, grid, ("height",), cells, scale=1.0))
    assert np.isnan(new).any()


def test_tile_only_readers_still_work(utm_tif, geo_tif):
    """A reader without read_window (the plugin's QGIS-layer reader) is read tile by tile."""
    for path, bands, gsd in ((utm_tif, RGBN, 1.0), (geo_tif, RGB, 2.0)):
        with GdalReader(path) as r:
            grid = grid_for_raster(r, pre(bands, 16, gsd), stride_px=10)
            cells = cells_of(grid)[:50]
            tile_only = SimpleNamespace(read_tile=r.read_tile)
            a, na = read_batch(tile_only, grid, bands, cells)
            b, nb = read_batch(r, grid, bands, cells)
        assert_same(a, b)
        np.testing.assert_array_equal(na, nb)


def test_read_window_refuses_partial_pixels(utm_tif):
    with GdalReader(utm_tif) as r:
        box = (UTM_ORIGIN[0], UTM_ORIGIN[1] - 16, UTM_ORIGIN[0] + 16.5, UTM_ORIGIN[1])
        with pytest.raises(RasterInputError, match="whole number"):
            r.read_window(box, UTM_CRS, 1.0, RGBN)
        win = r.read_window(box[:2] + (box[2] - 0.5, box[3]), UTM_CRS, 1.0, RGBN)
        assert win.shape == (4, 16, 16) and win.dtype == np.float32


def test_rectangles_cover_each_cell_once():
    cells = [(r, c) for r in range(3, 8) for c in range(2, 9)][3:-4]  # ragged first/last rows
    rects = list(rectangles(cells, 14))
    seen = sorted(i for *_, members in rects for i, _, _ in members)
    assert seen == list(range(len(cells)))
    for r0, c0, nr, nc, members in rects:
        assert nr * nc == len(members) <= 14
        assert {(r, c) for _, r, c in members} == {
            (r0 + i, c0 + j) for i in range(nr) for j in range(nc)
        }
    assert max(nr for _, _, nr, _, _ in rects) > 1  # full rows are stacked into one window
    assert [len(m) for *_, m in rectangles([(0, c) for c in range(10)], 4)] == [4, 4, 2]
    assert WINDOW_MAX_VALUES * 4 <= 64 * 2**20  # a window stays within 64 MB of float32


def test_reader_threads_rule():
    def model(gpu: bool, threads: int):
        report = SimpleNamespace(is_gpu=gpu, threads=threads)
        return SimpleNamespace(provider_report=lambda: report)

    assert reader_threads(model(False, 2), cores=2) == 1
    assert reader_threads(model(False, 1), cores=2) == 1
    assert reader_threads(model(False, 4), cores=16) == 4
    assert reader_threads(model(True, 16), cores=16) >= 2  # a GPU leaves the CPU to readers
    assert reader_threads(SimpleNamespace(), cores=2) >= 1  # an encoder without a report


def test_embedding_through_windows_equals_the_old_path(shared_data, tmp_path):
    """embed_raster on real NAIP: the new reads give the store the old per-tile warps gave."""
    from engine.embed.job import embed_raster
    from engine.model.contract import Modality
    from tests.engine_geo.conftest import FakeModel

    tif = shared_data.joinpath(*NAIP)
    model = FakeModel(RGBN, 64, 5.0)
    with GdalReader(tif) as r:
        grid = grid_for_raster(r, model.spec(Modality.AERIAL).preprocess, stride_px=48)
        new = embed_raster(model, r, grid, tmp_path / "new", block_tiles=5, batch_size=9)
    with GdalReader(tif, fast=False) as r:
        old_reader = SimpleNamespace(  # tile by tile; bounds and crs: edge tiles shift alike
            read_tile=r.read_tile, fingerprint=r.fingerprint, scaling=r.scaling,
            bounds=r.bounds, crs=r.crs, res=r.res,
        )  # fmt: skip
        old = embed_raster(model, old_reader, grid, tmp_path / "old", block_tiles=5, workers=2)
    assert new.meta["workers"] == 1 and grid.n_tiles > 300  # FakeModel: 1 reader on any machine
    np.testing.assert_array_equal(new.valid, old.valid)
    np.testing.assert_array_equal(new.embeddings, old.embeddings)
    assert new.source_fingerprint != old.source_fingerprint  # the read path is part of it
