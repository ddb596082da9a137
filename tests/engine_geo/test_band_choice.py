"""Tests of engine/raster/band_choice.py: bands picked by names, colour interpretation and sensor layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import RasterInputError
from engine.raster.band_choice import ABSENT, choose_bands, user_choice
from engine.raster.spectral import spectral_name, wanted_name

ROOT = Path(__file__).resolve().parents[2]
DEMO_SCENE = ROOT / "data-cache/localtileserver/1.0.0/localtileserver/tiler/data/landsat.tif"
RGBN = ("red", "green", "blue", "nir")
SIX = ("red", "green", "blue", "nir", "swir1", "swir2")
ETM = ("B1", "B2", "B3", "B4", "B5", "B6_VCID_2", "B7")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Red", "red"),
        ("Band 4 - Near Infrared", "nir"),
        ("NIR", "nir"),
        ("near-infrared", "nir"),
        ("SWIR 1", "swir1"),
        ("swir16", "swir1"),
        ("Shortwave infrared 2", "swir2"),
        ("Red Edge 1", "rededge"),  # not "red"
        ("Coastal aerosol", "coastal"),
        ("Thermal Infrared (TIRS) 1", "thermal"),
        ("b", "blue"),
        ("infrared", None),  # the token "red" inside "infrared" is no red band
        ("B4", None),  # a code, not a name: its meaning depends on the sensor
        ("", None),
        (None, None),
    ],
)
def test_spectral_names_from_descriptions(text, name):
    assert spectral_name(text) == name


def test_wanted_names_fold_aliases():
    assert [wanted_name(w) for w in ("R", "NIR", "swir16", "SWIR2", "elevation")] == [
        "red",
        "nir",
        "swir1",
        "swir2",
        "elevation",
    ]


def test_landsat7_etm_scene_names_its_sensor_by_the_vcid_band():
    """The demo scene's band descriptions (B1..B7 with B6_VCID_2): bands 3,2,1,4, as make demo."""
    c = choose_bands(7, ETM, ("Gray",) + ("Undefined",) * 6, RGBN)
    assert c.decided and c.mapping == (3, 2, 1, 4) and c.source == "sensor"
    assert "Landsat 7 ETM+" in c.reason and "nir = band 4 (B4)" in c.reason


def test_seven_b_codes_without_sensor_evidence_ask_the_user_with_both_layouts():
    c = choose_bands(7, tuple(f"B{i}" for i in range(1, 8)), (), RGBN)
    assert not c.decided and c.mapping == () and c.source == "unknown"
    assert [o.mapping for o in c.candidates] == [(3, 2, 1, 4), (4, 3, 2, 5)]
    assert "TM" in c.reason and "OLI" in c.reason and "Pick the bands" in c.reason
    with pytest.raises(RasterInputError, match="scene.tif: 7 bands named B1-B7 fit more"):
        c.require("scene.tif")


@pytest.mark.parametrize(
    ("hint", "mapping"),
    [
        ("LC08_L2SP_038032_20200101_02_T1.tif", (4, 3, 2, 5)),
        ("LC09_L1TP_x.tif", (4, 3, 2, 5)),
        ("LE07_L1TP_x.tif", (3, 2, 1, 4)),
        ("LT05_L1TP_x.tif", (3, 2, 1, 4)),
    ],
)
def test_a_landsat_product_id_in_the_file_name_settles_seven_unnamed_bands(hint, mapping):
    c = choose_bands(7, (), (), RGBN, hints=(hint,))
    assert c.mapping == mapping and c.source == "sensor"


def test_landsat8_oli_by_tirs_band_numbers():
    names = tuple(f"B{i}" for i in range(1, 12))
    c = choose_bands(11, names, (), SIX)
    assert c.mapping == (4, 3, 2, 5, 6, 7) and "OLI" in c.reason


def test_landsat_collection2_surface_reflectance_names():
    tm = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")  # TM/ETM+: no band 6
    assert choose_bands(6, tm, (), SIX).mapping == (3, 2, 1, 4, 5, 6)
    oli = tuple(f"SR_B{i}" for i in range(1, 8))
    c = choose_bands(7, oli, (), SIX, hints=("LC08_L2SP_044034_20210508_20210518_02_T1_SR",))
    assert c.mapping == (4, 3, 2, 5, 6, 7)


def test_sentinel2_by_names_and_by_band_count():
    l1c = [f"B{i:02d}" for i in range(1, 9)] + ["B8A", "B09", "B10", "B11", "B12"]
    c = choose_bands(13, l1c, (), SIX)
    assert c.mapping == (4, 3, 2, 8, 12, 13) and "Sentinel-2" in c.reason
    assert choose_bands(13, (), (), SIX).mapping == (4, 3, 2, 8, 12, 13)
    assert choose_bands(12, (), (), SIX).mapping == (4, 3, 2, 8, 11, 12)  # L2A: no B10
    assert choose_bands(10, (), (), SIX).mapping == (3, 2, 1, 7, 9, 10)  # B2-B8, B8A, B11, B12
    assert choose_bands(10, (), (), SIX).source == "layout"  # a guess from the count: said so


def test_naip_rgbn_unnamed_keeps_todays_file_order_and_says_it_assumed_it():
    c = choose_bands(4, (), ("Gray", "Undefined", "Undefined", "Undefined"), RGBN)
    assert c.mapping == (1, 2, 3, 4) and c.source == "layout"
    assert "NAIP" in c.reason and "PlanetScope" in c.reason


