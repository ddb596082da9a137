"""A checkpoint behind the engine's ``UniGeoModel`` interface, for scoring runs without export.

The ablations train several models; exporting each to ONNX only to score it would cost minutes
per run. :class:`TorchModel` runs the torch towers on exactly the engine's preprocessing
(``engine.model.preprocess``: normalisation, band mask from NaN planes, tokenizer, coordinate checks),
so :mod:`training.targets` scores a checkpoint as it scores a bundle; the export parity test
(tests/training/test_locked.py) bounds the difference by 1e-4.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.model.bundle_spec import BundleSpec
from engine.model.contract import EncoderSpec, Modality
from engine.model.preprocess import (
    TextTokenizer,
    band_presence,
    normalize_dsm,
    normalize_image,
    validate_latlon,
)

from .checkpoint import load_model
from .domain import class_prompts
from .models.towers import tokenizer_path
from .specs import encoder_spec


class TorchModel:
    """``encode_tiles`` / ``encode_text`` / ``encode_gps`` of a checkpoint, engine-style."""

    def __init__(self, checkpoint: str | Path, class_names: Sequence[str] = ()) -> None:
        self.model, self.cfg = load_model(checkpoint)
        self.path = Path(checkpoint)
        m = self.cfg.model
        self.bundle = BundleSpec(
            name=m.name, version=m.version, dim=m.embed_dim,
            encoders={Modality(x): f"{x}.onnx" for x in m.modalities},
            class_prompts=class_prompts(list(class_names)),
            prompt_templates=("{}", "an aerial view of {}", "a satellite image of {}"),
            logit_scale=float(self.model.temperature_scale().detach()),
        )  # fmt: skip
        self._tok: TextTokenizer | None = None

    def spec(self, modality: Modality) -> EncoderSpec:
        return encoder_spec(Modality(modality), self.cfg.model)

    @torch.no_grad()
    def _run(self, modality: Modality, *inputs: np.ndarray, batch: int = 256) -> np.ndarray:
        tower = self.model.towers[Modality(modality).value].eval()
        out = []
        for s in range(0, len(inputs[0]), batch):
            out.append(tower(*(torch.from_numpy(np.ascontiguousarray(x[s : s + batch]))
                               for x in inputs)).float().numpy())  # fmt: skip
        y = np.concatenate(out) if out else np.zeros((0, self.cfg.model.embed_dim), np.float32)
        return y / np.linalg.norm(y, axis=1, keepdims=True).clip(1e-12)

    def encode_tiles(self, modality: Modality, chips: np.ndarray, batch_size: int = 64,
                     band_mask: Any = None) -> np.ndarray:  # fmt: skip
        m = Modality(modality)
        p = self.spec(m).preprocess
        x = np.asarray(chips, dtype=np.float32)
        if m is Modality.DSM:
            return self._run(m, normalize_dsm(x, p.dsm_center, p.dsm_scale_m))
        if m is Modality.AERIAL:
            bm = band_presence(x, band_mask)
            return self._run(m, normalize_image(x, p.mean, p.std), bm)
        return self._run(m, normalize_image(x, p.mean, p.std))

    def encode_text(self, texts: Sequence[str], templates: Sequence[str] | None = None,
                    batch_size: int = 64) -> np.ndarray:  # fmt: skip
        texts = [texts] if isinstance(texts, str) else list(texts)
        tmpl = list(templates) if templates else ["{}"]
        if self._tok is None:
            p = self.spec(Modality.TEXT).preprocess
            self._tok = TextTokenizer(tokenizer_path(self.cfg.model.text), p.max_text_length,
                                      p.lowercase)  # fmt: skip
        ids, att = self._tok.encode([t.replace("{}", x) for x in texts for t in tmpl])
        emb = self._run(Modality.TEXT, ids, att)
        if len(tmpl) == 1:
            return emb
        e = emb.reshape(len(texts), len(tmpl), -1).mean(1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def encode_gps(self, lat: Any, lon: Any, batch_size: int = 4096) -> np.ndarray:
        la, lo = validate_latlon(lat, lon)
        return self._run(Modality.GPS, np.stack([la, lo], axis=1))
