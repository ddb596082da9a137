"""Tests of engine/raster/gdal_reader.py: chips land where they should, bands map, bad input is refused."""

from __future__ import annotations

import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from engine.errors import RasterInputError
from engine.grid import TileGrid
from engine.model.contract import Preprocess
from engine.raster.bands import resolve_bands
from engine.raster.gdal_reader import GdalReader, close_all_readers
from engine.raster.tiling import choose_grid_crs, grid_for_raster, raster_gsd_m
from tests.engine_geo.conftest import (
    GEO_ORIGIN,
    GEO_REGION_PX,
    GEO_RES,
    REGION_PX,
    UTM_CRS,
    UTM_ORIGIN,
    region_value,
    write_tif,
)

RGBN = ("red", "green", "blue", "nir")
RGB = ("red", "green", "blue")


def utm_region_box(i: int, j: int, size: int = 16, gsd: float = 1.0) -> tuple:
    """A size*gsd square centred in region (i, j) of the UTM fixture."""
    cx = UTM_ORIGIN[0] + (j + 0.5) * REGION_PX
    cy = UTM_ORIGIN[1] - (i + 0.5) * REGION_PX
    h = size * gsd / 2
    return (cx - h, cy - h, cx + h, cy + h)


def expected(i: int, j: int, bands=(1, 2, 3, 4)) -> np.ndarray:
    return np.array([region_value(i, j, b) for b in bands], np.float32) / 255.0


def pre(bands=RGBN, size=16, gsd=1.0) -> Preprocess:
    n = len(bands)
    return Preprocess(size=size, bands=bands, mean=(0.0,) * n, std=(1.0,) * n, gsd_m=gsd)


def test_utm_chips_hold_their_region_value(utm_tif):
    with GdalReader(utm_tif) as r:
        assert r.band_names == RGBN and r.scaling == "uint8/255"
        for i, j in [(0, 0), (1, 2), (2, 1), (0, 3)]:
            chip = r.read_tile(utm_region_box(i, j), UTM_CRS, 1.0, 16, RGBN)
            assert chip.shape == (4, 16, 16) and chip.dtype == np.float32
            np.testing.assert_allclose(
                chip, expected(i, j)[:, None, None].repeat(16, 1).repeat(16, 2), atol=1e-6
            )
        # coarser GSD, still inside one region: the same value
        chip = r.read_tile(utm_region_box(1, 1, 8, 4.0), UTM_CRS, 4.0, 8, ("nir", "red"))
        np.testing.assert_allclose(chip[:, 3, 3], expected(1, 1, (4, 1)), atol=1e-6)


def test_utm_nodata_and_outside_are_nan(utm_tif):
    with GdalReader(utm_tif) as r:
        chip = r.read_tile(utm_region_box(2, 3), UTM_CRS, 1.0, 16, RGBN)
        assert np.isnan(chip).all()
        # a tile straddling the left edge of the raster: its left 8 columns are outside
        x0, y0 = UTM_ORIGIN[0] - 8, UTM_ORIGIN[1] - 40
        chip = r.read_tile((x0, y0 - 16, x0 + 16, y0), UTM_CRS, 1.0, 16, RGBN)
        assert np.isnan(chip[:, :, :8]).all() and not np.isnan(chip[:, :, 8:]).any()
        np.testing.assert_allclose(chip[:, 0, 8], expected(0, 0), atol=1e-6)
        # entirely outside
        far = (UTM_ORIGIN[0] - 1000, UTM_ORIGIN[1] - 16, UTM_ORIGIN[0] - 984, UTM_ORIGIN[1])
        assert np.isnan(r.read_tile(far, UTM_CRS, 1.0, 16, RGBN)).all()