def test_names_beat_file_order_and_alpha_tag_on_a_named_nir_band():
    desc = ("blue", "green", "red", "nir")
    c = choose_bands(4, desc, ("Blue", "Green", "Red", "Alpha"), RGBN)
    assert c.mapping == (3, 2, 1, 4) and c.source == "names"


def test_rgb_with_alpha_lacks_nir_unless_the_model_marks_it_optional():
    interps = ("Red", "Green", "Blue", "Alpha")
    c = choose_bands(4, (), interps, RGBN)
    assert not c.decided and "no nir" in c.reason and "band(s) 4 are marked alpha" in c.reason
    c = choose_bands(4, (), interps, SIX, optional=("nir", "swir1", "swir2"))
    assert c.mapping == (1, 2, 3, ABSENT, ABSENT, ABSENT) and c.bands == (1, 2, 3)
    assert c.absent == ("nir", "swir1", "swir2") and c.text() == "1,2,3,0,0,0"
    assert "swir2 absent" in c.reason


def test_optional_swir_absent_on_naip_present_on_landsat():
    naip = choose_bands(4, (), (), SIX, optional=("swir1", "swir2"))
    assert naip.mapping == (1, 2, 3, 4, ABSENT, ABSENT) and naip.absent == ("swir1", "swir2")
    etm = choose_bands(7, ETM, (), SIX, optional=("swir1", "swir2"))
    assert etm.mapping == (3, 2, 1, 4, 5, 7) and etm.absent == ()


def test_named_bands_that_lack_a_required_one_say_which():
    c = choose_bands(4, ("SWIR1", "NIR", "Red", "Green"), (), RGBN)  # Pucallpa-style
    assert not c.decided
    assert "1 swir1, 2 nir, 3 red, 4 green: no blue" in c.reason


def test_cannot_tell_for_odd_counts_and_one_band():
    assert not choose_bands(5, (), (), RGBN).decided
    assert "pick the bands" in choose_bands(5, (), (), RGBN).reason
    one = choose_bands(1, (), (), RGBN)
    assert not one.decided and "DSM" in one.reason


def test_user_choice_is_checked():
    c = user_choice(7, RGBN, (3, 2, 1, 4))
    assert c.mapping == (3, 2, 1, 4) and c.source == "user" and "picked by hand" in c.reason
    assert user_choice(3, SIX, (1, 2, 3, 0, 0, 0), optional=("nir", "swir1", "swir2")).absent
    with pytest.raises(RasterInputError, match="band 9 for nir does not exist"):
        user_choice(7, RGBN, (3, 2, 1, 9))
    with pytest.raises(RasterInputError, match="needs a band for nir"):
        user_choice(7, RGBN, (3, 2, 1, 0))
    with pytest.raises(RasterInputError, match="has 3 number"):
        user_choice(7, RGBN, (3, 2, 1))


def _gdal_bands(path: Path) -> tuple[int, list, list]:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    names = [b.GetDescription() for b in bands]
    interps = [gdal.GetColorInterpretationName(b.GetColorInterpretation()) for b in bands]
    return ds.RasterCount, names, interps


def test_real_demo_landsat_scene(tmp_path):
    """The 7-band Landsat scene make demo uses: the choice equals the demo's BANDS 3,2,1,4."""
    if not DEMO_SCENE.is_file():
        pytest.skip("the demo scene is fetched by make demo")
    count, names, interps = _gdal_bands(DEMO_SCENE)
    c = choose_bands(count, names, interps, RGBN, hints=(DEMO_SCENE.name,))
    assert c.mapping == (3, 2, 1, 4) and c.source == "sensor"


def test_real_naip_and_orthophoto(shared_data):
    naip = sorted((shared_data / "naip_north_dakota").glob("*.tif"))[0]
    count, names, interps = _gdal_bands(naip)
    assert choose_bands(count, names, interps, RGBN).mapping == (1, 2, 3, 4)
    ortho = shared_data / "swellendam" / "3320D_2010_315_RGB_LATLNG.tif"
    count, names, interps = _gdal_bands(ortho)
    assert not choose_bands(count, names, interps, RGBN).decided  # RGBA: no near-infrared
    c = choose_bands(count, names, interps, SIX, optional=("nir", "swir1", "swir2"))
    assert c.bands == (1, 2, 3)


@pytest.mark.parametrize(
    ("hint", "mapping"),
    [
        ("scene_OLI_TIRS.tif", (4, 3, 2, 5)),
        ("etm_plus_scene.tif", (3, 2, 1, 4)),
        ("olive_grove.tif", ()),  # words that merely contain a sensor name say nothing
        ("hetman_farm.tif", ()),
    ],
)
def test_sensor_words_in_hints_need_word_boundaries(hint, mapping):
    assert choose_bands(7, (), (), RGBN, hints=(hint,)).mapping == mapping


def test_the_only_layout_with_every_band_wins_and_says_so():
    codes = tuple(f"B{i}" for i in range(1, 8))  # TM/ETM+ or OLI: only OLI has coastal
    c = choose_bands(7, codes, (), ("coastal", "red", "green", "blue"))
    assert c.mapping == (1, 4, 3, 2) and "the only layout that fits" in c.reason
