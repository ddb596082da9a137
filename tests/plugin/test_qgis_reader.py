"""QgsLayerReader reads the same tiles as the engine's GdalReader, in UTM and EPSG:4326."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis

BANDS = ("red", "green", "blue", "nir")
SWELLENDAM = "swellendam/3320D_2010_315_RGB_LATLNG.tif"


def _preprocess(size: int = 16, gsd: float = 10.0):
    from unigeo.engine.model.contract import Preprocess

    return Preprocess(size=size, bands=BANDS, mean=(0.35,) * 4, std=(0.2,) * 4, gsd_m=gsd)


def _layer(path):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(path), "test")
    assert layer.isValid()
    return layer


def _tiles(reader, grid, cells, bands=BANDS):
    return np.stack(
        [
            reader.read_tile(grid.tile_bounds(r, c), grid.crs, grid.gsd, grid.tile_px, bands)
            for r, c in cells
        ]
    )


def test_layer_reader_matches_rasterio_in_utm(qgis_app, plugin_package, smooth_utm_tif):
    from unigeo.engine.raster.gdal_reader import GdalReader
    from unigeo.engine.raster.tiling import grid_for_raster
    from unigeo.plugin.qgis_reader import QgsLayerReader

    rio = GdalReader(smooth_utm_tif)
    qr = QgsLayerReader(_layer(smooth_utm_tif))
    assert qr.band_names == ("band1", "band2", "band3", "band4") or qr.band_count == 4
    assert qr.scaling == "uint8/255" and qr.res == pytest.approx((3.0, 3.0))
    assert qr.bounds == pytest.approx(rio.bounds)
    grid = grid_for_raster(qr, _preprocess())
    assert grid == grid_for_raster(rio, _preprocess())
    assert grid.crs == "EPSG:32633" and grid.shape == (7, 6)
    cells = [(r, c) for r in range(1, 6) for c in range(1, 5)]
    a, b = _tiles(qr, grid, cells), _tiles(rio, grid, cells)
    assert a.shape == (20, 4, 16, 16) and np.isfinite(a).all()
    diff = np.abs(a - b)
    assert diff.mean() < 0.005 and diff.max() < 0.03, (diff.mean(), diff.max())
    rio.close()


def test_layer_reader_matches_rasterio_on_real_epsg4326(qgis_app, plugin_package, shared_data):
    from unigeo.engine.raster.gdal_reader import GdalReader
    from unigeo.engine.raster.tiling import choose_grid_crs, grid_for_raster
    from unigeo.plugin.qgis_reader import QgsLayerReader

    path = shared_data / SWELLENDAM
    rio = GdalReader(path)
    qr = QgsLayerReader(_layer(path))
    assert qr.band_names == ("red", "green", "blue", "alpha") and qr._alpha == (4,)
    assert choose_grid_crs(qr) == choose_grid_crs(rio) == "EPSG:32734"
    pre = _preprocess(16, 10.0)
    grid = grid_for_raster(qr, pre)
    assert grid.shape == grid_for_raster(rio, pre).shape
    rgb = ("red", "green", "blue")
    cells = [(r, c) for r in range(3, grid.rows - 3, 4) for c in range(2, grid.cols - 2, 3)]
    a, b = _tiles(qr, grid, cells, rgb), _tiles(rio, grid, cells, rgb)
    ok = np.isfinite(a) & np.isfinite(b)
    assert ok.mean() > 0.99
    diff = np.abs(a - b)[ok]
    # same bilinear warper, different source windows: differences of a few grey levels at most
    assert diff.mean() < 0.01 and np.percentile(diff, 99) < 0.05, (diff.mean(), diff.max())
    rio.close()


def test_nodata_outside_and_thread_safety(qgis_app, plugin_package, smooth_utm_tif):
    from unigeo.engine.raster.tiling import grid_for_raster
    from unigeo.plugin.qgis_reader import QgsLayerReader

    qr = QgsLayerReader(_layer(smooth_utm_tif))
    grid = grid_for_raster(qr, _preprocess())
    far = qr.read_tile((0.0, 0.0, 160.0, 160.0), grid.crs, 10.0, 16, BANDS)
    assert far.shape == (4, 16, 16) and np.isnan(far).all()
    edge = qr.read_tile(grid.tile_bounds(0, 0), grid.crs, 10.0, 16, BANDS)
    assert 0.0 < np.isnan(edge).mean() < 1.0  # the first tile sticks out of the raster
    cells = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    expected = _tiles(qr, grid, cells)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = _tiles(qr, grid, cells)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        np.testing.assert_array_equal(results[i], expected)


def test_band_selection_fingerprint_and_errors(qgis_app, plugin_package, smooth_utm_tif):
    from qgis.core import QgsRasterLayer
    from unigeo.engine.errors import RasterInputError
    from unigeo.plugin.qgis_reader import QgsLayerReader

    layer = _layer(smooth_utm_tif)
    qr = QgsLayerReader(layer)
    assert qr.fingerprint() == QgsLayerReader(layer).fingerprint()
    swapped = QgsLayerReader(layer, bands=[4, 3, 2, 1])
    assert swapped.fingerprint() != qr.fingerprint()
    grid_bounds = (500_160.0, 5_000_480.0, 500_320.0, 5_000_640.0)
    a = qr.read_tile(grid_bounds, "EPSG:32633", 10.0, 16, BANDS)
    b = swapped.read_tile(grid_bounds, "EPSG:32633", 10.0, 16, BANDS)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a[::-1], b)
    with pytest.raises(RasterInputError, match="bands=\\[5\\] is invalid"):
        QgsLayerReader(layer, bands=[5])
    with pytest.raises(RasterInputError, match="selects 2 band.*needs 3"):
        QgsLayerReader(layer, bands=[1, 2]).read_tile(
            grid_bounds, "EPSG:32633", 10.0, 16, BANDS[:3]
        )
    with pytest.raises(RasterInputError, match="not valid"):
        QgsLayerReader(QgsRasterLayer("/nonexistent.tif", "x"))


def test_reader_for_layer_picks_rasterio_for_files(qgis_app, plugin_package, smooth_utm_tif):
    from osgeo import gdal
    from unigeo.engine.raster.gdal_reader import GdalReader
    from unigeo.plugin.qgis_reader import QgsLayerReader, reader_for_layer

    assert isinstance(reader_for_layer(_layer(smooth_utm_tif)), GdalReader)
    mem = "/vsimem/unigeo_reader_test.tif"
    gdal.Translate(mem, str(smooth_utm_tif))
    try:
        reader = reader_for_layer(_layer(mem))
        assert isinstance(reader, QgsLayerReader)
        tile = reader.read_tile(
            (500_160.0, 5_000_480.0, 500_320.0, 5_000_640.0), "EPSG:32633", 10.0, 16, BANDS
        )
        assert np.isfinite(tile).all() and 0.0 <= tile.min() and tile.max() <= 1.0
    finally:
        gdal.Unlink(mem)


def _xyz_tiles(src_tif, folder, zoom: int) -> str:
    """Web-mercator PNG tiles (RGBA) of ``src_tif`` at ``zoom``; returns the XYZ url template."""
    import math

    from osgeo import gdal
    from pyproj import Transformer

    with rasterio.open(src_tif) as src:
        b = src.bounds
        to_ll = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
    (lon0, lon1), (lat0, lat1) = zip(
        to_ll.transform(b.left, b.bottom), to_ll.transform(b.right, b.top), strict=True
    )
    n = 2**zoom

    def tile(lon, lat):
        y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
        return int((lon + 180) / 360 * n), int(y)

    (x0, y0), (x1, y1) = tile(lon0, lat1), tile(lon1, lat0)
    half = 20037508.342789244
    size = 2 * half / n
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            out = folder / str(zoom) / str(x) / f"{y}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            bounds = (
                -half + x * size,
                half - (y + 1) * size,
                -half + (x + 1) * size,
                half - y * size,
            )
            mem = gdal.Warp(
                "",
                str(src_tif),
                format="MEM",
                outputBounds=bounds,
                width=256,
                height=256,
                dstSRS="EPSG:3857",
                resampleAlg="bilinear",
                dstAlpha=True,
            )
            gdal.Translate(str(out), mem, format="PNG", bandList=[1, 2, 3, 5])
    return f"file://{folder}/{{z}}/{{x}}/{{y}}.png"


def test_xyz_web_layer_reads_like_the_file(qgis_app, plugin_package, smooth_utm_tif, tmp_path):
    from qgis.core import QgsRasterLayer
    from unigeo.engine.raster.gdal_reader import GdalReader
    from unigeo.engine.raster.tiling import grid_for_raster
    from unigeo.plugin.qgis_reader import QgsLayerReader, reader_for_layer

    url = _xyz_tiles(smooth_utm_tif, tmp_path, 16)
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmin=16&zmax=16", "xyz", "wms")
    assert layer.isValid()
    qr = reader_for_layer(layer)
    assert isinstance(qr, QgsLayerReader) and qr.band_names == ("red", "green", "blue", "alpha")
    rio = GdalReader(smooth_utm_tif)
    grid = grid_for_raster(rio, _preprocess())
    cells = [(r, c) for r in range(1, 6) for c in range(1, 5)]
    rgb = ("red", "green", "blue")
    a, b = _tiles(qr, grid, cells, rgb), _tiles(rio, grid, cells, rgb)
    assert np.isfinite(a).all()
    diff = np.abs(a - b)  # resampled twice (tiles at ~1.7 m, then the tile): a few grey levels
    assert diff.mean() < 0.005 and np.percentile(diff, 99) < 0.02, (diff.mean(), diff.max())
    far = qr.read_tile((0.0, 0.0, 160.0, 160.0), grid.crs, 10.0, 16, rgb)
    assert np.isnan(far).all()  # no tile there: transparent, so no data
    rio.close()


def test_settings_roundtrip_and_defaults(qgis_app, plugin_package, monkeypatch):
    from qgis.core import QgsSettings
    from unigeo.plugin import settings as S

    monkeypatch.setattr(S, "PREFIX", "unigeo_pytest/")  # never touch the user's own settings
    try:
        s = S.Settings.load()
        assert s == S.Settings() and s.cache_mb == 2048 and s.provider == "auto"
        assert s.bundle_path().endswith("resources/models/default")
        assert s.cache_path().parts[-2:] == ("unigeo", "cache")
        assert s.provider_arg() is None and s.threads_arg() is None and s.stride_arg() is None
        assert s.cache_bytes() == 2048 * 1024 * 1024
        s.provider, s.threads, s.stride_px, s.cache_mb, s.bundle = "cpu", 2, 8, 10, "/m"
        s.save()
        back = S.Settings.load()
        assert back == s and back.provider_arg() == "cpu" and back.stride_arg() == 8
        QgsSettings().setValue("unigeo_pytest/provider", "quantum")
        QgsSettings().setValue("unigeo_pytest/threads", "many")
        bad = S.Settings.load()
        assert bad.provider == "auto" and bad.threads == 0  # unreadable values fall back
    finally:
        QgsSettings().remove("unigeo_pytest")


def test_uint16_layer_gets_the_same_percentile_stretch(qgis_app, plugin_package, tmp_path):
    from affine import Affine
    from osgeo import gdal
    from unigeo.engine.raster.gdal_reader import GdalReader
    from unigeo.plugin.qgis_reader import QgsLayerReader

    from .conftest import smooth_array

    path = tmp_path / "u16.tif"
    data = smooth_array(200, 200, 7).astype(np.uint16) * 40
    profile = dict(driver="GTiff", width=200, height=200, count=4, dtype="uint16")
    profile.update(crs="EPSG:32633", transform=Affine(5.0, 0, 500_000.0, 0, -5.0, 5_001_000.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    mem = "/vsimem/unigeo_u16.tif"
    gdal.Translate(mem, str(path))
    try:
        qr = QgsLayerReader(_layer(mem))
        rio = GdalReader(path)
        assert qr.scaling == rio.scaling and qr.scaling.startswith("percentile2-98:")
        bounds = (500_320.0, 5_000_360.0, 500_480.0, 5_000_520.0)
        a = qr.read_tile(bounds, "EPSG:32633", 10.0, 16, BANDS)
        b = rio.read_tile(bounds, "EPSG:32633", 10.0, 16, BANDS)
        assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
        assert np.abs(a - b).max() < 0.03
        rio.close()
    finally:
        gdal.Unlink(mem)


def test_a_band_choice_with_nir_absent_and_swir_present_reads_swir(
    qgis_app, plugin_package, tmp_path
):
    """The dock's choice red, green, blue, SWIR1 (NIR and SWIR2 absent) reaches both readers as
    ``bands=(1, 2, 3, 0, 4, 0)``: SWIR1 is read from band 4, NIR and SWIR2 are masked (the
    engine used to take a shorter selection as the first optional bands, so NIR was read)."""
    from affine import Affine
    from unigeo.engine.raster import GdalReader, band_layout
    from unigeo.plugin import source_bands
    from unigeo.plugin.qgis_reader import QgsLayerReader, reader_for_layer

    six = ("red", "green", "blue", "nir", "swir1", "swir2")
    path = tmp_path / "rgb_swir.tif"
    profile = dict(driver="GTiff", width=32, height=32, count=4, dtype="uint8", crs="EPSG:32633",
                   transform=Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8))
        dst.descriptions = ("red", "green", "blue", "swir1")
    layer = _layer(path)
    choice = source_bands.auto_choice(layer, six, six[3:])
    assert choice.decided and choice.mapping == (1, 2, 3, 0, 4, 0), choice.reason
    assert choice.absent == ("nir", "swir2")
    for reader in (reader_for_layer(layer, bands=choice.mapping),
                   QgsLayerReader(layer, bands=choice.mapping)):  # fmt: skip
        lay = band_layout(reader, six, six[3:])
        assert lay.read == ("red", "green", "blue", "swir1"), type(reader)
        assert reader.check_bands(lay.read) == [1, 2, 3, 4]
    assert isinstance(reader_for_layer(layer, bands=choice.mapping), GdalReader)
