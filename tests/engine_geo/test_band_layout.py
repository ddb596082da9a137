"""Bands a raster lacks: an encoder with a band mask reads the rest and gets NaN planes."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import RasterInputError
from engine.grid import TileGrid
from engine.model.contract import Modality
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


def test_zero_marks_a_band_the_raster_lacks_anywhere_in_the_model_order(tmp_path):
    """RGB + SWIR1 without NIR (bands=[1, 2, 3, 0, 4, 0]): NIR and SWIR2 masked, SWIR1 read
    from band 4, which the positional rule for shorter selections could not express."""
    rgbs = write_raster(tmp_path / "rgbs.tif", random_uint8(bands=4, size=64, seed=4))
    with GdalReader(rgbs, bands=[1, 2, 3, 0, 4, 0]) as r:
        assert r.explicit_bands == (1, 2, 3, 0, 4, 0)
        lay = band_layout(r, SIX, ("nir", "swir1", "swir2"))
        assert lay.read == ("red", "green", "blue", "swir1") and lay.absent == ("nir", "swir2")
        grid = TileGrid.for_extent(
            "EPSG:32633", 10.0, 16, None, r.bounds, origin=r.bounds[:1] + r.bounds[3:]
        )
        chips, _ = read_chips(r, grid, lay, [(0, 0), (1, 1)])
        fp_zero = r.fingerprint()
    with GdalReader(rgbs, bands=[1, 2, 3, 4]) as r:  # the same four bands read as RGBN
        direct, _ = read_chips(r, grid, ("red", "green", "blue", "nir"), [(0, 0), (1, 1)])
        assert r.fingerprint() != fp_zero  # another selection, another cache entry
    np.testing.assert_array_equal(chips[:, [0, 1, 2, 4]], direct)
    assert np.isnan(chips[:, [3, 5]]).all()
    with GdalReader(rgbs, bands=[0, 2, 3, 1, 4, 0]) as r:  # red cannot be absent
        with pytest.raises(RasterInputError, match=r"marks red absent \(0\)"):
            band_layout(r, SIX, ("nir", "swir1", "swir2"))
    with GdalReader(rgbs, bands=[1, 2, 3, 0]) as r:  # one entry per model band
        with pytest.raises(RasterInputError, match="has 4 entries but the model has 6"):
            band_layout(r, SIX, ("nir", "swir1", "swir2"))
    with GdalReader(rgbs, bands=[1, 2, 3, 0]) as r:  # an encoder without a band mask
        with pytest.raises(RasterInputError, match="masks no band"):
            band_layout(r, SIX[:4], ())
    for bad in ([0, 0, 0], [1, 2, 5], []):
        with pytest.raises(RasterInputError, match="0 marks a model band"):
            GdalReader(rgbs, bands=bad)


def test_red_green_blue_are_never_optional(tmp_path):
    two = write_raster(tmp_path / "two.tif", random_uint8(bands=2, size=32))
    with GdalReader(two) as r, pytest.raises(RasterInputError, match="needs 6 band"):
        band_layout(r, SIX, ("nir", "swir1", "swir2"))


def test_an_rgb_raster_embeds_with_the_nir_masked(analytic_bundle, tmp_path):
    """End to end (CLI): a 3-band raster feeds the 4-band analytic encoder, NIR masked.

    Its store must hold what the encoder gives the RGBN chips of the same place with the NIR
    masked (whatever the NIR values), and differ from the RGBN store (a real NIR counts).
    """
    from engine.cli.main import main as cli_main
    from engine.model import UniGeoModel
    from engine.store import open_store

    rgbn = random_uint8(bands=4, size=64, seed=5)
    paths = {
        "rgb": write_raster(tmp_path / "rgb.tif", rgbn[:3]),
        "rgbn": write_raster(tmp_path / "rgbn.tif", rgbn),
    }
    emb = {}
    for k, p in paths.items():
        out = tmp_path / f"{k}.store"
        assert cli_main(["embed", str(p), "--model", str(analytic_bundle), "--out", str(out)]) == 0
        s = open_store(out)
        emb[k], grid = np.array(s.embeddings), s.grid
        assert s.valid.all() and np.isfinite(emb[k]).all()
        assert s.meta.get("absent_bands", []) == (["nir"] if k == "rgb" else [])
        s.close()
    assert np.abs(emb["rgb"] - emb["rgbn"]).max() > 1e-3
    cells = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    with GdalReader(paths["rgbn"]) as r:
        chips, _ = read_chips(r, grid, ("red", "green", "blue", "nir"), cells)
    model = UniGeoModel.load(analytic_bundle)
    try:
        want = model.encode_tiles(Modality.AERIAL, chips, band_mask=[1, 1, 1, 0])
    finally:
        model.close()
    got = emb["rgb"].reshape(-1, emb["rgb"].shape[-1])
    np.testing.assert_allclose(got, want, atol=1e-3)  # the store keeps float16
