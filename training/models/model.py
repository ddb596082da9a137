"""``UniGeoCLIP``: five towers in an ``nn.ModuleDict`` keyed by modality, plus the temperature.

``forward(batch) -> {modality: [B, D] unit vectors}`` for the modalities present in the batch
(ImageBind-style registry: adding a modality adds a tower, not an if-chain).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.model.contract import INPUT_NAMES, Modality

from ..config import ModelConfig
from .gps import GpsEncoder
from .towers import DsmTower, SiglipImageTower, TextTower


def create_tower(modality: Modality, cfg: ModelConfig) -> nn.Module:
    """Build the tower for ``modality`` from the model config."""
    d = cfg.embed_dim
    if modality is Modality.AERIAL and cfg.aerial.kind == "effnet":
        from .effnet_towers import AerialEffNetTower

        return AerialEffNetTower(cfg.aerial, d)
    if modality is Modality.STREETVIEW and cfg.streetview.kind == "effnet":
        from .effnet_towers import StreetEffNetTower

        return StreetEffNetTower(cfg.streetview, d)
    builders = {
        Modality.AERIAL: lambda: SiglipImageTower(cfg.aerial, d),
        Modality.STREETVIEW: lambda: SiglipImageTower(cfg.streetview, d),
        Modality.DSM: lambda: DsmTower(cfg.dsm, d),
        Modality.TEXT: lambda: TextTower(cfg.text, d),
        Modality.GPS: lambda: GpsEncoder(cfg.gps, d),
    }
    return builders[modality]()


def tower_inputs(modality: Modality, value: Tensor | dict[str, Tensor]) -> tuple[Tensor, ...]:
    """The batch entry for ``modality`` as the tower's positional inputs (contract order)."""
    if isinstance(value, dict):
        return tuple(value[n] for n in INPUT_NAMES[modality])
    return (value,)


class UniGeoCLIP(nn.Module):
    """The five-tower model of arXiv 2604.11668 with one learnable temperature.

    ``logit_scale`` (log of the inverse temperature) and ``logit_bias`` (sigmoid loss only) live
    here rather than in the loss, so DDP synchronises their gradients with the towers'.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.towers = nn.ModuleDict({m: create_tower(Modality(m), cfg) for m in cfg.modalities})
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        # Training only (never exported): land-use classes as a linear read-out of the aerial
        # embedding, so the embedding keeps land cover linearly separable (training.locked).
        self.label_head = nn.Linear(cfg.embed_dim, cfg.label_classes) if cfg.label_classes else None
        # Training only: the chip's spectral statistics decoded linearly from the aerial
        # embedding, so a linear few-shot probe on it has what pixel statistics have.
        spec = getattr(self.towers["aerial"], "spectral", None) if "aerial" in self.towers else None
        n_rec = (spec.summary_dim + (spec.quantiles_dim if cfg.recon_quantiles else 0)
                 if spec else 0)  # fmt: skip
        self.recon_head = nn.Linear(cfg.embed_dim, n_rec) if cfg.spectral_recon and spec else None

    @property
    def modalities(self) -> list[Modality]:
        return [Modality(m) for m in self.towers]

    def encode(self, modality: Modality | str, value: Tensor | dict[str, Tensor]) -> Tensor:
        """Embed one modality's batch entry."""
        m = Modality(modality)
        return self.towers[m.value](*tower_inputs(m, value))

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """Embed every modality of ``batch`` that has a tower; absent keys are skipped.

        Masked-out rows are embedded too (they hold zeros) so shapes stay fixed across ranks;
        the loss ignores them.
        """
        return {
            m: tower(*tower_inputs(Modality(m), batch[m]))
            for m, tower in self.towers.items()
            if m in batch
        }

    def temperature_scale(self) -> Tensor:
        """exp(logit_scale), clamped so the temperature cannot collapse."""
        return self.logit_scale.clamp(max=self.cfg.max_logit_scale).exp()
