"""MosaicReader: a real NAIP crop split in two halves reprojected to two other CRSs reads like
the original raster; STAC-like JSON collections; band-layout and asset errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from engine.errors import RasterInputError
from engine.model.contract import Preprocess
from engine.raster.gdal_reader import GdalReader
from engine.raster.mosaic import MosaicReader, collection_paths, grid_for_sources, source_spec
from engine.raster.tiling import grid_for_raster

PRE = Preprocess(size=16, bands=("red", "green", "blue", "nir"), mean=(0.35,) * 4,
                 std=(0.2,) * 4, gsd_m=10.0)  # fmt: skip
CROP = Window(100, 100, 400, 300)  # 2 km x 1.5 km of the 5-m scene


def _write(path: Path, data: np.ndarray, crs, transform) -> Path:
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=len(data),
                   dtype="uint8", crs=crs, transform=transform, nodata=0,
                   photometric="MINISBLACK")  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _reprojected(src, win: Window, crs: str, dst: Path) -> Path:
    """The window of ``src`` warped (bilinear) to ``crs`` at about its own resolution."""
    data, t = src.read(window=win), src.window_transform(win)
    h, w = data.shape[1:]
    bounds = (t.c, t.f + h * t.e, t.c + w * t.a, t.f)
    dt, dw, dh = calculate_default_transform(src.crs, crs, w, h, *bounds)
    out = np.zeros((src.count, dh, dw), np.uint8)
    reproject(data, out, src_transform=t, src_crs=src.crs, dst_transform=dt, dst_crs=crs,
              resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)  # fmt: skip
    return _write(dst, out, crs, dt)


@pytest.fixture(scope="module")
def halves(tmp_path_factory, naip) -> tuple[Path, Path, Path]:
    """(crop in EPSG:26914, left half in EPSG:4326, right half in EPSG:3857); 8-px overlap."""
    d = tmp_path_factory.mktemp("mosaic")
    with rasterio.open(naip) as src:
        crop = _write(d / "crop.tif", src.read(window=CROP), src.crs, src.window_transform(CROP))
    with rasterio.open(crop) as src:
        half = src.width // 2
        a = _reprojected(src, Window(0, 0, half + 8, src.height), "EPSG:4326", d / "a.tif")
        b = _reprojected(
            src, Window(half - 8, 0, src.width - half + 8, src.height), "EPSG:3857", d / "b.tif"
        )
    return crop, a, b


def _tiles(reader, grid) -> np.ndarray:
    return np.stack(
        [
            reader.read_tile(grid.tile_bounds(r, c), grid.crs, grid.gsd, 16, PRE.bands)
            for r in range(grid.rows)
            for c in range(grid.cols)
        ]
    )


def test_two_crs_mosaic_reads_like_the_original(halves):
    crop, a, b = halves
    with GdalReader(crop) as single, MosaicReader([a, b]) as mosaic:
        assert {rasterio.crs.CRS.from_wkt(m.crs).to_epsg() for m in mosaic.members} == {4326, 3857}
        grid = grid_for_raster(single, PRE)
        assert grid_for_sources(mosaic, PRE, grid_crs=grid.crs) == grid  # same tiles
        assert grid_for_sources(single, PRE) == grid
        ref, got = _tiles(single, grid), _tiles(mosaic, grid)
    full = ~np.isnan(ref).reshape(len(ref), -1).any(axis=1)
    assert full.sum() >= 0.5 * len(ref), (full.sum(), len(ref))
    # first valid wins across the seam: every tile with data everywhere keeps it
    assert not np.isnan(got[full]).any()
    err = np.abs(got[full] - ref[full]).mean(axis=(1, 2, 3))
    # two bilinear resamplings (to 4326/3857 and back) cost a little; values are in [0, 1]
    assert err.max() < 0.015 and np.median(err) < 0.004, (err.max(), np.median(err))
    assert mosaic.scaling == "uint8/255"


def test_mosaic_grid_is_the_union_in_the_chosen_crs(halves):
    _, a, b = halves
    with MosaicReader([a, b]) as m, GdalReader(a) as ra:
        g = grid_for_sources(m, PRE)  # CRS from the first member (EPSG:4326 -> its UTM zone)
        assert g.crs == "EPSG:32614"
        ga = grid_for_sources(ra, PRE, grid_crs="EPSG:32614")
        assert g.rows == ga.rows and g.cols > 1.6 * ga.cols
        assert m.bounds[0] == pytest.approx(ra.bounds[0]) and m.bounds[2] > ra.bounds[2]
        g_ext = grid_for_sources(m, PRE, extent=(*g.bounds[:2], g.bounds[0] + 500, g.bounds[3]))
        assert g_ext.cols <= 4
        with pytest.raises(RasterInputError, match="does not overlap"):
            grid_for_sources(m, PRE, extent=(0, 0, 10, 10))


def test_stac_collection_and_fingerprint(halves, tmp_path):
    _, a, b = halves
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"id": "b", "assets": {"thumbnail": {"href": "x.png"}, "visual": {"href": b.name}}},
            {"id": "a", "assets": {"visual": {"href": str(a)}}},
        ],
    }
    coll = b.parent / "items.json"
    coll.write_text(json.dumps(doc))
    assert collection_paths(coll) == [b.resolve(), a.resolve()]
    with MosaicReader(coll) as m1, MosaicReader([b, a]) as m2, MosaicReader([a, b]) as m3:
        assert m1.fingerprint() == m2.fingerprint() != m3.fingerprint()
        box = m1.member_boxes("EPSG:32614")[1]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        tile = (cx - 80, cy - 80, cx + 80, cy + 80)
        t1 = m1.read_tile(tile, "EPSG:32614", 10.0, 16, PRE.bands)
        assert np.array_equal(t1, m2.read_tile(tile, "EPSG:32614", 10.0, 16, PRE.bands))
    assert source_spec(coll).paths == (str(b.resolve()), str(a.resolve()))
    assert len(source_spec(coll).open().members) == 2
    with pytest.raises(RasterInputError, match="no asset 'image'.*--asset"):
        collection_paths(coll, asset="image")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "Feature"}))
    with pytest.raises(RasterInputError, match="not a STAC-like collection"):
        MosaicReader(bad)


def test_mosaic_refuses_mixed_band_layouts(halves, tmp_path):
    crop, a, _ = halves
    with rasterio.open(crop) as src:
        three = _write(tmp_path / "rgb.tif", src.read()[:3], src.crs, src.transform)
    with pytest.raises(RasterInputError, match="differ in bands"):
        MosaicReader([a, three])
    with pytest.raises(RasterInputError, match="does not exist"):
        MosaicReader([a, tmp_path / "nope.tif"])
