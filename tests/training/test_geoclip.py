"""GeoCLIP's location encoder: projection constants, strict loading, a float32 reference, geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError, ModelContractError
from training.geoclip_baseline import (
    GEOCLIP_WEIGHTS,
    GeoClipLocationEncoder,
    geoclip_equal_earth,
    load_geoclip_location_encoder,
    load_state_dict_bytes,
)
from training.models.gps import EE_MAX_X, EE_MAX_Y, equal_earth


@pytest.fixture(scope="module")
def geoclip():
    try:
        return load_geoclip_location_encoder()
    except InputError as e:
        pytest.skip(f"geoclip {GEOCLIP_WEIGHTS.version} wheel not cached and not downloadable: {e}")


def test_equal_earth_matches_hand_computed_values():
    # x(0, 180) = 2*sqrt(3)*pi / (3*A1) * SF/180; y(90, 0) = theta*(A1 + A2 t^2 + ...) * SF/180
    # with theta = asin(sqrt(3)/2) = pi/3; both worked out by hand from GeoCLIP's constants.
    pts = torch.tensor([[0.0, 180.0], [90.0, 0.0], [45.0, 90.0], [-30.0, -60.0]])
    want = [
        [0.99999993, 0.0],
        [0.0, 0.48671694],
        [0.42852345, 0.31782365],
        [-0.31179013, -0.21906765],
    ]
    np.testing.assert_allclose(geoclip_equal_earth(pts).numpy(), want, atol=1e-7)


def test_equal_earth_agrees_with_our_projection_up_to_scaling():
    rng = np.random.default_rng(0)
    ll = torch.tensor(np.stack([rng.uniform(-90, 90, 50), rng.uniform(-180, 180, 50)], 1))
    ours = equal_earth(ll).numpy() * [EE_MAX_X, EE_MAX_Y] * 66.50336 / 180.0
    np.testing.assert_allclose(geoclip_equal_earth(ll).numpy(), ours, atol=1e-9)


def test_strict_loading_rejects_missing_and_extra_keys(geoclip):
    sd = geoclip.state_dict()
    assert len(sd) == 27 and sd["LocEnc2.capsule.0.b"].shape == (256, 2)
    bad = dict(sd)
    del bad["LocEnc1.head.0.bias"]
    with pytest.raises(RuntimeError, match="Missing key"):
        GeoClipLocationEncoder().load_state_dict(bad, strict=True)
    with pytest.raises(ModelContractError, match="unreadable"):
        load_state_dict_bytes(b"not a torch file")


def _reference(sd: dict, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """GeoCLIP's forward written out in numpy float32, the way its own code computes it."""
    a1, a2, a3, a4, sf = 1.340264, -0.081106, 0.000893, 0.003796, 66.50336
    t = np.arcsin(np.float32(np.sqrt(3) / 2) * np.sin(np.radians(lat, dtype=np.float32)))
    x = (
        2
        * np.sqrt(3)
        * np.radians(lon)
        * np.cos(t)
        / (3 * (9 * a4 * t**8 + 7 * a3 * t**6 + 3 * a2 * t**2 + a1))
    )
    y = a4 * t**9 + a3 * t**7 + a2 * t**3 + a1 * t
    v = (np.stack([x, y], 1) * sf / 180).astype(np.float32)
    total = np.zeros((len(lat), 512), np.float32)
    for i in range(3):
        p = {k.split(".", 1)[1]: w.numpy() for k, w in sd.items() if k.startswith(f"LocEnc{i}.")}
        h = 2 * np.pi * v @ p["capsule.0.b"].T
        h = np.concatenate([np.cos(h), np.sin(h)], 1)
        for j in (1, 3, 5):
            h = np.maximum(h @ p[f"capsule.{j}.weight"].T + p[f"capsule.{j}.bias"], 0)
        total += h @ p["head.0.weight"].T + p["head.0.bias"]
    return total / np.linalg.norm(total, axis=1, keepdims=True)


def test_encode_matches_float32_reference_and_is_normalised(geoclip):
    lat = np.array([48.8566, -33.87, 0.0, 64.1, -77.8], np.float32)
    lon = np.array([2.3522, 151.21, -30.0, -21.9, 166.7], np.float32)
    emb = geoclip.encode(lat, lon)
    assert emb.shape == (5, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    ref = _reference(geoclip.state_dict(), lat, lon)
    # float32 phases of the 2^8 branch (up to ~5000 rad) limit the agreement to ~1e-3.
    np.testing.assert_allclose(emb, ref, atol=5e-3)
    assert (emb * ref).sum(1).min() > 0.9999


def test_nearby_points_are_more_similar_than_far_ones(geoclip):
    # Paris, a point ~2 km away, Sydney, the mid-Atlantic and the mid-Pacific.
    e = geoclip.encode([48.8566, 48.87, -33.87, 0.0, 0.0], [2.3522, 2.37, 151.21, -30.0, -150.0])
    sims = e @ e.T
    assert sims[0, 1] > 0.8
    assert sims[0, 1] > sims[0, 2] + 0.4 and sims[0, 1] > sims[0, 3] + 0.4
    assert sims[0, 4] < 0.2
