"""From a model config to the contract: each tower's ``Preprocess`` and ``EncoderSpec``."""

from __future__ import annotations

from engine.model.contract import (
    BATCH_AXIS,
    INPUT_NAMES,
    EncoderSpec,
    Modality,
    Preprocess,
    footprint_m,
)

from .config import ModelConfig


def preprocess_for(modality: Modality, cfg: ModelConfig) -> Preprocess:
    """How raw input becomes this tower's input tensor (the same at training and inference)."""
    if modality in (Modality.AERIAL, Modality.STREETVIEW):
        t = cfg.aerial if modality is Modality.AERIAL else cfg.streetview
        return Preprocess(
            size=t.image_size,
            bands=tuple(t.bands),
            mean=tuple(t.mean),
            std=tuple(t.std),
            gsd_m=t.gsd_m,
        )
    if modality is Modality.DSM:
        d = cfg.dsm
        return Preprocess(
            size=d.image_size,
            bands=("height",),
            gsd_m=dsm_gsd_m(cfg),
            dsm_center=d.dsm_center,
            dsm_scale_m=d.dsm_scale_m,
        )
    if modality is Modality.TEXT:
        return Preprocess(max_text_length=cfg.text.max_length, lowercase=cfg.text.lowercase)
    return Preprocess()


def dsm_gsd_m(cfg: ModelConfig) -> float:
    """The DSM tower's GSD: one footprint with the aerial tower when the model has both.

    ``engine.model.contract.footprint_m`` of the DSM spec then equals the aerial one, so the engine
    tiles a DSM over the ground an aerial chip covers, as the training pairs do.
    """
    a = cfg.aerial
    if Modality.AERIAL.value in cfg.modalities and a.gsd_m > 0:
        aerial = Preprocess(size=a.image_size, gsd_m=a.gsd_m)
        return round(footprint_m(aerial) / cfg.dsm.image_size, 6)
    return cfg.dsm.gsd_m


def input_shapes(modality: Modality, cfg: ModelConfig) -> dict[str, list[int | str]]:
    """Contract input name -> shape with the dynamic batch axis first."""
    p = preprocess_for(modality, cfg)
    if modality is Modality.AERIAL:
        return {
            "pixels": [BATCH_AXIS, len(p.bands), p.size, p.size],
            "band_mask": [BATCH_AXIS, len(p.bands)],
        }
    if modality is Modality.STREETVIEW:
        return {"pixels": [BATCH_AXIS, len(p.bands), p.size, p.size]}
    if modality is Modality.DSM:
        return {"heights": [BATCH_AXIS, 1, p.size, p.size]}
    if modality is Modality.TEXT:
        return {n: [BATCH_AXIS, p.max_text_length] for n in INPUT_NAMES[modality]}
    return {"latlon": [BATCH_AXIS, 2]}


def encoder_spec(modality: Modality, cfg: ModelConfig) -> EncoderSpec:
    """The validated spec written into the tower's ONNX metadata."""
    return EncoderSpec(
        modality=modality,
        dim=cfg.embed_dim,
        inputs=input_shapes(modality, cfg),
        preprocess=preprocess_for(modality, cfg),
        model_name=cfg.name,
        model_version=cfg.version,
    ).validate(f"{modality.value} spec")


def all_preprocess(cfg: ModelConfig) -> dict[Modality, Preprocess]:
    """Preprocess of every configured tower."""
    return {Modality(m): preprocess_for(Modality(m), cfg) for m in cfg.modalities}
