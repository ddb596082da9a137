"""The aerial tower's spectral stream: every band the sensor has, per-pixel indices, chip statistics.

Frozen ImageNet RGB features discard what tells land cover apart at 10-30 m: the spectrum,
SWIR above all. This stream takes every band of the chip natively. Inside the (exported) graph
it undoes the engine's per-band normalisation, computes the standard normalised-difference
indices per pixel (NDVI, NDWI, MNDWI, NDBI), and summarises the chip by

* per-band and per-index mean and standard deviation,
* per-index fractions above 0 (water for NDWI/MNDWI, vegetation for NDVI, built-up for NDBI),
* per-band and per-index histograms (share of the chip's pixels in each of 8 bins),
* a small learned per-pixel network (1x1 convolutions) pooled by mean and max,

then projects them with an MLP. A band the sensor lacks is *masked*: its values, every index that
needs it and every statistic of those are multiplied by 0 and the presence flags are part of the
input, so the network knows the band is missing; a band of zeros, by contrast, would read as
"present and black" (MNDWI = 1 everywhere: all water).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ModelContractError

# name -> (a, b): index = (a - b) / (a + b) on reflectance-like values in [0, 1].
INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),  # vegetation (Rouse et al. 1974)
    "ndwi": ("green", "nir"),  # open water (McFeeters 1996)
    "mndwi": ("green", "swir1"),  # open water, robust to built-up (Xu 2006)
    "ndbi": ("swir1", "nir"),  # built-up (Zha et al. 2003)
}
_EPS = 1e-4


def index_pairs(bands: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(name, i, j)`` of the indices whose two bands the tower has (by band name)."""
    pos = {b: k for k, b in enumerate(bands)}
    return [(n, pos[a], pos[b]) for n, (a, b) in INDICES.items() if a in pos and b in pos]


def compute_indices(raw: Tensor, mask: Tensor, pairs: Sequence[tuple[str, int, int]]):
    """Normalised differences per pixel, and which of them the chip's bands allow.

    Args:
        raw: ``[B, C, H, W]`` band values in [0, 1].
        mask: ``[B, C]`` band presence (1/0).
        pairs: from :func:`index_pairs`.

    Returns:
        ``(idx [B, K, H, W], imask [B, K])``: indices in [-1, 1] (0 where masked), and 1 where
        both bands of an index are present.
    """
    a = raw[:, [i for _, i, _ in pairs]]
    b = raw[:, [j for _, _, j in pairs]]
    imask = mask[:, [i for _, i, _ in pairs]] * mask[:, [j for _, _, j in pairs]]
    idx = (a - b) / (a + b + _EPS)
    return idx * imask[:, :, None, None], imask


