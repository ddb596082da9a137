"""Matching a dataset's aerial bands to a tower's by name, with a presence mask for the rest.

A dataset stores each chip in its own band order (``dataset.json`` ``bands.aerial``) and a
band a source lacks as an all-NaN plane (Swellendam orthophotos have no NIR, NAIP no SWIR).
The tower takes its own bands in its own order: a band the dataset does not have at all becomes
an all-NaN plane too, and :func:`engine.model.preprocess.band_presence` turns the NaN planes into the
``band_mask`` the aerial encoder takes, exactly as the engine does at inference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.model.preprocess import band_presence


def dataset_bands(source: str | Path) -> tuple[str, ...] | None:
    """The aerial band names of a dataset folder, or None (toy world, or not recorded)."""
    info = Path(source) / "dataset.json"
    if not info.is_file():
        return None
    bands = json.loads(info.read_text(encoding="utf-8")).get("bands", {}).get("aerial")
    return tuple(str(b).lower() for b in bands) if bands else None


def match_bands(chip: np.ndarray, source: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """``chip [len(source), H, W]`` re-ordered to ``want``; bands not in ``source`` are NaN."""
    pos = {b: i for i, b in enumerate(source)}
    out = np.full((len(want), *chip.shape[1:]), np.nan, dtype=np.float32)
    for k, b in enumerate(want):
        if b in pos:
            out[k] = chip[pos[b]]
    return out


def rebanded(
    samples: Sequence[Mapping[str, Any]], source: Sequence[str], want: Sequence[str]
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Samples with their aerial chip in ``want`` order, and the ``[N, len(want)]`` band mask.

    Samples without an aerial chip get a mask of ones (their rows are masked out anyway).
    """
    out, masks = [], np.ones((len(samples), len(want)), dtype=np.float32)
    for i, s in enumerate(samples):
        s = dict(s)
        if "aerial" in s:
            x = np.asarray(s["aerial"], dtype=np.float32)
            src = tuple(s.pop("aerial_bands", None) or source)  # a sample may name its bands
            if src != tuple(want):
                x = match_bands(x, src, want)
            s["aerial"] = x
            masks[i] = band_presence(x[None])[0]
        out.append(s)
    return out, masks


def collate_banded(
    samples: Sequence[Mapping[str, Any]], base: Any, source: Sequence[str], want: Sequence[str]
) -> dict[str, Any]:
    """``base`` (the collate function) on re-banded samples; aerial becomes pixels + band_mask."""
    fixed, masks = rebanded(samples, source, want)
    batch = base(fixed)
    if "aerial" in batch:
        batch["aerial"] = {"pixels": batch["aerial"], "band_mask": torch.from_numpy(masks)}
    return batch


def footprint_crop(chip: np.ndarray, gsd_m: float | None, footprint_m: float) -> np.ndarray:
    """The centre of ``chip [C, H, W]`` that covers ``footprint_m`` of ground, as the engine tiles.

    The engine resamples every raster to the tower's GSD and cuts tiles of its size, so a tile
    covers ``engine.model.contract.footprint_m`` whatever the sensor: a 30 m Landsat tile of 320 m is
    about 11 real pixels. Dataset chips of coarse sensors cover more (32 px x 30 m = 960 m);
    training and evaluation take their centre so they see what the engine will feed. Chips that
    cover less than the footprint (very fine imagery) are returned whole.
    """
    if not gsd_m or not footprint_m or gsd_m <= 0:
        return chip
    side = max(2, int(round(footprint_m / float(gsd_m))))
    h, w = chip.shape[-2:]
    if side >= min(h, w) or min(h, w) * gsd_m < 1.25 * footprint_m:
        return chip
    top, left = (h - side) // 2, (w - side) // 2
    return chip[..., top : top + side, left : left + side]
