"""Image towers on the pretrained EfficientNet-Lite0: street level, and aerial with a spectral stream.

Both keep the backbone's batch norm in inference mode (its ImageNet statistics) whatever the
tower's mode, so a locked or partly fine-tuned backbone computes exactly what the feature cache
holds. Each tower exposes the split the locked-image trainer uses: ``backbone_input`` (what goes
into the CNN), and ``head`` / ``head_from_trunk`` (everything after the cached part).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from engine.errors import ModelContractError

from ..config import ImageTowerConfig
from .blocks import init_weights, l2_normalize
from .efficientnet import FEATURE_DIM, RGB_MEAN, RGB_STD, EfficientNetLite, load_pretrained
from .spectral import SpectralStream


def _backbone(cfg: ImageTowerConfig) -> EfficientNetLite:
    net = load_pretrained() if cfg.pretrained else EfficientNetLite()
    net._fc = nn.Identity()  # the ImageNet classifier is not part of a tower
    return net.eval()


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class _EffNetBase(nn.Module):
    """Backbone + the conversion from the engine's normalised bands to the backbone's RGB."""

    def __init__(self, cfg: ImageTowerConfig) -> None:
        super().__init__()
        self.split = cfg.split
        self.backbone = _backbone(cfg)
        bands = list(cfg.bands)
        missing = [b for b in ("red", "green", "blue") if b not in bands]
        if missing:
            raise ModelContractError(
                f"an EfficientNet tower needs red, green and blue bands: {missing}"
            )
        self.rgb = [bands.index(b) for b in ("red", "green", "blue")]
        mean = torch.tensor([cfg.mean[i] for i in self.rgb]).view(1, 3, 1, 1)
        std = torch.tensor([cfg.std[i] for i in self.rgb]).view(1, 3, 1, 1)
        # pixels -> backbone scale in one affine map: ((p * std + mean) - RGB_MEAN) / RGB_STD
        self.register_buffer("rgb_scale", std / torch.tensor(RGB_STD).view(1, 3, 1, 1))
        self.register_buffer(
            "rgb_shift",
            (mean - torch.tensor(RGB_MEAN).view(1, 3, 1, 1))
            / torch.tensor(RGB_STD).view(1, 3, 1, 1),
        )

    def train(self, mode: bool = True) -> _EffNetBase:
        super().train(mode)
        self.backbone.eval()  # ImageNet batch-norm statistics always (see the module docstring)
        return self

    def backbone_input(self, pixels: Tensor, band_mask: Tensor | None = None) -> Tensor:
        """The backbone's input: RGB on its scale; a missing R/G/B is the mean of the others."""
        rgb = pixels[:, self.rgb] * self.rgb_scale + self.rgb_shift
        if band_mask is None:
            return rgb
        m = band_mask[:, self.rgb].to(rgb.dtype)[:, :, None, None]
        fill = (rgb * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        return rgb * m + fill * (1.0 - m)

    def trunk(self, x: Tensor) -> Tensor:
        """The locked part: stem and blocks before ``split`` (cached by stage 2)."""
        return self.backbone.trunk(x, self.split)

    def features(self, x: Tensor) -> Tensor:
        """Pooled 1280-d backbone feature of a backbone input (cached by stage 1)."""
        return self.backbone.tail(self.backbone.trunk(x, self.split), self.split)


class StreetEffNetTower(_EffNetBase):
    """Street-level photos: ``pixels [B, 3, S, S] -> [B, D]`` (EfficientNet-Lite0 + MLP head)."""

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int) -> None:
        super().__init__(cfg)
        self.proj = nn.Sequential(
            nn.LayerNorm(FEATURE_DIM), _mlp(FEATURE_DIM, cfg.head_hidden, embed_dim)
        )
        init_weights(self.proj)

    def head(self, feat: Tensor) -> Tensor:
        """Embedding from the pooled backbone feature."""
        return l2_normalize(self.proj(feat))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.head(self.features(self.backbone_input(pixels)))


class AerialEffNetTower(_EffNetBase):
    """Aerial chips: ``(pixels [B, C, S, S], band_mask [B, C]) -> [B, D]``.

    A texture stream (EfficientNet-Lite0 on RGB) and a spectral stream over every band
    (:class:`~training.models.spectral.SpectralStream`) are fused before the projection.
    """

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int) -> None:
        super().__init__(cfg)
        h = cfg.head_hidden
        # Both streams end in a LayerNorm of the same width, so neither dominates the fusion by
        # scale (the spectral stream carries what ImageNet RGB features miss at 10-30 m).
        self.cnn_proj = nn.Sequential(
            nn.LayerNorm(FEATURE_DIM), nn.Linear(FEATURE_DIM, h), nn.GELU(), nn.LayerNorm(h)
        )
        self.spectral: SpectralStream | None = None
        self.spec_norm: nn.Module = nn.Identity()
        d_spec = 0
        if cfg.spectral_width > 0:
            self.spectral = SpectralStream(
                cfg.bands, cfg.mean, cfg.std, cfg.spectral_width, h, cfg.spectral_size
            )
            self.spec_norm, d_spec = nn.LayerNorm(h), h
        self.fuse = _mlp(h + d_spec, h, embed_dim)
        init_weights(self.cnn_proj)
        init_weights(self.fuse)

    def head(self, feat: Tensor, pixels: Tensor, band_mask: Tensor,
             cnn_keep: Tensor | None = None) -> Tensor:  # fmt: skip
        """Embedding from the pooled CNN feature and the chip's bands (after the cache).

        ``cnn_keep [B]`` (training only, ``locked.cnn_dropout``): 0 hides a chip's texture
        stream, so the spectral stream alone must place it; inference always keeps it.
        """
        z = self.cnn_proj(feat)
        if cnn_keep is not None:
            z = z * cnn_keep.to(z.dtype)[:, None]
        if self.spectral is not None:
            z = torch.cat([z, self.spec_norm(self.spectral(pixels, band_mask))], dim=1)
        return l2_normalize(self.fuse(z))

    def head_from_trunk(self, trunk: Tensor, pixels: Tensor, band_mask: Tensor,
                        cnn_keep: Tensor | None = None) -> Tensor:  # fmt: skip
        """Embedding from the cached trunk output (stage 2 fine-tunes the blocks after it)."""
        return self.head(self.backbone.tail(trunk, self.split), pixels, band_mask, cnn_keep)

    def forward(self, pixels: Tensor, band_mask: Tensor) -> Tensor:
        x = self.backbone_input(pixels, band_mask)
        return self.head(self.features(x), pixels, band_mask)


def dihedral(x: Tensor, k: int) -> Tensor:
    """The ``k``-th of the 8 rotations/flips of ``[..., H, W]`` (k = 0 is the identity)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def view_ids(n: int) -> Sequence[int]:
    """The dihedral views cached for ``n`` augmented views: identity first, then flips/turns."""
    order = (0, 4, 1, 6, 2, 5, 3, 7)
    if not 1 <= n <= 8:
        raise ModelContractError(f"augmented views must be 1..8, got {n}")
    return order[:n]
