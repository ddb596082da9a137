"""Sensor scaling at inference: raw 16-bit reflectance becomes what the training chips held."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import RasterInputError
from engine.raster.gdal_reader import GdalReader
from engine.raster.sensors import get_sensor, sensor_names
from tests.reliability.conftest import UTM_CRS, UTM_ORIGIN, write_raster

SIX = ("red", "green", "blue", "nir", "swir1", "swir2")


@pytest.fixture()
def s2_stack(tmp_path):
    """Six uint16 bands as a Sentinel-2 L1C stack (B04, B03, B02, B08, B11, B12), 0 = no data."""
    rng = np.random.default_rng(7)
    data = rng.integers(1, 9000, (6, 32, 32), dtype=np.uint16)
    data[:, :4, :4] = 0  # a corner of no data
    return write_raster(tmp_path / "s2.tif", data), data


def test_sensor_rule_reads_reflectance_as_the_training_chips(s2_stack):
    path, raw = s2_stack
    sensor = get_sensor("sentinel2_l1c")
    with GdalReader(path, bands=[1, 2, 3, 4, 5, 6], scale="sensor:sentinel2_l1c") as r:
        assert r.scaling == "sensor:sentinel2_l1c"
        x0, y0 = UTM_ORIGIN
        tile = r.read_tile((x0, y0 - 320, x0 + 320, y0), UTM_CRS, 10.0, 32, SIX)
    want = np.stack([sensor.to_model(raw[i], b) for i, b in enumerate(SIX)])
    valid = raw[0] != 0
    np.testing.assert_allclose(tile[:, valid], want[:, valid], atol=1e-6)
    assert np.isnan(tile[:, ~valid]).all()  # the sensor's no-data value (0) is no data
    # reflectance / reflectance_max: NIR (max 0.5) is scaled less steeply than red (max 0.3)
    assert sensor.offset_span("nir")[1] > sensor.offset_span("red")[1]


def test_sensor_scaling_is_part_of_the_fingerprint(s2_stack):
    path, _ = s2_stack
    with GdalReader(path, scale="sensor:sentinel2_l1c") as a, GdalReader(path) as b:
        assert a.fingerprint() != b.fingerprint()
        assert b.scaling.startswith("percentile")  # 16-bit without a sensor: a stretch


def test_unknown_sensor_and_non_imagery_bands_are_refused(s2_stack):
    path, _ = s2_stack
    with pytest.raises(RasterInputError, match="unknown sensor 'sentinel9'.*sentinel2_l1c"):
        GdalReader(path, scale="sensor:sentinel9")
    with GdalReader(path, bands=[1], scale="sensor:sentinel2_l1c") as r:
        x0, y0 = UTM_ORIGIN
        with pytest.raises(RasterInputError, match="applies to imagery bands"):
            r.read_tile((x0, y0 - 320, x0 + 320, y0), UTM_CRS, 10.0, 32, ("height",))


def test_cli_sensor_option_embeds_with_the_rule(s2_stack, analytic_bundle, tmp_path, capsys):
    from engine.cli.main import main
    from engine.store import open_store

    path, _ = s2_stack
    assert "sentinel2_l2a" in sensor_names()
    out = tmp_path / "s.store"
    base = ["embed", str(path), "--model", str(analytic_bundle), "--bands", "1,2,3,4"]
    assert main([*base, "--sensor", "sentinel2_l1c", "--out", str(out)]) == 0
    s = open_store(out)
    assert s.info["scaling"] == "sensor:sentinel2_l1c" and s.valid.any()
    s.close()
    assert main([*base, "--sensor", "sentinel2_l1c", "--scale", "dtype", "--out", str(out)]) == 2
    assert "give --sensor or --scale, not both" in capsys.readouterr().err
