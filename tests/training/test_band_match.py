"""Dataset chips to tower inputs: bands matched by name with a mask, and the contract footprint."""

from __future__ import annotations

import numpy as np

from training.band_match import footprint_crop, match_bands, rebanded

WANT = ("red", "green", "blue", "nir", "swir1", "swir2")


def test_bands_are_matched_by_name_and_missing_ones_masked():
    chip = np.stack([np.full((4, 4), v, np.float32) for v in (0.1, 0.2, 0.3)])  # nir, red, green
    out = match_bands(chip, ("nir", "red", "green"), WANT)
    assert out.shape == (6, 4, 4)
    assert out[0, 0, 0] == np.float32(0.2) and out[1, 0, 0] == np.float32(0.3)
    assert out[3, 0, 0] == np.float32(0.1) and np.isnan(out[[2, 4, 5]]).all()
    samples, mask = rebanded(
        [{"aerial": chip, "aerial_bands": ("nir", "red", "green")}, {"text": "no image"}],
        ("red", "green", "blue", "nir"),
        WANT,
    )
    assert mask.tolist() == [[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert "aerial_bands" not in samples[0] and samples[0]["aerial"].shape == (6, 4, 4)


def test_coarse_chips_are_cut_to_the_contract_footprint():
    chip = np.arange(32 * 32, dtype=np.float32).reshape(1, 32, 32)
    cut = footprint_crop(chip, 30.0, 320.0)  # 32 px x 30 m = 960 m -> 11 px (330 m)
    assert cut.shape == (1, 11, 11) and cut[0, 0, 0] == chip[0, 10, 10]
    assert footprint_crop(chip, 10.0, 320.0) is chip  # 320 m already
    assert footprint_crop(chip, 2.5, 320.0) is chip  # finer imagery: smaller than the footprint
    assert footprint_crop(chip, 90.0, 320.0).shape == (1, 4, 4)  # 2.9 km -> 4 px (360 m)
    assert footprint_crop(chip, None, 320.0) is chip
