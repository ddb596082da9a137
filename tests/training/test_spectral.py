"""The spectral stream: indices on known pixels, and an absent band masked rather than zero-filled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.models.spectral import INDICES, SpectralStream, compute_indices, index_pairs

BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")
MEAN, STD = (0.3,) * 6, (0.2,) * 6


def _stream(**kw) -> SpectralStream:
    torch.manual_seed(0)
    return SpectralStream(BANDS, MEAN, STD, width=16, out_dim=32, size=8, **kw).eval()


def _normalised(raw: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((raw - 0.3) / 0.2).astype(np.float32))


def test_index_pairs_follow_band_names():
    assert [n for n, _, _ in index_pairs(BANDS)] == ["ndvi", "ndwi", "mndwi", "ndbi"]
    assert [n for n, _, _ in index_pairs(("red", "green", "blue", "nir"))] == ["ndvi", "ndwi"]
    # order of the tower's bands does not matter: names do
    pairs = dict((n, (i, j)) for n, i, j in index_pairs(("nir", "swir1", "green", "red")))
    assert pairs == {"ndvi": (0, 3), "ndwi": (2, 0), "mndwi": (2, 1), "ndbi": (1, 0)}
    assert set(INDICES) == {"ndvi", "ndwi", "mndwi", "ndbi"}


def test_indices_on_known_pixels():
    # one vegetated pixel, one water pixel (reflectances typical of Sentinel-2 L2A)
    veg = {"red": 0.04, "green": 0.08, "blue": 0.03, "nir": 0.40, "swir1": 0.20, "swir2": 0.10}
    water = {"red": 0.03, "green": 0.06, "blue": 0.08, "nir": 0.02, "swir1": 0.01, "swir2": 0.01}
    raw = torch.tensor([[[[veg[b], water[b]]] for b in BANDS]])  # [1, 6, 1, 2]
    idx, im = compute_indices(raw, torch.ones(1, 6), index_pairs(BANDS))
    got = {n: idx[0, k, 0].tolist() for k, (n, _, _) in enumerate(index_pairs(BANDS))}
    want = {
        "ndvi": [(0.40 - 0.04) / 0.44, (0.02 - 0.03) / 0.05],
        "ndwi": [(0.08 - 0.40) / 0.48, (0.06 - 0.02) / 0.08],
        "mndwi": [(0.08 - 0.20) / 0.28, (0.06 - 0.01) / 0.07],
        "ndbi": [(0.20 - 0.40) / 0.60, (0.01 - 0.02) / 0.03],
    }
    for n in want:
        np.testing.assert_allclose(got[n], want[n], atol=3e-3, err_msg=n)
    assert im.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_chip_statistics_on_a_known_chip():
    """Half the chip water, half vegetation: index means and fractions come out exactly."""
    raw = np.zeros((1, 6, 8, 8), np.float32)
    for k, v in enumerate((0.04, 0.08, 0.03, 0.40, 0.20, 0.10)):
        raw[0, k, :, :4] = v
    for k, v in enumerate((0.03, 0.06, 0.08, 0.02, 0.01, 0.01)):
        raw[0, k, :, 4:] = v
    with torch.no_grad():
        f = _stream().features(_normalised(raw), torch.ones(1, 6))[0]
    c, k = 6, 4
    b_mean, i_mean, i_frac = f[:c], f[2 * c : 2 * c + k], f[2 * c + 2 * k : 2 * c + 3 * k]
    np.testing.assert_allclose(b_mean[3], (0.40 + 0.02) / 2, atol=1e-5)
    ndvi = ((0.36 / 0.44) + (-0.01 / 0.05)) / 2
    np.testing.assert_allclose(i_mean[0], ndvi, atol=2e-3)
    # NDVI > 0 on the vegetated half, NDWI and MNDWI > 0 on the water half, NDBI never
    np.testing.assert_allclose(i_frac.tolist(), [0.5, 0.5, 0.5, 0.0], atol=1e-6)


def test_missing_band_is_masked_not_zero_filled():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.05, 0.5, size=(3, 6, 8, 8)).astype(np.float32)
    s = _stream()
    no_swir = torch.tensor([[1, 1, 1, 1, 0, 0]] * 3, dtype=torch.float32)
    with torch.no_grad():
        a = s(_normalised(raw), no_swir)
        other = raw.copy()
        other[:, 4:] = rng.uniform(0, 1, size=(3, 2, 8, 8))  # whatever the SWIR planes hold
        b = s(_normalised(other), no_swir)
        zero = raw.copy()
        zero[:, 4:] = 0.0
        c = s(_normalised(zero), torch.ones(3, 6))  # zero-filled: SWIR "present" and black
        f_masked = s.features(_normalised(raw), no_swir)
        f_zero = s.features(_normalised(zero), torch.ones(3, 6))
    torch.testing.assert_close(a, b)  # masked: the absent band has no influence at all
    assert (a - c).abs().max() > 1e-2  # and it is not the same as a band of zeros
    k_mndwi = 6 * 2 + 2  # index means start after band means and stds; mndwi is the third
    assert torch.all(f_masked[:, k_mndwi] == 0)  # MNDWI needs SWIR: masked
    assert torch.all(f_zero[:, k_mndwi] > 0.99)  # zero-filled SWIR would read as all water


@pytest.mark.parametrize("size", [8, 16])
def test_stream_pools_to_its_size(size):
    s = SpectralStream(BANDS, MEAN, STD, width=8, out_dim=16, size=8)
    out = s(torch.randn(2, 6, size, size), torch.ones(2, 6))
    assert out.shape == (2, 16) and torch.isfinite(out).all()


def test_histograms_count_pixels_per_bin():
    from training.models.spectral import _histogram

    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, :, :2] = 0.05  # half the pixels in bin 0 of [0, 1] (8 bins)
    x[0, 0, :, 2:] = 0.95  # half in bin 7
    x[0, 1] = 1.0  # the top edge belongs to the last bin
    h = _histogram(x, torch.tensor([[1.0, 0.0]]), 0.0, 1.0, 8).view(2, 8)
    assert h[0].tolist() == [0.5, 0, 0, 0, 0, 0, 0, 0.5]
    assert h[1].sum() == 0  # an absent band: masked
    h1 = _histogram(x, torch.ones(1, 2), 0.0, 1.0, 8).view(2, 8)
    assert h1[1].tolist() == [0, 0, 0, 0, 0, 0, 0, 1.0]


def test_quantile_target_on_a_known_chip_and_a_masked_band():
    """The training-only reconstruction target (``model.recon_quantiles``): per band the 10th,
    50th and 90th percentiles of the raw [0, 1] values; an absent band gives zeros."""
    s = _stream()
    raw = np.zeros((1, 6, 10, 10), np.float32)
    raw[0, 0] = np.linspace(0.0, 0.99, 100).reshape(10, 10)  # red: 0.00 ... 0.99
    raw[0, 3] = 0.4  # NIR constant
    mask = torch.tensor([[1, 1, 1, 1, 0, 1]], dtype=torch.float32)  # SWIR1 absent
    q = s.quantiles(_normalised(raw), mask).view(1, 6, 3)
    assert s.quantiles_dim == 18
    np.testing.assert_allclose(q[0, 0].numpy(), [0.099, 0.495, 0.891], atol=1e-4)
    np.testing.assert_allclose(q[0, 3].numpy(), [0.4, 0.4, 0.4], atol=1e-5)
    assert (q[0, 4] == 0).all()
