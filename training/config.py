"""Typed, frozen experiment configs (model, loss, optimiser, data, run) and their YAML form.

One YAML per experiment lives in ``training/configs/``; ``tiny`` is the CPU smoke run, ``small``
builds the default bundle and ``base`` is paper scale. A checkpoint stores the resolved config
(:meth:`TrainConfig.to_dict`), so evaluation and export need no flags.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import InputError
from engine.model.contract import Modality

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Named ViT sizes: (hidden width, depth, heads). "micro" exists so CPU tests take seconds.
VIT_ARCHS: dict[str, tuple[int, int, int]] = {
    "micro": (64, 2, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


@dataclass(frozen=True)
class ImageTowerConfig:
    """An image tower: a SigLIP-style ViT, or the pretrained EfficientNet-Lite0 with heads."""

    kind: str = "vit"  # "vit" (SigLIP-style, from scratch or init_from) or "effnet" (Lite0)
    arch: str = "micro"  # named size in VIT_ARCHS (ignored when init_from is set)
    image_size: int = 64  # input side in pixels (H = W)
    patch_size: int = 16  # ViT patch side in pixels
    bands: tuple[str, ...] = ("red", "green", "blue", "nir")  # input bands, in order
    mean: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5)  # per-band mean of [0, 1] inputs
    std: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)  # per-band std of [0, 1] inputs
    gsd_m: float = 0.0  # ground sample distance the tower trains at; 0 = any (street photos)
    init_from: str = ""  # local SigLIP checkpoint directory; "" = train from scratch
    pretrained: bool = True  # effnet: ImageNet weights (False = random init, for the ablation)
    split: int = 11  # effnet: blocks [0, split) stay locked; stage 2 may fine-tune the rest
    head_hidden: int = 512  # effnet: width of the projection MLP
    spectral_width: int = 32  # effnet aerial: per-pixel channels of the spectral stream; 0 = off
    spectral_size: int = 16  # effnet aerial: side the spectral stream pools the chip to


@dataclass(frozen=True)
class DsmTowerConfig:
    """A from-scratch ViT with register tokens for 1-band surface models."""

    arch: str = "micro"  # named size in VIT_ARCHS
    image_size: int = 32  # input side in pixels
    patch_size: int = 8  # patch side in pixels
    num_registers: int = 4  # learned register tokens (Darcet et al. 2024)
    # DSM-only models: the GSD; with an aerial tower the DSM GSD is the aerial footprint / size
    # (one footprint for both, engine.model.contract.footprint_m), and this value is not used.
    gsd_m: float = 2.0
    dsm_center: str = "median"  # subtract the chip's "median" or "min" height
    dsm_scale_m: float = 10.0  # heights are divided by this after centring


@dataclass(frozen=True)
class TextTowerConfig:
    """The text encoder: pretrained MiniLM, a from-scratch small BERT, or a SigLIP text tower."""

    kind: str = "minilm"  # "minilm" (pretrained package), "scratch" (small BERT) or "siglip"
    init_from: str = ""  # checkpoint dir for "siglip" (or a MiniLM copy); "" = the package
    max_length: int = 32  # tokens including special tokens
    lowercase: bool = True  # lowercase before tokenising (MiniLM is uncased)
    scratch_width: int = 64  # "scratch" only: hidden width
    scratch_depth: int = 2  # "scratch" only: layers
    scratch_heads: int = 2  # "scratch" only: attention heads
    head_hidden: int = 0  # projection: 0 = one linear layer, > 0 = an MLP of this width


@dataclass(frozen=True)
class GpsTowerConfig:
    """The multi-scale coordinate encoder (Equal Earth + random Fourier features + transformer)."""

    width: int = 64  # token width; each RFF token holds cos and sin of width/2 projections
    sigmas: tuple[float, ...] = (1.0, 16.0, 256.0, 4096.0)  # RFF bandwidths, one token each
    num_registers: int = 2  # learned register tokens prepended to the scale tokens
    depth: int = 2  # transformer blocks
    heads: int = 4  # attention heads
    rff_seed: int = 0  # seed of the fixed RFF matrices (they are buffers, saved with weights)


@dataclass(frozen=True)
class ModelConfig:
    """The five towers and the shared embedding space."""

    name: str = "unigeo"  # bundle / model name
    version: str = "0.1.0"  # bundle / model version
    embed_dim: int = 64  # shared embedding dimension D
    modalities: tuple[str, ...] = tuple(m.value for m in Modality)  # towers to build
    aerial: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    streetview: ImageTowerConfig = field(
        default_factory=lambda: ImageTowerConfig(
            bands=("red", "green", "blue"), mean=(0.5,) * 3, std=(0.25,) * 3
        )
    )
    dsm: DsmTowerConfig = field(default_factory=DsmTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    gps: GpsTowerConfig = field(default_factory=GpsTowerConfig)
    init_logit_scale: float = 2.6593  # log(1/0.07), CLIP's starting temperature
    max_logit_scale: float = 4.6052  # log(100): clamp so the temperature cannot collapse
    init_logit_bias: float = -10.0  # sigmoid loss only: SigLIP's starting bias
    label_classes: int = 0  # > 0: a linear land-use head on the aerial embedding (training only)
    spectral_recon: bool = False  # a linear decoder of the chip's spectral statistics (training)
    recon_quantiles: bool = False  # the decoder also targets per-band 10/50/90th percentiles


@dataclass(frozen=True)
class LossConfig:
    """Which modality pairs are aligned, and how (arXiv 2604.11668, section 3)."""

    kind: str = "infonce"  # "infonce" (symmetric softmax) or "sigmoid" (SigLIP pair loss)
    mode: str = "all"  # "all" = every pair; "pivot" = pairs with `pivot`; "pairs" = `pairs`
    pivot: str = "aerial"  # pivot modality for mode "pivot" (ImageBind-style ablation)
    pairs: tuple[str, ...] = ()  # mode "pairs": entries like "aerial-text"
    weights: dict[str, float] = field(default_factory=dict)  # "a-b" -> w_ab (default 1.0)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on norms, biases, tokens)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (CLIP uses 0.98 for stability)
    warmup_steps: int = 20  # linear warm-up steps
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    text_lr_scale: float = 0.1  # pretrained text tower learns slower, so it is not wrecked


@dataclass(frozen=True)
class DataConfig:
    """Where batches come from and how they are grouped."""

    source: str = "toy"  # "toy" = built-in correlated generator (training/toy.py)
    num_samples: int = 512  # toy: samples in the training split
    num_val: int = 128  # toy: samples in the held-out split
    num_classes: int = 8  # toy: latent land-use classes
    missing_prob: float = 0.2  # toy: chance each non-GPS modality is absent from a sample
    batch_size: int = 32  # global batch size (split across DDP ranks)
    geo_cluster_fraction: float = 0.5  # share of each batch drawn from one geographic cluster
    cluster_cell_deg: float = 0.5  # cell side (degrees) that defines a geographic cluster
    num_workers: int = 0  # DataLoader workers per rank; -1 = auto (the CPUs this rank can use)
    seed: int = 0  # data and sampler seed
    holdout_areas: tuple[str, ...] = ()  # area_ids never trained on (every split): evaluation


@dataclass(frozen=True)
class LockedConfig:
    """The locked-image training stages (LiT, Zhai et al. 2022) on cached backbone features."""

    cache_dir: str = "data-cache/features"  # feature caches, one folder per data+backbone key
    views: int = 4  # augmented (dihedral) views cached per aerial chip view
    street_views: int = 2  # augmented views per street-level photo (identity, mirror)
    stage2_steps: int = 0  # stage 2: fine-tune the backbone blocks after model.aerial.split
    stage2_lr: float = 1e-4  # peak learning rate of the unfrozen backbone blocks
    band_dropout: float = 0.3  # chance to hide each present non-RGB band of a training chip
    label_weight: float = 0.0  # weight of the land-use cross-entropy (model.label_classes > 0)
    view_weight: float = 1.0  # weight of the same-place term (two dates / views of one chip)
    recon_weight: float = 0.0  # weight of decoding the chip statistics from the aerial embedding
    # radiometric augmentation of the spectral stream's input: a per-chip gain exp(U(-r, r)) and
    # a per-band gain exp(U(-r/3, r/3)) on the [0, 1] band values (sensors, seasons, haze differ
    # in brightness; 0 = off)
    radiometric: float = 0.0
    cnn_dropout: float = 0.0  # chance to hide a training chip's texture (CNN) stream from the head
    # keep the frozen backbone's cross-view neighbourhoods (training.losses.relational_distill):
    # weight of the KL between its and the embedding's in-batch similarity softmaxes (0 = off)
    distill_weight: float = 0.0
    distill_tau: float = 0.05  # temperature of both similarity matrices of that term


@dataclass(frozen=True)
class TrainConfig:
    """One experiment: everything needed to reproduce a run."""

    name: str = "tiny"  # experiment name (used in output file names)
    seed: int = 0  # model init seed
    steps: int = 200  # optimiser steps
    log_every: int = 10  # metrics row every N steps
    eval_every: int = 0  # held-out mean R@1/R@10 every N steps (logged if on a log step); 0 = off
    ckpt_every: int = 100  # checkpoint every N steps (and at the end)
    precision: str = "bf16"  # "bf16" autocast on CUDA (CPU always runs fp32) or "fp32"
    device: str = "auto"  # "auto", "cpu" or "cuda"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    locked: LockedConfig = field(default_factory=LockedConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-safe dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a (possibly partial) nested dict; unknown keys are an :class:`InputError`."""
        cfg = _build(cls, d, "config")
        validate(cfg)
        return cfg


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _build(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {sorted(names)}")
    kw = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kw[k] = _build(t, v, f"{where}.{k}")
        elif typing.get_origin(t) is tuple:
            kw[k] = tuple(v)
        else:
            kw[k] = _scalar(t, v, f"{where}.{k}")
    return cls(**kw)


def _scalar(t: Any, v: Any, where: str) -> Any:
    """Check/convert a scalar field; YAML reads "3e-4" as a string, so floats accept those."""
    if t is float and not isinstance(v, bool):
        try:
            return float(v)
        except (TypeError, ValueError):
            raise InputError(f"{where}: expected a number, got {v!r}") from None
    if t in (int, str, bool) and (type(v) is not t):
        raise InputError(f"{where}: expected {t.__name__}, got {v!r}")
    return v


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`InputError` on settings that cannot work together."""
    m = cfg.model
    known = {x.value for x in Modality}
    if not m.modalities or set(m.modalities) - known:
        raise InputError(f"model.modalities must be a subset of {sorted(known)}")
    for name, tower in (("aerial", m.aerial), ("streetview", m.streetview)):
        if tower.kind not in ("vit", "effnet"):
            raise InputError(f"model.{name}.kind must be 'vit' or 'effnet'")
        if tower.kind == "effnet" and not 1 <= tower.split <= 16:
            raise InputError(f"model.{name}.split must be in 1..16 (EfficientNet-Lite0 blocks)")
        if tower.kind == "vit" and tower.image_size % tower.patch_size:
            raise InputError(f"model.{name}: image_size must be a multiple of patch_size")
        if not (len(tower.bands) == len(tower.mean) == len(tower.std)):
            raise InputError(f"model.{name}: bands, mean and std need the same length")
    if m.dsm.image_size % m.dsm.patch_size:
        raise InputError("model.dsm: image_size must be a multiple of patch_size")
    if m.gps.width % 2 or m.gps.width % m.gps.heads or not m.gps.sigmas:
        raise InputError("model.gps: width must be even, divisible by heads, with >= 1 sigma")
    if m.text.kind not in ("minilm", "scratch", "siglip"):
        raise InputError("model.text.kind must be 'minilm', 'scratch' or 'siglip'")
    if cfg.loss.kind not in ("infonce", "sigmoid") or cfg.loss.mode not in (
        "all",
        "pivot",
        "pairs",
    ):
        raise InputError("loss.kind must be infonce|sigmoid and loss.mode all|pivot|pairs")
    if cfg.precision not in ("bf16", "fp32"):
        raise InputError("precision must be 'bf16' or 'fp32'")
    _check_pair_weights(cfg.loss.weights, known)


def _check_pair_weights(weights: dict[str, float], known: set[str]) -> None:
    """``loss.weights`` keys are "a-b" modality pairs: a typo must not silently weigh 1.0."""
    for key, w in weights.items():
        a, _, b = str(key).partition("-")
        if a not in known or b not in known or a == b:
            raise InputError(
                f"loss.weights key {key!r} is not a pair of two modalities 'a-b' "
                f"(modalities: {', '.join(sorted(known))})"
            )
        if not (isinstance(w, int | float) and w >= 0):
            raise InputError(f"loss.weights[{key!r}] must be a number >= 0, got {w!r}")


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load ``training/configs/<name>.yaml`` or a YAML path, then apply nested ``overrides``."""
    p = Path(name_or_path)
    if not p.suffix:
        p = CONFIG_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise InputError(f"config {name_or_path!r} not found (looked for {p})")
    d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if overrides:
        d = merge(d, overrides)
    return TrainConfig.from_dict(d)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``over`` wins; nested mappings merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"optim.lr=3e-4"`` into ``{"optim": {"lr": 3e-4}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise InputError(f"override {text!r} must look like key.sub=value")
    key, val = text.split("=", 1)
    out: dict[str, Any] = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    value = yaml.safe_load(val)
    if isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads "3e-4" as a string
        except ValueError:
            pass
    cur[parts[-1]] = value
    return out


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """Every ``--set key.sub=value`` of a command line, merged into one nested dict."""
    over: dict[str, Any] = {}
    for text in texts:
        over = merge(over, parse_override(text))
    return over