def _masked_moments(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std over pixels, multiplied by the presence mask ``m [B, C]``."""
    mean = x.mean(dim=(2, 3))
    std = (x - mean[:, :, None, None]).square().mean(dim=(2, 3)).clamp_min(1e-8).sqrt()
    return mean * m, std * m


def _histogram(x: Tensor, m: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Share of pixels per bin of ``[lo, hi]`` for each channel, times presence: ``[B, C*bins]``.

    Written with comparisons (differences of "share above edge") so it exports to plain ONNX;
    the outer bins also take the values beyond ``lo`` / ``hi``.
    """
    edges = torch.linspace(lo, hi, bins + 1, dtype=x.dtype, device=x.device)[1:-1]
    above = (x.unsqueeze(2) >= edges.view(1, 1, -1, 1, 1)).to(x.dtype).mean(dim=(3, 4))
    ones = torch.ones_like(above[:, :, :1])
    zeros = torch.zeros_like(above[:, :, :1])
    share = torch.cat([ones, above], 2) - torch.cat([above, zeros], 2)  # [B, C, bins]
    return (share * m.unsqueeze(2)).flatten(1)


class SpectralStream(nn.Module):
    """Spectral features of a chip: ``(pixels normalised, band_mask) -> [B, out_dim]``.

    Args:
        bands: the tower's band names, in input order.
        mean, std: the engine's normalisation of each band (undone inside the graph).
        width: channels of the per-pixel network.
        out_dim: output width.
        size: side the chip is average-pooled to first (statistics barely change, cost does).
        bins: histogram bins per band (over [0, 1]) and per index (over [-1, 1]): the share of
            the chip's pixels in each, a distribution the mean and std alone do not give.
    """

    def __init__(
        self,
        bands: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 64,
        out_dim: int = 256,
        size: int = 16,
        bins: int = 8,
    ) -> None:
        super().__init__()
        if len(bands) != len(mean) or len(bands) != len(std):
            raise ModelContractError("spectral stream: bands, mean and std differ in length")
        self.pairs = index_pairs(bands)
        self.size = size
        c, k = len(bands), len(self.pairs)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))
        pix_in = 2 * (c + k)  # values and presence flags
        self.bins = bins
        # Per-pixel MLP as Linear layers on [B, pixels, channels]: the same as 1x1 convolutions,
        # but one GEMM each (torch's CPU 1x1 convolution was 10x slower here, in training).
        self.pixel = nn.Sequential(
            nn.Linear(pix_in, width), nn.GELU(), nn.Linear(width, width), nn.GELU()
        )
        n_stats = 2 * c + 3 * k + c + k + 2 * width + bins * (c + k)
        self.mlp = nn.Sequential(
            nn.LayerNorm(n_stats), nn.Linear(n_stats, out_dim), nn.GELU(),
            nn.Linear(out_dim, out_dim),
        )  # fmt: skip
        self.out_dim = out_dim

    def raw(self, pixels: Tensor) -> Tensor:
        """Undo the engine's normalisation: band values back in [0, 1]."""
        return (pixels * self.std + self.mean).clamp(0.0, 1.0)

    def _parts(self, pixels: Tensor, band_mask: Tensor) -> dict[str, Tensor]:
        x = self.raw(pixels)
        if x.shape[-1] != self.size:
            x = F.adaptive_avg_pool2d(x, self.size)
        m = band_mask.to(x.dtype)
        x = x * m[:, :, None, None]
        idx, im = compute_indices(x, m, self.pairs)
        b_mean, b_std = _masked_moments(x, m)
        i_mean, i_std = _masked_moments(idx, im)
        i_frac = (idx > 0).to(x.dtype).mean(dim=(2, 3)) * im
        hw = x.shape[-2:]
        flags = torch.cat([m, im], dim=1)
        pix = torch.cat([x, idx, flags[:, :, None, None].expand(-1, -1, *hw)], dim=1)
        h = self.pixel(pix.flatten(2).transpose(1, 2))  # [B, H*W, width]
        return {
            "b_mean": b_mean, "b_std": b_std, "i_mean": i_mean, "i_std": i_std,
            "i_frac": i_frac, "flags": flags,
            "pooled": torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1),
            "b_hist": _histogram(x, m, 0.0, 1.0, self.bins),
            "i_hist": _histogram(idx, im, -1.0, 1.0, self.bins),
        }  # fmt: skip

    def features(self, pixels: Tensor, band_mask: Tensor) -> Tensor:
        """The chip summary before the MLP, in this order: band means, band stds, index means,
        index stds, index fractions above 0, band flags, index flags, pooled pixel network,
        band histograms, index histograms."""
        return torch.cat(list(self._parts(pixels, band_mask).values()), dim=1)

    def summary(self, pixels: Tensor, band_mask: Tensor) -> Tensor:
        """The fixed (unlearned) statistics of the chip: moments, index shares, histograms.

        What the locked trainer asks the embedding to keep linearly recoverable
        (``locked.recon_weight``), so a few-shot linear probe on the embedding has at least what
        a probe on pixel statistics has."""
        p = self._parts(pixels, band_mask)
        keys = ("b_mean", "b_std", "i_mean", "i_std", "i_frac", "b_hist", "i_hist")
        return torch.cat([p[k] for k in keys], dim=1)

    def quantiles(self, pixels: Tensor, band_mask: Tensor) -> Tensor:
        """Per band the 10th, 50th and 90th percentiles of the full-resolution chip, in [0, 1]
        (an absent band gives 0): what the pixel-statistics baseline adds to the moments; an
        extra target of the decoder with ``model.recon_quantiles`` (training only, never
        exported; it did not move few-shot in the ablations, docs/MODEL_CARD.md)."""
        x = self.raw(pixels).flatten(2)  # [B, C, H*W]
        q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=x.dtype, device=x.device), dim=2)
        return (q.permute(1, 2, 0) * band_mask.to(x.dtype)[:, :, None]).flatten(1)  # [B, 3C]

    @property
    def quantiles_dim(self) -> int:
        return 3 * len(self.mean.view(-1))

    @property
    def summary_dim(self) -> int:
        c, k = len(self.mean.view(-1)), len(self.pairs)
        return 2 * c + 3 * k + self.bins * (c + k)

    def forward(self, pixels: Tensor, band_mask: Tensor) -> Tensor:
        return self.mlp(self.features(pixels, band_mask))
