"""GdalReader (GDAL's own bindings) against the rasterio reader it replaced, on real rasters.

rasterio stays installed as a test-only reference: :func:`rasterio_window` is the old reader's
warped read (a ``WarpedVRT`` on the same snapped lattice) and :func:`rasterio_fingerprint` its
store fingerprint. Both readers drive the same warper with the same options, so their pixels
are compared bitwise, native fast path included, and the reader's CRS, extent, pixel size, band
names, scaling and fingerprint must be what rasterio reported. Excluded on purpose: "average"
resampling at a raster's edge and nearest-neighbour reads at another pixel size, where rasterio's
bundled GDAL (3.10) and the system GDAL (3.6) differ by themselves (plain ``gdalwarp`` shows it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from engine.errors import RasterInputError
from engine.raster import native, scaling, warped
from engine.raster.gdal_reader import GdalReader

rasterio = pytest.importorskip("rasterio")
from affine import Affine  # noqa: E402
from rasterio.enums import ColorInterp, Resampling  # noqa: E402
from rasterio.vrt import WarpedVRT  # noqa: E402
from rasterio.warp import transform_bounds  # noqa: E402
from rasterio.windows import Window  # noqa: E402

NAIP = ("naip_north_dakota", "m_4709963_se_14_1_20190904.tif")
SWELLENDAM = ("swellendam", "3320D_2010_315_RGB_LATLNG.tif")
PUCALLPA = ("pucallpa_landsat", "2015.tif")
DSM = ("alexandria_dsm", "dsm.tif")


def rasterio_window(path, bounds, grid_crs, gsd, idx, size, alpha=(), nodata=None, res="bilinear"):
    """Raw float32 ``[len(idx), size, size]`` of ``bounds`` as the rasterio reader read it."""
    phase = tuple(p * gsd / 1e6 for p in native.lattice_phase(bounds, gsd))
    with rasterio.open(path) as src:
        box = transform_bounds(src.crs, grid_crs, *src.bounds, densify_pts=21)
        left, top, width, height = warped._snap(box, phase, gsd)
        kw = {"src_alpha": alpha[0]} if alpha else {}
        if nodata is not None:
            kw["src_nodata"] = nodata
        t = Affine(gsd, 0.0, left, 0.0, -gsd, top)
        fill = warped.FILL
        with WarpedVRT(
            src, crs=grid_crs, transform=t, width=width, height=height,
            resampling=Resampling[res], dtype="float32", nodata=fill, **kw,
        ) as vrt:  # fmt: skip
            out = np.full((len(idx), size, size), np.nan, np.float32)
            win = warped._window(t.to_gdal(), bounds, gsd)
            win, (r0, r1, c0, c1) = warped._clip(win, width, height, size, size)
            if win is not None:
                shape = (len(idx), r1 - r0, c1 - c0)
                got = vrt.read(
                    idx, window=Window(*win), out_shape=shape, resampling=Resampling[res]
                )
                out[:, r0:r1, c0:c1] = np.where(got <= fill, np.nan, got)
    return out


def rasterio_fingerprint(path: Path, reader: GdalReader) -> str:
    """The rasterio reader's store fingerprint of ``path`` read with ``reader``'s settings."""
    st = os.stat(path)
    with rasterio.open(path) as src:
        d = {
            "path": str(path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "crs": src.crs.to_wkt(),
            "transform": list(src.transform)[:6],
            "shape": [src.count, src.height, src.width],
        }
    d.update(bands=reader._explicit, nodata=reader._nodata, scaling=reader.scaling)
    d["resampling"] = reader._resampling.name
    if reader.fast:
        d["read"] = "native-1"
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def rasterio_names(path: Path) -> tuple[str, ...]:
    with rasterio.open(path) as src:
        pairs = zip(src.descriptions, src.colorinterp, strict=True)
        return tuple(
            d or (c.name if c.name in ("red", "green", "blue", "alpha") else f"band{i + 1}")
            for i, (d, c) in enumerate(pairs)
        )


def windows(reader: GdalReader, grid_crs: str, gsd: float, shift=(0.0, 0.0), size=64):
    """``size``-px windows on the ``gsd`` lattice (shifted by ``shift`` pixels) at the corners,
    edges and centre of the raster, each straddling what lies there."""
    s = osr.SpatialReference()
    s.SetFromUserInput(reader.crs)
    d = osr.SpatialReference()
    d.SetFromUserInput(grid_crs)
    for ref in (s, d):
        ref.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x0, y0, x1, y1 = osr.CoordinateTransformation(s, d).TransformBounds(*reader.bounds, 21)
    out = []
    for fy in (0.0, 0.5, 1.0):
        for fx in (0.0, 0.5, 1.0):
            left = (math.floor((x0 + fx * (x1 - x0)) / gsd) + shift[0]) * gsd - size * gsd / 2
            top = (math.floor((y1 - fy * (y1 - y0)) / gsd) + shift[1]) * gsd + size * gsd / 2
            out.append((left, top - size * gsd, left + size * gsd, top))
    return out


def assert_same_as_rasterio(path, reader, bands, grid_crs, gsd, shift=(0.0, 0.0), size=64):
    """Every window and tile of :func:`windows` equals the rasterio reader's read, bitwise."""
    idx = reader.check_bands(bands)
    kw = dict(alpha=reader._alpha, nodata=reader._nodata, res=reader._resampling.name)
    clip = reader.scaling.startswith("percentile")
    n = 0
    for b in windows(reader, grid_crs, gsd, shift, size):
        ref = rasterio_window(path, b, grid_crs, gsd, idx, size, **kw)
        want = scaling.apply_scaling(ref, reader._lo, reader._span, idx, clip)
        np.testing.assert_array_equal(reader.read_window(b, grid_crs, gsd, bands), want)
        np.testing.assert_array_equal(reader.read_tile(b, grid_crs, gsd, size, bands), want)
        n += int(np.isfinite(want).any())
    assert n >= 4  # most windows hold pixels: the comparison is not between empty reads


