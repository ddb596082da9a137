"""Bands a raster lacks: an encoder with a band mask reads the rest and gets NaN planes."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import RasterInputError
from engine.grid import TileGrid
from engine.raster.batch import read_chips
from engine.raster.gdal_reader import GdalReader
from engine.raster.layout import BandLayout, band_layout, optional_bands
from tests.reliability.conftest import random_uint8, write_raster

SIX = ("red", "green", "blue", "nir", "swir1", "swir2")


def test_optional_bands_need_a_band_mask_input():
    assert optional_bands(("pixels",), SIX) == ()
    assert optional_bands(("pixels", "band_mask"), SIX) == ("nir", "swir1", "swir2")


def test_scatter_puts_nan_planes_where_bands_are_absent():
    lay = BandLayout(SIX, ("red", "green", "blue", "nir"))
    chips = np.arange(2 * 4 * 2 * 2, dtype=np.float32).reshape(2, 4, 2, 2)
    out = lay.scatter(chips)
    assert out.shape == (2, 6, 2, 2) and lay.absent == ("swir1", "swir2")
    np.testing.assert_array_equal(out[:, :4], chips)
    assert np.isnan(out[:, 4:]).all()
    full = BandLayout(SIX, SIX)
    assert full.complete and full.scatter(chips) is chips


@pytest.fixture()
def naip_like(tmp_path):
    """Four unnamed uint8 bands (as NAIP): red, green, blue, NIR by position."""
    return write_raster(tmp_path / "rgbn.tif", random_uint8(bands=4, size=64, seed=3))


def test_a_four_band_raster_feeds_a_six_band_encoder(naip_like):
    with GdalReader(naip_like) as r:
        with pytest.raises(RasterInputError):
            r.check_bands(SIX)  # without a band mask: refused, as before
        lay = band_layout(r, SIX, ("nir", "swir1", "swir2"))
        assert lay.read == ("red", "green", "blue", "nir")
        grid = TileGrid.for_extent(
            "EPSG:32633", 10.0, 16, None, r.bounds, origin=r.bounds[:1] + r.bounds[3:]
        )
        chips, frac = read_chips(r, grid, lay, [(0, 0), (1, 1)])
        direct, _ = read_chips(r, grid, lay.read, [(0, 0), (1, 1)])
    assert chips.shape == (2, 6, 16, 16)
    np.testing.assert_array_equal(chips[:, :4], direct)
    assert np.isnan(chips[:, 4:]).all()
    np.testing.assert_array_equal(frac, 0.0)  # absent bands are not no data


def test_an_explicit_selection_of_fewer_bands_takes_the_first_optional_ones(naip_like):
    with GdalReader(naip_like, bands=[3, 2, 1]) as r:
        assert band_layout(r, SIX, ("nir", "swir1", "swir2")).read == ("red", "green", "blue")
    with GdalReader(naip_like, bands=[1, 2, 3, 4]) as r:
        lay = band_layout(r, SIX, ("nir", "swir1", "swir2"))
        assert lay.read == ("red", "green", "blue", "nir")


def test_red_green_blue_are_never_optional(tmp_path):
    two = write_raster(tmp_path / "two.tif", random_uint8(bands=2, size=32))
    with GdalReader(two) as r, pytest.raises(RasterInputError, match="needs 6 band"):
        band_layout(r, SIX, ("nir", "swir1", "swir2"))
