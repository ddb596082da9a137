"""The multi-scale GPS encoder: Equal Earth projection, random Fourier features, transformer.

Follows UniGeoCLIP (arXiv 2604.11668): (lat, lon) degrees are projected with Equal Earth
(Šavrič, Patterson & Jenny 2018), encoded by K random-Fourier-feature matrices of increasing
bandwidth (one token per scale), joined by R learned register tokens, mixed by L transformer
blocks with per-sample attention, and the mean of the K scale tokens is projected to D.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import GpsTowerConfig
from .blocks import Transformer, init_weights, l2_normalize

# Equal Earth polynomial coefficients (Šavrič et al. 2018).
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
_M = math.sqrt(3.0) / 2.0
# Extents on the unit sphere: x at lon = ±180°, lat = 0; y at lat = ±90° (theta = pi/3).
EE_MAX_X = 2.0 * math.sqrt(3.0) * math.pi / (3.0 * _A1)
_T = math.pi / 3.0
EE_MAX_Y = _T * (_A1 + _A2 * _T**2 + _T**6 * (_A3 + _A4 * _T**2))


def equal_earth(latlon: Tensor) -> Tensor:
    """Project ``[..., 2]`` (lat, lon) degrees to Equal Earth (x, y), each scaled to [-1, 1].

    Computed in float64 (returned as float64): the finest Fourier scale turns a 1-ulp float32
    error here into a visible embedding change, and torch and onnxruntime round float32
    transcendentals differently. onnxruntime has no float64 Asin, so theta is a float32 asin
    refined by one Newton step in float64 (error ~1e-14 rad). Longitudes must already lie in
    [-180, 180): the engine's ``validate_latlon`` wraps them before the encoder, in training
    (collate) as at inference.
    """
    ll = latlon.double()
    phi = ll[..., 0].clamp(-90.0, 90.0) * (math.pi / 180.0)
    lam = ll[..., 1] * (math.pi / 180.0)
    z = _M * torch.sin(phi)
    theta = torch.asin(z.float()).double()
    theta = theta - (torch.sin(theta) - z) / torch.cos(theta)
    t2 = theta * theta
    t6 = t2 * t2 * t2
    x = 2.0 * math.sqrt(3.0) * lam * torch.cos(theta)
    x = x / (3.0 * (_A1 + 3.0 * _A2 * t2 + t6 * (7.0 * _A3 + 9.0 * _A4 * t2)))
    y = theta * (_A1 + _A2 * t2 + t6 * (_A3 + _A4 * t2))
    return torch.stack([x / EE_MAX_X, y / EE_MAX_Y], dim=-1)


class GpsEncoder(nn.Module):
    """``forward(latlon [B, 2] degrees) -> [B, D]`` unit-length embeddings.

    The parameter count does not depend on the number of scales K: the RFF matrices are fixed
    buffers and every scale token shares the same transformer.
    """

    def __init__(self, cfg: GpsTowerConfig, embed_dim: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(cfg.rff_seed)
        half = cfg.width // 2
        # One [2, width/2] Gaussian matrix per scale, std = sigma (Tancik et al. 2020).
        rff = torch.stack([torch.randn(2, half, generator=gen) * s for s in cfg.sigmas])
        # float64 so the phase keeps metre precision, and so fp16 conversion of the ONNX file
        # (which rounds float32 weights) leaves it alone: at sigma = 2^12 an fp16 matrix would
        # shift phases by whole cycles.
        self.register_buffer("rff", rff.double())
        self.num_scales = len(cfg.sigmas)
        self.registers = nn.Parameter(torch.randn(cfg.num_registers, cfg.width) * 0.02)
        self.input_proj = nn.Linear(cfg.width, cfg.width)
        self.transformer = Transformer(cfg.width, cfg.depth, cfg.heads)
        self.head = nn.Linear(cfg.width, embed_dim)
        init_weights(self)

    def scale_tokens(self, latlon: Tensor) -> Tensor:
        """The K RFF tokens ``[B, K, width]``: cos and sin of 2*pi*v @ B_k.

        The phase (in cycles) is formed in float64 and reduced modulo 1 before going to
        float32, so sin/cos see arguments in [0, 2*pi) and the 2^12 scale keeps metre precision
        (and is never touched by bf16 autocast: these are elementwise ops, not matmuls).
        """
        v = equal_earth(latlon)  # [B, 2] float64
        rff = self.rff.double()
        cycles = v[:, None, 0, None] * rff[None, :, 0] + v[:, None, 1, None] * rff[None, :, 1]
        phase = (2.0 * math.pi) * (cycles - torch.floor(cycles)).float()  # [B, K, width/2]
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)

    def forward(self, latlon: Tensor) -> Tensor:
        tokens = self.input_proj(self.scale_tokens(latlon))
        regs = self.registers.unsqueeze(0).expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        x = self.transformer(torch.cat([regs, tokens], dim=1))
        pooled = x[:, -self.num_scales :].mean(dim=1)
        return l2_normalize(self.head(pooled))


def single_scale(cfg: GpsTowerConfig, sigma: float = 256.0) -> GpsTowerConfig:
    """The single-scale ablation of ``cfg`` (one RFF token of bandwidth ``sigma``).

    The default 2^8 is the ``gps1`` ablation's (scripts/ablations.py, the model card).
    """
    from dataclasses import replace

    return replace(cfg, sigmas=(float(sigma),))