def assert_attributes_match_rasterio(path: Path, reader: GdalReader) -> None:
    with rasterio.open(path) as src:
        assert reader.crs == src.crs.to_wkt()
        assert reader.bounds == tuple(src.bounds)
        assert reader.res == (abs(src.res[0]), abs(src.res[1]))
        assert (reader.band_count, reader.dtype) == (src.count, src.dtypes[0])
    assert reader.band_names == rasterio_names(path)
    assert reader.fingerprint() == rasterio_fingerprint(path, reader)


@pytest.mark.parametrize("fast", [True, False])
def test_naip_native_shifted_and_reprojected(shared_data, fast):
    path = shared_data.joinpath(*NAIP)
    with GdalReader(path, fast=fast) as r:
        assert_attributes_match_rasterio(path, r)
        bands = ("band1", "band2", "band3", "band4")
        assert_same_as_rasterio(path, r, bands, "EPSG:26914", 5.0)  # the file's own lattice
        assert_same_as_rasterio(path, r, bands, "EPSG:26914", 5.0, shift=(0.5, 0.5))
        assert_same_as_rasterio(path, r, bands, "EPSG:32614", 5.0, shift=(0.25, 0.1))
        assert_same_as_rasterio(path, r, bands, "EPSG:26914", 4.0)  # another pixel size


def test_naip_percentile_stretch_equals_rasterio(shared_data):
    path = shared_data.joinpath(*NAIP)
    with GdalReader(path, scale="percentile") as r:
        with rasterio.open(path) as src:
            f = max(src.width, src.height) / scaling.STATS_MAX_SIDE
            shape = (src.count, round(src.height / max(f, 1)), round(src.width / max(f, 1)))
            data = src.read(out_shape=shape, masked=True)
        lo, hi = zip(*(np.percentile(b.compressed(), (2.0, 98.0)) for b in data), strict=True)
        want = "percentile2-98:" + ",".join(
            f"{a:.6g}..{b:.6g}" for a, b in zip(lo, hi, strict=True)
        )
        assert r.scaling == want
        assert_attributes_match_rasterio(path, r)
        assert_same_as_rasterio(path, r, ("band1", "band2"), "EPSG:26914", 5.0, (0.5, 0.25))


def test_swellendam_rgba_epsg4326_to_utm(shared_data):
    path = shared_data.joinpath(*SWELLENDAM)
    with GdalReader(path) as r:
        assert r._alpha == (4,)  # the alpha band masks the warp
        assert_attributes_match_rasterio(path, r)
        for gsd, shift in ((2.5, (0.0, 0.0)), (2.5, (0.4, 0.4)), (1.0, (0.0, 0.0))):
            assert_same_as_rasterio(path, r, ("red", "green", "blue"), "EPSG:32734", gsd, shift)


def test_pucallpa_landsat_epsg4326_with_nodata_override(shared_data):
    path = shared_data.joinpath(*PUCALLPA)
    bands = ("band1", "band2", "band3", "band4")
    with GdalReader(path) as r:
        assert_attributes_match_rasterio(path, r)
        assert_same_as_rasterio(path, r, bands, "EPSG:32718", 90.0, shift=(0.5, 0.2))
    with GdalReader(path, nodata=0) as r:
        assert_same_as_rasterio(path, r, bands, "EPSG:32718", 30.0)


