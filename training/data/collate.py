"""Batching sample dicts into the towers' input tensors, normalised exactly as the engine does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.model.contract import Modality, Preprocess
from engine.model.preprocess import TextTokenizer, normalize_dsm, normalize_image, validate_latlon


def _resize(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize a [C, H, W] chip to size × size (NaN nodata is kept as NaN where it dominates)."""
    if x.shape[-2:] == (size, size):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    nan = torch.isnan(t)
    t = torch.nan_to_num(t, nan=0.0)
    kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(t, size=(size, size), mode=mode, **kw)
    if nan.any():
        frac = F.interpolate(nan.float(), size=(size, size), mode="nearest")
        out[frac > 0.5] = float("nan")
    return out[0].numpy()


def select_bands(x: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """The tower's bands ``want`` out of a chip holding ``have``, matched by name.

    A wanted band the chip's dataset does not know is refused by the caller's shape check;
    the chip keeps its NaN for a known band its sensor lacks.
    """
    if list(have) == list(want) or not all(b in have for b in want):
        return x
    return x[[list(have).index(b) for b in want]]


def _stack(
    samples: Sequence[Mapping[str, Any]],
    key: str,
    shape: tuple[int, int, int],
    bands: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Stack one modality across the batch: zeros and mask False where a sample lacks it."""
    c, h, _ = shape
    out = np.zeros((len(samples), *shape), dtype=np.float32)
    mask = np.zeros(len(samples), dtype=bool)
    for i, s in enumerate(samples):
        if key not in s:
            continue
        x = np.asarray(s[key], dtype=np.float32)
        if key == "aerial" and bands and s.get("aerial_bands"):
            x = select_bands(x, s["aerial_bands"], bands)
        if x.ndim != 3 or x.shape[0] != c:
            raise InputError(
                f"sample {s.get('sample_id')!r}: {key} has shape {x.shape}, the tower "
                f"expects {c} bands; rebuild the dataset with the tower's bands"
            )
        out[i] = _resize(x, h, "bilinear" if key != "dsm" else "nearest")
        mask[i] = True
    return out, mask


def _tokenize(tokenizer: Any, texts: list[str], lower: bool) -> tuple[np.ndarray, np.ndarray]:
    """Run the engine's TextTokenizer, a padded ``tokenizers.Tokenizer``, or a callable."""
    if isinstance(tokenizer, TextTokenizer):
        return tokenizer.encode(texts)  # it lowercases itself when configured to
    texts = [t.lower() for t in texts] if lower else texts
    if hasattr(tokenizer, "encode_batch"):
        enc = tokenizer.encode_batch(texts)
        return (
            np.array([e.ids for e in enc], dtype=np.int64),
            np.array([e.attention_mask for e in enc], dtype=np.int64),
        )
    enc = tokenizer(texts)
    if isinstance(enc, Mapping):
        return np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])
    ids, att = enc
    return np.asarray(ids), np.asarray(att)


def collate_samples(
    samples: Sequence[Mapping[str, Any]],
    preprocess: Mapping[Modality, Preprocess],
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Turn sample dicts into a batch of tower inputs plus a presence mask per modality.

    Args:
        samples: sample dicts (see :mod:`training.data.reader`).
        preprocess: the Preprocess of each tower to feed; modalities not listed are skipped.
        tokenizer: :class:`engine.model.preprocess.TextTokenizer` (or a callable giving ids, mask);
            needed when ``preprocess`` lists the text tower.

    Returns:
        ``{"aerial"/"streetview": [B,C,S,S], "dsm": [B,1,S,S], "text": {"input_ids",
        "attention_mask"} [B,L], "gps": [B,2], "mask": {modality: BoolTensor [B]}, "lat",
        "lon": [B], "landuse": LongTensor [B], "sample_id": list[str]}``. Absent entries are
        zeros (token id 0 / empty attention for text) and masked out.
    """
    if not samples:
        raise InputError("cannot collate an empty batch")
    batch: dict[str, Any] = {"mask": {}}
    for m, pre in preprocess.items():
        m = Modality(m)
        batch[m.value], mask = _collate_modality(samples, m, pre, tokenizer)
        batch["mask"][m.value] = torch.from_numpy(mask)
    batch["lat"] = torch.tensor([float(s["lat"]) for s in samples], dtype=torch.float32)
    batch["lon"] = torch.tensor([float(s["lon"]) for s in samples], dtype=torch.float32)
    batch["landuse"] = torch.tensor([int(s.get("landuse", -1)) for s in samples])
    batch["sample_id"] = [str(s["sample_id"]) for s in samples]
    return batch


def _collate_modality(
    samples: Sequence[Mapping[str, Any]], m: Modality, pre: Preprocess, tokenizer: Any
) -> tuple[Any, np.ndarray]:
    """One modality's batch tensor(s) and presence mask."""
    if m in (Modality.AERIAL, Modality.STREETVIEW):
        x, mask = _stack(samples, m.value, (len(pre.bands), pre.size, pre.size), pre.bands)
        x = normalize_image(x, pre.mean, pre.std)
        x[~mask] = 0.0  # absent chips are zeros after normalisation, not -mean/std
        return torch.from_numpy(x), mask
    if m is Modality.DSM:
        x, mask = _stack(samples, "dsm", (1, pre.size, pre.size))
        # Absent chips are all-zero (not all-NaN) so normalize_dsm accepts them.
        return torch.from_numpy(normalize_dsm(x, pre.dsm_center, pre.dsm_scale_m)), mask
    if m is Modality.TEXT:
        return _collate_text(samples, pre, tokenizer)
    mask = np.array(["gps" in s for s in samples], dtype=bool)
    gps = np.stack([s["gps"] if "gps" in s else np.zeros(2, np.float32) for s in samples])
    # The engine's check: NaN / |lat| > 90 are errors, longitudes wrap into [-180, 180)
    # (exact, so in-range coordinates keep their bits).
    lat, lon = validate_latlon(gps[:, 0], gps[:, 1])
    return torch.from_numpy(np.stack([lat, lon], axis=1)), mask


def _collate_text(
    samples: Sequence[Mapping[str, Any]], pre: Preprocess, tokenizer: Any
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    mask = np.array([bool(str(s.get("text", "")).strip()) for s in samples], dtype=bool)
    length = pre.max_text_length
    ids = np.zeros((len(samples), length), dtype=np.int64)
    att = np.zeros((len(samples), length), dtype=np.int64)
    if mask.any():
        if tokenizer is None:
            raise InputError("the batch holds text but no tokenizer was given to collate_samples")
        t_ids, t_att = _tokenize(
            tokenizer, [samples[i]["text"] for i in np.flatnonzero(mask)], pre.lowercase
        )
        if t_ids.shape[1] != length:
            raise InputError(
                f"tokenizer gives {t_ids.shape[1]} tokens, the text tower expects {length}"
            )
        ids[mask], att[mask] = t_ids, t_att
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(att)}, mask
