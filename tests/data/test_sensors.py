"""The per-sensor scaling table, checked against real metadata (r-cran-satellite's Landsat MTL)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError
from engine.raster.sensors import MODEL_BANDS, TABLE_PATH, get_sensor, load_table
from tests.data.registry_cuts import DEB_CACHE
from training.data.build_raster import RasterSource, build_area
from training.data.scenes import BandFile, View
from training.data.sensors import band_order, custom_sensor
from training.data.sources import read_member

SAT = "usr/lib/R/site-library/satellite/extdata"
L8 = "LC08_L1TP_195025_20130707_20170503_01_T1"


def test_model_bands_and_every_sensor_maps_by_name():
    assert MODEL_BANDS == ("red", "green", "blue", "nir", "swir1", "swir2")
    table = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    assert TABLE_PATH.parent.name == "engine"  # plain data the engine can read too
    for name in table["sensors"]:
        s = get_sensor(name)
        assert set(s.bands) <= set(MODEL_BANDS) and s.scale > 0
    assert get_sensor("sentinel2_l1c").bands["swir1"] == "B11"
    assert get_sensor("landsat8_l1").bands["nir"] == "B5"
    assert band_order({"nir", "red", "swir2"}) == ["red", "nir", "swir2"]
    with pytest.raises(InputError, match="unknown sensor"):
        get_sensor("sentinel9")
    with pytest.raises(InputError, match="unknown band"):
        band_order({"red", "thermal"})


@pytest.mark.parametrize(
    ("sensor", "band", "raw", "want"),
    [
        ("sentinel2_l1c", "red", 1500, 0.5),  # 0.15 reflectance / 0.3
        ("sentinel2_l1c", "nir", 2500, 0.5),  # 0.25 / 0.5
        ("sentinel2_l1c_n0400", "red", 2500, 0.5),  # (2500 - 1000) / 10000 / 0.3
        ("landsat8_l1", "red", 12500, 0.5),  # 12500 x 2e-5 - 0.1 = 0.15
        ("landsat8_c2_l2", "swir2", (0.2 + 0.2) / 2.75e-5, 0.5),  # DN x 2.75e-5 - 0.2 = 0.2
        ("landsat_tm_etm_sr", "swir1", 5000, 1.0),  # 0.5 / 0.5
        ("display8", "red", 51, 0.2),
        ("worldview2_ms_dn", "nir", 512, 0.5),
        ("sentinel2_l1c", "blue", 9000, 1.0),  # bright clouds clip at 1
        ("landsat8_l1", "blue", 100, 0.0),  # below the offset clips at 0
    ],
)
def test_to_model_values(sensor, band, raw, want):
    s = get_sensor(sensor)
    assert float(s.to_model(np.array([raw]), band)[0]) == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("sensor", ["sentinel2_l1c_n0400", "landsat8_l1", "display8"])
def test_engine_form_offset_span_is_the_same_rule(sensor):
    s = get_sensor(sensor)
    raw = np.random.default_rng(0).uniform(0, 30000, 1000).astype(np.float32)
    for band in ("red", "nir"):
        lo, span = s.offset_span(band)
        np.testing.assert_allclose(
            np.clip((raw - lo) / span, 0, 1), s.to_model(raw, band), rtol=1e-5, atol=1e-6
        )


def test_custom_and_broken_tables(tmp_path: Path):
    c = custom_sensor(4095.0)
    assert float(c.to_model(np.array([4095.0]), "red")[0]) == 1.0
    with pytest.raises(InputError, match="positive"):
        custom_sensor(0)
    bad = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    bad["sensors"]["x"] = {"kind": "reflectance", "scale": 1e-4, "bands": {"pan": "B8"}}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(InputError, match="unknown model bands"):
        load_table(str(p))
    p.write_text("{not json")
    with pytest.raises(InputError, match="cannot be read"):
        load_table(str(p))


@pytest.fixture(scope="module")
def satellite(tmp_path_factory) -> Path:
    """r-cran-satellite's extdata (Debian package), extracted: a unit-test fixture only."""
    debs = sorted(DEB_CACHE.glob("r-cran-satellite_*.deb")) if DEB_CACHE.is_dir() else []
    if not debs:
        pytest.skip("r-cran-satellite not in data-cache/deb (training.data.sources.fetch_deb)")
    out = tmp_path_factory.mktemp("satellite")
    for name in [*(f"{L8}_B{b}.TIF" for b in range(2, 8)), f"{L8}_MTL.txt", "DEM.TIF"]:
        (out / name).write_bytes(read_member(debs[-1], f"{SAT}/{name}"))
    return out


def test_landsat8_scaling_matches_the_mtl_file(satellite: Path):
    mtl = (satellite / f"{L8}_MTL.txt").read_text()
    s = get_sensor("landsat8_l1")
    for model_band, file_band in s.bands.items():
        k = file_band.lstrip("B")
        mult = float(re.search(rf"REFLECTANCE_MULT_BAND_{k} = (\S+)", mtl).group(1))
        add = float(re.search(rf"REFLECTANCE_ADD_BAND_{k} = (\S+)", mtl).group(1))
        assert (mult, add) == (s.scale, s.offset), model_band


def test_landsat8_marburg_scene_builds_with_its_dem(satellite: Path):
    s = get_sensor("landsat8_l1")
    bands = {b: [BandFile(satellite / f"{L8}_{f}.TIF")] for b, f in s.bands.items()}
    src = RasterSource("marburg", views=[View(bands, "2013-07-07")], sensor="landsat8_l1",
                       gsd_m=30.0, chip_px=16, stride_px=8, dem=satellite / "DEM.TIF",
                       dem_dsm="derived")  # fmt: skip
    recs = list(build_area(src))
    assert len(recs) >= 4
    import rasterio

    with rasterio.open(satellite / f"{L8}_B4.TIF") as f:
        red = f.read(1).astype(np.float32)
    want = float(np.clip((red * 2e-5 - 0.1) / 0.3, 0, 1).mean())
    got = np.mean([r.aerial[0][0].astype(np.float32) / 255 for r in recs])
    assert got == pytest.approx(want, abs=0.03)  # chips cover most of the 41 x 41 px scene
    for r in recs:
        assert r.aerial_bands == MODEL_BANDS and r.aerial_dates == ["2013-07-07"]
        assert r.provenance["dsm"] == "derived" and 170 < np.nanmean(r.dsm) < 270