def test_epsg4326_raster_on_a_utm_grid(geo_tif):
    with GdalReader(geo_tif) as r:
        assert r.band_names == ("red", "green", "blue", "alpha")
        crs = choose_grid_crs(r)
        assert crs == "EPSG:32633"  # lon 15 E is zone 33's central meridian
        to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        for i, j in [(0, 0), (0, 2), (2, 1), (1, 1)]:
            lon = GEO_ORIGIN[0] + (j + 0.5) * GEO_REGION_PX * GEO_RES
            lat = GEO_ORIGIN[1] - (i + 0.5) * GEO_REGION_PX * GEO_RES
            x, y = to_utm.transform(lon, lat)
            g = TileGrid.for_extent(crs, 2.0, 16, None, (x - 0.1, y - 0.1, x + 0.1, y + 0.1))
            chip = r.read_tile(g.tile_bounds(0, 0), crs, 2.0, 16, RGB)
            if (i, j) == (1, 1):  # alpha = 0 there
                assert np.isnan(chip).all()
            else:
                np.testing.assert_allclose(chip[:, 8, 8], expected(i, j, (1, 2, 3)), atol=1e-5)
                assert not np.isnan(chip).any()


def test_band_mapping_by_name_order_and_index(geo_dir, utm_tif):
    data = np.stack([np.full((32, 32), v, np.uint8) for v in (40, 10, 20, 30)])
    t = Affine(1, 0, 500_000, 0, -1, 5_000_032)
    named = write_tif(
        geo_dir / "nrgb.tif", data, UTM_CRS, t, descriptions=("NIR", "Red", "G", "blue")
    )
    box = (500_008, 5_000_008, 500_024, 5_000_024)
    with GdalReader(named) as r:
        assert r.check_bands(RGBN) == [2, 3, 4, 1]
        np.testing.assert_allclose(
            r.read_tile(box, UTM_CRS, 1, 16, RGBN)[:, 0, 0], np.array([10, 20, 30, 40]) / 255
        )
    plain = write_tif(geo_dir / "plain.tif", data, UTM_CRS, t)
    with GdalReader(plain) as r:
        assert r.check_bands(RGBN) == [1, 2, 3, 4]  # unnamed: file order
    with GdalReader(plain, bands=[4, 2, 3]) as r:
        np.testing.assert_allclose(
            r.read_tile(box, UTM_CRS, 1, 16, RGB)[:, 5, 5], np.array([30, 10, 20]) / 255
        )
    assert resolve_bands(("x",), ("band1", "alpha"), alpha=(2,)) == [1]


def test_wrong_band_count_says_how_to_pick(geo_tif, utm_tif):
    with GdalReader(geo_tif) as r, pytest.raises(RasterInputError) as e:
        r.read_tile((0, 0, 16, 16), UTM_CRS, 1.0, 16, RGBN)
    msg = str(e.value)
    assert (
        "needs 4 band(s)" in msg and "3 data band(s)" in msg and "bands=[" in msg and "alpha" in msg
    )
    with (
        GdalReader(utm_tif, bands=[1, 2]) as r,
        pytest.raises(RasterInputError, match="selects 2"),
    ):
        r.check_bands(RGB)
    with pytest.raises(RasterInputError, match=r"1\.\.4"):
        GdalReader(utm_tif, bands=[5])


def test_bad_files_are_refused_clearly(geo_dir):
    t = Affine(1, 0, 500_000, 0, -1, 5_000_000)
    with pytest.raises(RasterInputError, match="does not exist"):
        GdalReader(geo_dir / "missing.tif")
    junk = geo_dir / "junk.tif"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(RasterInputError, match="not a raster"):
        GdalReader(junk)
    text = geo_dir / "notes.txt"
    text.write_text("hello, not a raster\n")
    with pytest.raises(RasterInputError, match="not a raster"):
        GdalReader(text)
    nocrs = write_tif(geo_dir / "nocrs.tif", np.ones((1, 8, 8), np.uint8), None, t)
    with pytest.raises(RasterInputError, match="no CRS"):
        GdalReader(nocrs)
    cplx = write_tif(geo_dir / "cplx.tif", np.ones((1, 8, 8), np.complex64), UTM_CRS, t)
    with pytest.raises(RasterInputError, match="unsupported data type complex64"):
        GdalReader(cplx)
    flat = write_tif(
        geo_dir / "flat.tif", np.ones((1, 8, 8), np.uint8), UTM_CRS, Affine(0, 0, 5, 0, 0, 5)
    )
    with pytest.raises(RasterInputError, match="degenerate"):
        GdalReader(flat)
    with pytest.raises(RasterInputError, match="scale"):
        GdalReader(_ok(geo_dir), scale="minmax")