@pytest.mark.parametrize(("fast", "resampling"), [(True, "average"), (False, "bilinear")])
def test_alexandria_dsm_in_metres(shared_data, fast, resampling):
    path = shared_data.joinpath(*DSM)
    with GdalReader(path, scale=1.0, resampling=resampling, fast=fast) as r:
        assert r.scaling == "divide:1"
        assert_attributes_match_rasterio(path, r)
        assert_same_as_rasterio(path, r, ("height",), "EPSG:26918", 2.0)
        if resampling == "bilinear":
            assert_same_as_rasterio(path, r, ("height",), "EPSG:26918", 2.0, shift=(0.3, 0.6))
            assert_same_as_rasterio(path, r, ("height",), "EPSG:32618", 2.0, shift=(0.5, 0.5))


def _write(path: Path, data: np.ndarray, gt, epsg=32633, nodata=None, interp=None, desc=None):
    """A tiled GeoTIFF written with GDAL itself."""
    c, h, w = data.shape
    from osgeo import gdal_array

    kind = gdal_array.NumericTypeCodeToGDALTypeCode(data.dtype)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, c, kind, ["TILED=YES"])
    ds.SetGeoTransform(gt)
    ref = osr.SpatialReference()
    ref.ImportFromEPSG(epsg)
    ds.SetProjection(ref.ExportToWkt())
    for i in range(c):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(data[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if interp:
            band.SetColorInterpretation(interp[i])
        if desc:
            band.SetDescription(desc[i])
    ds = None
    return path


def test_generated_rotated_nan_nodata_and_alpha_tagged_nir(tmp_path):
    rng = np.random.default_rng(0)
    rot = _write(
        tmp_path / "rotated.tif",
        rng.integers(1, 255, (3, 300, 400), dtype=np.uint8),
        (500000.0, 0.98, 0.17, 5000000.0, 0.17, -0.98),
    )
    h = (100 + np.cumsum(rng.normal(0, 0.3, (1, 200, 260)), axis=2)).astype(np.float32)
    h[:, 50:90, 60:140] = np.nan
    nan = _write(tmp_path / "nan.tif", h, (500001.0, 2.0, 0, 5000003.0, 0, -2.0), nodata=math.nan)
    g = rng.integers(1, 255, (4, 200, 200), dtype=np.uint8)
    g[:, 100:140, 20:60] = 0
    interp = (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_AlphaBand)
    rgbn = _write(
        tmp_path / "rgbn.tif", g, (500000.0, 1.0, 0, 5000000.0, 0, -1.0), nodata=0,
        interp=interp, desc=("red", "green", "blue", "nir"),
    )  # fmt: skip
    with rasterio.open(rgbn) as src:
        assert src.colorinterp[3] == ColorInterp.alpha  # GDAL's tag; the description wins
    g = rng.integers(1, 255, (4, 200, 200), dtype=np.uint8)
    g[3] = rng.choice(np.array([0, 90, 255], np.uint8), (200, 200))  # alpha weighs the warp
    rgba = _write(tmp_path / "rgba.tif", g, (500000.5, 1.0, 0, 5000000.5, 0, -1.0), interp=interp)
    cases = [
        (rot, {}, ("red", "green", "blue"), 1.0),
        (nan, {"scale": 1.0}, ("h",), 2.0),
        (rgbn, {}, ("red", "green", "blue", "nir"), 1.0),
        (rgba, {}, ("red", "green", "blue"), 1.0),
    ]
    for path, kw, bands, gsd in cases:
        for fast in (True, False):
            with GdalReader(path, fast=fast, **kw) as r:
                assert_attributes_match_rasterio(path, r)
                for shift in ((0.0, 0.0), (0.3, 0.3), (0.25, 0.75)):
                    assert_same_as_rasterio(path, r, bands, "EPSG:32633", gsd, shift)
    with GdalReader(nan, scale=1.0) as r:
        assert_same_as_rasterio(nan, r, ("h",), "EPSG:32632", 2.0)  # the next UTM zone


def test_a_truncated_file_fails_where_it_is_read_not_as_zeros(tmp_path):
    data = np.random.default_rng(1).integers(1, 255, (4, 512, 512), dtype=np.uint8)
    whole = _write(tmp_path / "whole.tif", data, (500000.0, 1.0, 0, 5000000.0, 0, -1.0))
    cut = tmp_path / "cut.tif"
    raw = whole.read_bytes()
    cut.write_bytes(raw[: len(raw) - 300_000])  # the header and the top row of tiles survive
    bands = ("red", "green", "blue", "nir")
    top = (500000.0, 5000000.0 - 64.0, 500064.0, 5000000.0)
    bottom = (500448.0, 4999488.0, 500512.0, 4999552.0)
    for fast in (True, False):  # the native read and the warper
        with GdalReader(cut, bands=[1, 2, 3, 4], fast=fast) as r:
            ok = r.read_window(top, "EPSG:32633", 1.0, bands)
            want = data[:, :64, :64].astype(np.float32) / np.float32(255.0)
            np.testing.assert_array_equal(ok, want)
            with pytest.raises(RasterInputError, match=r"cut.tif cannot be read at .*truncated"):
                r.read_window(bottom, "EPSG:32633", 1.0, bands)
