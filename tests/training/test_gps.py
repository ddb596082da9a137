"""The multi-scale GPS encoder: Equal Earth projection, batch independence, scale ablation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from training.config import GpsTowerConfig
from training.models.gps import GpsEncoder, equal_earth, single_scale


def test_equal_earth_is_finite_bounded_and_hits_its_extremes():
    lat = torch.linspace(-90, 90, 181)
    lon = torch.linspace(-180, 180, 361)
    grid = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    xy = equal_earth(grid)
    assert torch.isfinite(xy).all()
    assert xy.abs().max() <= 1.0 + 1e-9
    corners = equal_earth(torch.tensor([[0.0, 180.0], [0.0, -180.0], [90.0, 0.0], [-90.0, 0.0]]))
    expect = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    assert torch.allclose(corners, expect, atol=1e-9)


def test_equal_earth_is_monotone_in_lon_and_lat():
    lon = torch.linspace(-179.5, 179.5, 300)
    for lat in (-80.0, -30.0, 0.0, 45.0, 89.0):
        x = equal_earth(torch.stack([torch.full_like(lon, lat), lon], -1))[:, 0]
        assert (x.diff() > 0).all()
    lat = torch.linspace(-89.5, 89.5, 300)
    for lon0 in (-170.0, 0.0, 120.0):
        y = equal_earth(torch.stack([lat, torch.full_like(lat, lon0)], -1))[:, 1]
        assert (y.diff() > 0).all()


def test_equal_earth_matches_pyproj():
    pyproj = pytest.importorskip("pyproj")
    pts = torch.tensor([[47.0, -99.1], [-34.0, 20.5], [55.7, 13.2], [-8.4, -74.5]])
    x, y = pyproj.Proj("+proj=eqearth +R=1")(pts[:, 1].numpy(), pts[:, 0].numpy())
    from training.models.gps import EE_MAX_X, EE_MAX_Y

    ours = equal_earth(pts)
    assert torch.allclose(ours[:, 0], torch.tensor(x, dtype=torch.float64) / EE_MAX_X, atol=1e-6)
    assert torch.allclose(ours[:, 1], torch.tensor(y, dtype=torch.float64) / EE_MAX_Y, atol=1e-6)


@pytest.mark.parametrize("train_mode", [False, True])
def test_gps_embedding_is_batch_independent(train_mode):
    torch.manual_seed(0)
    enc = GpsEncoder(GpsTowerConfig(), 32).train(train_mode)
    pts = torch.tensor([[47.0, -99.1], [-34.0, 20.5], [55.7, 13.2], [0.0, 0.0], [89.9, 179.9]])
    with torch.no_grad():
        alone = torch.cat([enc(p[None]) for p in pts])
        together = enc(pts)
        shuffled = enc(pts.flip(0)).flip(0)
        padded = enc(torch.cat([pts, torch.randn(11, 2) * 40]))[: len(pts)]
    for other in (together, shuffled, padded):
        assert torch.allclose(alone, other, atol=1e-6)
    assert torch.allclose(alone.norm(dim=1), torch.ones(len(pts)), atol=1e-5)


def test_finest_scale_separates_points_hundreds_of_metres_apart():
    torch.manual_seed(0)
    enc = GpsEncoder(GpsTowerConfig(), 32).eval()
    a = torch.tensor([[47.0, -99.1]])
    b = a + torch.tensor([[0.0, 0.01]])  # about 760 m east (period of sigma=4096: ~4 km)
    with torch.no_grad():
        ta, tb = enc.scale_tokens(a), enc.scale_tokens(b)
    assert torch.allclose(ta[:, 0], tb[:, 0], atol=1e-3)  # sigma = 1: the same place
    assert (ta[:, -1] - tb[:, -1]).abs().max() > 0.5  # sigma = 4096: clearly different


def test_parameter_count_does_not_grow_with_scales_and_single_scale_works():
    cfg = GpsTowerConfig()
    multi = GpsEncoder(cfg, 32)
    single = GpsEncoder(single_scale(cfg), 32)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(multi) == n(single)
    assert multi.rff.shape == (4, 2, cfg.width // 2) and single.rff.shape[0] == 1
    assert single(torch.tensor([[10.0, 10.0]])).shape == (1, 32)
    wide = GpsEncoder(replace(cfg, sigmas=tuple(2.0**k for k in range(8))), 32)
    assert n(wide) == n(multi)
    assert math.isclose(float(multi.rff[3].std()), 4096.0, rel_tol=0.5)