def _ok(geo_dir):
    return write_tif(
        geo_dir / "ok.tif", np.ones((1, 8, 8), np.uint8), UTM_CRS, Affine(1, 0, 0, 0, -1, 8)
    )


def test_percentile_stretch_is_per_raster(geo_dir):
    ramp = np.arange(100 * 100, dtype=np.uint16).reshape(1, 100, 100)
    t = Affine(1, 0, 500_000, 0, -1, 5_000_100)
    path = write_tif(geo_dir / "ramp16.tif", ramp, UTM_CRS, t)
    with GdalReader(path) as r:
        lo, hi = np.percentile(ramp, [2, 98])
        assert r.scaling.startswith("percentile2-98")
        chip = r.read_tile((500_000, 5_000_084, 500_016, 5_000_100), UTM_CRS, 1.0, 16, ("gray",))
        want = np.clip((ramp[0, :16, :16] - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(chip[0], want, atol=2e-3)  # 1024-px stats read: exact here
        assert chip.min() == 0.0 and chip.max() <= 1.0
    with GdalReader(path, scale=10.0) as r:
        chip = r.read_tile((500_000, 5_000_084, 500_016, 5_000_100), UTM_CRS, 1.0, 16, ("gray",))
        np.testing.assert_allclose(chip[0], ramp[0, :16, :16] / 10.0, rtol=1e-6)


def test_dsm_float_in_metres_with_nodata(dsm_tif):
    with GdalReader(dsm_tif, scale=1.0, resampling="nearest") as r:
        assert r.res == (2.0, 2.0)
        box = (UTM_ORIGIN[0], UTM_ORIGIN[1] - 192, UTM_ORIGIN[0] + 32, UTM_ORIGIN[1] - 160)
        chip = r.read_tile(box, UTM_CRS, 2.0, 16, ("height",))
        np.testing.assert_array_equal(chip[0, 0], 100.0 + np.arange(16))
        top = (UTM_ORIGIN[0], UTM_ORIGIN[1] - 32, UTM_ORIGIN[0] + 32, UTM_ORIGIN[1])
        assert np.isnan(r.read_tile(top, UTM_CRS, 2.0, 16, ("height",))).all()


def test_fingerprint_tracks_selection_scaling_and_file(geo_dir, utm_tif):
    a = GdalReader(utm_tif).fingerprint()
    assert a == GdalReader(utm_tif).fingerprint()
    assert a != GdalReader(utm_tif, bands=[4, 3, 2, 1]).fingerprint()
    assert a != GdalReader(utm_tif, scale="percentile").fingerprint()
    p = _ok(geo_dir)
    before = GdalReader(p).fingerprint()
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert GdalReader(p).fingerprint() != before


def test_threads_read_the_same_pixels(geo_tif):
    with GdalReader(geo_tif) as r:
        g = grid_for_raster(r, pre(RGB, 16, 2.0))
        cells = [(i, j) for i in range(g.rows) for j in range(g.cols)][:40]

        def read(c):
            return r.read_tile(g.tile_bounds(*c), g.crs, g.gsd, 16, RGB)

        serial = [read(c) for c in cells]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(read, cells))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_close_all_readers_closes_every_thread_s_datasets(utm_tif, geo_tif):
    """What a host calls before it shuts GDAL down; the readers stay usable afterwards."""
    box = utm_region_box(1, 2)
    native, warped = GdalReader(utm_tif), GdalReader(geo_tif)
    want = native.read_tile(box, UTM_CRS, 1.0, 16, RGBN)
    warped.read_tile(box, UTM_CRS, 1.0, 16, RGB)
    with ThreadPoolExecutor(2) as pool:  # datasets opened on other threads too
        list(pool.map(lambda _: native.read_tile(box, UTM_CRS, 1.0, 16, RGBN), range(4)))
    held = [weakref.ref(d) for r in (native, warped) for d in r._local.cache.values()]
    assert len(held) == 2  # the native path's file, the warper's VRT
    close_all_readers()
    assert all(ref() is None for ref in held)  # freed, so GDAL has closed them
    np.testing.assert_array_equal(native.read_tile(box, UTM_CRS, 1.0, 16, RGBN), want)


def test_grid_for_raster(utm_tif, geo_tif):
    with GdalReader(utm_tif) as r:
        g = grid_for_raster(r, pre(size=32, gsd=1.0))
        assert g.crs == UTM_CRS and g.gsd == 1.0 and g.tile_px == 32
        assert g.shape == (6, 8)  # 192 x 256 m at 32-m cells, lattice-aligned
        assert g.bounds == r.bounds
        g0 = grid_for_raster(r, pre(size=32, gsd=0.0), stride_px=16)
        assert g0.gsd == 1.0 and g0.cell_size == 16.0
        sub = grid_for_raster(
            r, pre(size=32, gsd=1.0), extent=(500_040, 5_000_000, 500_100, 5_000_030)
        )
        assert g.subgrid(sub.bounds) == sub
        with pytest.raises(RasterInputError, match="does not overlap"):
            grid_for_raster(r, pre(size=32), extent=(0, 0, 10, 10))
    with GdalReader(geo_tif) as r:
        assert abs(raster_gsd_m(r, "EPSG:32633") - 0.79) < 0.01  # 1e-5 deg of longitude at 45 N
        g = grid_for_raster(
            r, pre(RGB, 16, 2.0), extent=(15.001, 44.998, 15.002, 44.999), extent_crs="EPSG:4326"
        )
        assert g.crs == "EPSG:32633" and 0 < g.n_tiles <= 4 * 5


def test_southern_hemisphere_and_projected_feet(geo_dir):
    t = Affine(GEO_RES, 0, 20.5, 0, -GEO_RES, -34.0)
    south = write_tif(geo_dir / "south.tif", np.ones((1, 8, 8), np.uint8), "EPSG:4326", t)
    with GdalReader(south) as r:
        assert choose_grid_crs(r) == "EPSG:32734"
    feet = write_tif(
        geo_dir / "feet.tif",
        np.ones((1, 8, 8), np.uint8),
        "EPSG:2263",
        Affine(10, 0, 980_000, 0, -10, 200_000),
    )
    with GdalReader(feet) as r:
        assert choose_grid_crs(r) == "EPSG:32618"  # New York State Plane (US feet) -> UTM 18N


def test_web_mercator_rasters_are_tiled_in_their_utm_zone():
    """EPSG:3857 is metres but not true scale (1/cos(lat)); XYZ/WMS layers must not use it."""
    from types import SimpleNamespace

    from pyproj import CRS

    from engine.raster.tiling import choose_grid_crs

    merc = SimpleNamespace(
        crs=CRS("EPSG:3857").to_wkt(), bounds=(-12.5e6, 4.95e6, -12.49e6, 4.96e6)
    )
    assert choose_grid_crs(merc) == "EPSG:32612"
    utm = SimpleNamespace(crs=CRS("EPSG:26914").to_wkt(), bounds=(488000, 5206000, 490000, 5208000))
    assert choose_grid_crs(utm) == "EPSG:26914"
