"""GeoCLIP's pretrained location encoder, re-implemented in torch, as the GPS-probe baseline.

GeoCLIP (Vivanco Cepeda, Nayak & Shah, NeurIPS 2023) encodes (lat, lon) by an Equal Earth
projection, three Gaussian random-Fourier-feature maps (sigma = 2^0, 2^4, 2^8; the [256, 2]
projection matrices are stored with the weights), one MLP per scale (512 -> 1024 -> 1024 -> 1024
-> 512) and the sum of the three branch outputs. Only its released weights are used: they are
read out of the ``geoclip`` wheel (fetched with ``pip download --no-deps``, never installed or
imported, since it pulls torchvision and its own torch) with ``torch.load(weights_only=True)``.
The module names below mirror the layout of that state dict so it loads with ``strict=True``.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from engine.errors import ModelContractError

from .data.sources import RegistryFile, registry_bytes

GEOCLIP_WEIGHTS = RegistryFile(
    "geoclip", "1.3.0", "geoclip/model/weights/location_encoder_weights.pth", "MIT"
)
SIGMAS = (2.0**0, 2.0**4, 2.0**8)  # RFF bandwidths of the three released branches
RFF_FEATURES = 256  # rows of each projection matrix B (cos and sin give 512 inputs)
HIDDEN = 1024  # MLP width of every branch
EMBED_DIM = 512  # output dimension (GeoCLIP's shared image-GPS space)

# Equal Earth polynomial coefficients (Šavrič, Patterson & Jenny 2018).
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
# GeoCLIP scales the unit-sphere projection by SF / 180. SF = 180 / x_max, so x lies in
# [-1, 1] while y keeps the map's aspect ratio (|y| <= ~0.4867): this is not the same
# normalisation as training.models.gps.equal_earth, which stretches y to [-1, 1] as well.
SCALE_FACTOR = 66.50336


def default_cache() -> Path:
    """``data-cache/pip`` at the repository root (where the data builders cache wheels)."""
    return Path(__file__).resolve().parents[1] / "data-cache" / "pip"


def geoclip_equal_earth(latlon: Tensor) -> Tensor:
    """GeoCLIP's Equal Earth projection of ``[N, 2]`` (lat, lon) degrees, as float64 ``[N, 2]``.

    Computed in float64 (GeoCLIP uses float32); the 2^8 branch multiplies the projection by
    phases of thousands of radians, so float64 removes a ~1e-4 rad rounding wobble.
    """
    ll = latlon.double()
    phi = torch.deg2rad(ll[:, 0].clamp(-90.0, 90.0))
    lam = torch.deg2rad(ll[:, 1])
    theta = torch.asin(math.sqrt(3.0) / 2.0 * torch.sin(phi))
    t2 = theta * theta
    t6 = t2 * t2 * t2
    x = 2.0 * math.sqrt(3.0) * lam * torch.cos(theta)
    x = x / (3.0 * (_A1 + 3.0 * _A2 * t2 + t6 * (7.0 * _A3 + 9.0 * _A4 * t2)))
    y = theta * (_A1 + _A2 * t2 + t6 * (_A3 + _A4 * t2))
    return torch.stack([x, y], dim=1) * (SCALE_FACTOR / 180.0)


class FourierFeatures(nn.Module):
    """Gaussian random Fourier features (Tancik et al. 2020): ``[cos 2*pi*vB^T, sin 2*pi*vB^T]``.

    ``b`` is a buffer, not a parameter: it is fixed and comes from the released weights.
    """

    def __init__(self, num_features: int = RFF_FEATURES, in_dim: int = 2) -> None:
        super().__init__()
        self.register_buffer("b", torch.zeros(num_features, in_dim))

    def forward(self, v: Tensor) -> Tensor:
        # Phase in float64 then reduced modulo one cycle, so float32 sin/cos stay exact.
        cycles = v.double() @ self.b.double().T
        phase = (2.0 * math.pi) * (cycles - torch.floor(cycles))
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1).float()


class ScaleBranch(nn.Module):
    """One bandwidth: Fourier features, a three-layer ReLU MLP (``capsule``) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.capsule = nn.Sequential(
            FourierFeatures(),
            nn.Linear(2 * RFF_FEATURES, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(HIDDEN, EMBED_DIM))

    def forward(self, v: Tensor) -> Tensor:
        return self.head(self.capsule(v))


class GeoClipLocationEncoder(nn.Module):
    """``forward(latlon [N, 2] degrees) -> [N, 512]`` (unnormalised, as GeoCLIP returns it)."""

    def __init__(self, num_scales: int = len(SIGMAS)) -> None:
        super().__init__()
        self.num_scales = num_scales
        # Named LocEnc0..2 because those are the keys of the released state dict.
        for i in range(num_scales):
            self.add_module(f"LocEnc{i}", ScaleBranch())

    def forward(self, latlon: Tensor) -> Tensor:
        v = geoclip_equal_earth(latlon)
        return sum(self.get_submodule(f"LocEnc{i}")(v) for i in range(self.num_scales))

    @torch.no_grad()
    def encode(self, lat: np.ndarray, lon: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """L2-normalised embeddings, float32 ``[N, 512]``, of points given in degrees."""
        ll = np.stack([np.asarray(lat, np.float64), np.asarray(lon, np.float64)], axis=1)
        out = []
        for start in range(0, len(ll), batch_size):
            x = self(torch.from_numpy(ll[start : start + batch_size]))
            out.append(nn.functional.normalize(x, dim=-1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, EMBED_DIM), np.float32)


def load_state_dict_bytes(data: bytes) -> dict[str, Tensor]:
    """Read a ``.pth`` state dict safely (tensors only; pickled code is refused)."""
    try:
        sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise ModelContractError(f"GeoCLIP weights are unreadable ({e})") from None
    if not isinstance(sd, dict):
        raise ModelContractError("GeoCLIP weights are not a state dict")
    return sd


def load_geoclip_location_encoder(cache_dir: str | Path | None = None) -> GeoClipLocationEncoder:
    """GeoCLIP's released location encoder (strict load, eval mode, CPU).

    Args:
        cache_dir: where the ``geoclip`` wheel is cached (default ``data-cache/pip``).

    Raises:
        InputError: the wheel is not cached and cannot be downloaded (offline).
        ModelContractError: the weights do not match the architecture.
    """
    sd = load_state_dict_bytes(registry_bytes(GEOCLIP_WEIGHTS, cache_dir or default_cache()))
    model = GeoClipLocationEncoder()
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelContractError(f"GeoCLIP weights do not fit the location encoder: {e}") from None
    for i, sigma in enumerate(SIGMAS):
        # The released B matrices were drawn as N(0, sigma^2); a wrong branch order shows here.
        std = float(model.get_submodule(f"LocEnc{i}").capsule[0].b.std())
        if not 0.8 * sigma < std < 1.25 * sigma:
            raise ModelContractError(f"GeoCLIP branch {i}: B has std {std:.3g}, want ~{sigma}")
    return model.eval()
