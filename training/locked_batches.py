"""Training batches drawn from the feature cache, and the towers' forward pass on them.

Per sample and step one aerial view (a date) and one augmented (dihedral) view of it, one
phrasing, one street view and augmentation, the DSM chip under a random dihedral transform,
and the coordinates. A second, independently drawn aerial view gives the same-place positive of
the view term (other dates of a place are its strongest positives). Band dropout hides present
non-RGB bands at random so one tower learns to serve sensors with and without NIR/SWIR.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import TrainConfig
from .feature_cache import FeatureCache
from .models.effnet_towers import dihedral
from .models.model import UniGeoCLIP

RGB = ("red", "green", "blue")


def _groups(owner: np.ndarray, n: int) -> list[np.ndarray]:
    """For each of ``n`` samples, the rows of ``owner`` that belong to it."""
    out: dict[int, list[int]] = defaultdict(list)
    for row, s in enumerate(np.asarray(owner)):
        out[int(s)].append(row)
    return [np.asarray(out.get(i, []), dtype=np.int64) for i in range(n)]


class CachedBatches:
    """Assembles tower inputs for a list of sample indices from a :class:`FeatureCache`."""

    def __init__(self, cache: FeatureCache, cfg: TrainConfig) -> None:
        self.cache, self.cfg = cache, cfg
        n = cache.n
        self.mods = set(cfg.model.modalities)
        self.aerial = _groups(cache["aerial_sample"], n) if cache.has("aerial_sample") else None
        self.street = _groups(cache["street_sample"], n) if cache.has("street_sample") else None
        self.text = _groups(cache["text_sample"], n) if cache.has("text_sample") else None
        bands = list(cfg.model.aerial.bands)
        self.droppable = np.array([b not in RGB for b in bands])
        self.gps = np.asarray(cache.meta.get("gps", [True] * n), dtype=bool)

    def has(self, m: str) -> np.ndarray:
        """Which samples have modality ``m`` in the cache."""
        n = self.cache.n
        groups = {"aerial": self.aerial, "streetview": self.street, "text": self.text}
        if m in groups:
            g = groups[m]
            return np.zeros(n, bool) if g is None else np.array([len(x) > 0 for x in g])
        if m == "dsm":
            return (
                np.asarray(self.cache["dsm_index"]) >= 0
                if self.cache.has("dsm_index")
                else np.zeros(n, bool)
            )
        return self.gps.copy()

    def _pick(self, groups: list[np.ndarray], idx: list[int], rng) -> tuple[np.ndarray, np.ndarray]:
        rows = np.zeros(len(idx), dtype=np.int64)
        ok = np.zeros(len(idx), dtype=bool)
        for k, i in enumerate(idx):
            g = groups[i]
            if len(g):
                rows[k], ok[k] = g[int(rng.integers(len(g)))], True
        return rows, ok

    def _aerial(
        self, idx: list[int], rng, stage: int, train: bool
    ) -> tuple[dict[str, Tensor], np.ndarray]:
        c = self.cache
        rows, ok = self._pick(self.aerial, idx, rng)
        a = c["aerial_feat"].shape[1]
        aug = rng.integers(a, size=len(idx)) if train else np.zeros(len(idx), dtype=np.int64)
        key = "aerial_trunk" if stage == 2 else "aerial_feat"
        feat = torch.from_numpy(np.asarray(c[key][rows, aug], dtype=np.float32))
        pix = torch.from_numpy(np.asarray(c["aerial_pix"][rows], dtype=np.float32))
        size = self.cfg.model.aerial.spectral_size
        if pix.shape[-1] != size:  # the stream pools to its size; pooling twice is the same
            pix = torch.nn.functional.adaptive_avg_pool2d(pix, size)
        mask = np.asarray(c["aerial_mask"][rows], dtype=np.float32)
        lk = self.cfg.locked
        if train and lk.band_dropout > 0:
            drop = (rng.random(mask.shape) < lk.band_dropout) & self.droppable
            mask = np.where(drop, 0.0, mask).astype(np.float32)
        out = {"feat": feat, "pixels": pix, "band_mask": torch.from_numpy(mask)}
        if train and lk.radiometric > 0:
            out["pixels"] = self._radiometric(pix, rng)
        if train and lk.cnn_dropout > 0:
            keep = (rng.random(len(idx)) >= lk.cnn_dropout).astype(np.float32)
            out["cnn_keep"] = torch.from_numpy(keep)
        return out, ok

    def _radiometric(self, pix: Tensor, rng: np.random.Generator) -> Tensor:
        """Band values under a random per-chip and per-band gain (see ``locked.radiometric``).

        Applied on the [0, 1] values the spectral stream reads (the engine's normalisation undone
        and redone), clipped to [0, 1]; a chip-wide gain leaves every normalised-difference index
        unchanged, a per-band one moves it a little.
        """
        a = self.cfg.model.aerial
        mean = torch.tensor(a.mean, dtype=pix.dtype).view(1, -1, 1, 1)
        std = torch.tensor(a.std, dtype=pix.dtype).view(1, -1, 1, 1)
        r = self.cfg.locked.radiometric
        b, c = pix.shape[:2]
        gain = np.exp(rng.uniform(-r, r, (b, 1)) + rng.uniform(-r / 3, r / 3, (b, c)))
        g = torch.from_numpy(gain.astype(np.float32)).view(b, c, 1, 1)
        raw = ((pix * std + mean) * g).clamp(0.0, 1.0)
        return (raw - mean) / std

    def batch(
        self, idx: list[int], rng: np.random.Generator, stage: int = 1, train: bool = True
    ) -> dict[str, Any]:
        """Inputs and presence masks of the samples ``idx``."""
        c, out, mask = self.cache, {}, {}
        if "aerial" in self.mods and self.aerial is not None:
            out["aerial"], mask["aerial"] = self._aerial(idx, rng, stage, train)
            if train:
                out["aerial_view"], _ = self._aerial(idx, rng, stage, train)
        if "streetview" in self.mods and self.street is not None:
            rows, mask["streetview"] = self._pick(self.street, idx, rng)
            s = c["street_feat"].shape[1]
            aug = rng.integers(s, size=len(idx)) if train else np.zeros(len(idx), dtype=np.int64)
            out["streetview"] = torch.from_numpy(
                np.asarray(c["street_feat"][rows, aug], np.float32)
            )
        if "text" in self.mods and self.text is not None:
            rows, mask["text"] = self._pick(self.text, idx, rng)
            uid = np.asarray(c["text_uid"])[rows]
            out["text"] = torch.from_numpy(np.asarray(c["text_feat"][uid], dtype=np.float32))
            # a caption shared by two samples makes them no negatives of each other
            out["groups"] = {
                "text": torch.from_numpy(np.where(mask["text"], uid, -1 - np.arange(len(idx))))
            }
        if "dsm" in self.mods and c.has("dsm"):
            di = np.asarray(c["dsm_index"])[idx]
            mask["dsm"] = di >= 0
            x = torch.from_numpy(np.asarray(c["dsm"][np.maximum(di, 0)], dtype=np.float32))
            if train:
                x = torch.stack(
                    [dihedral(x[k], int(r)) for k, r in enumerate(rng.integers(8, size=len(idx)))]
                )
            out["dsm"] = x
        if "gps" in self.mods:
            ll = np.stack([np.asarray(c["lat"])[idx], np.asarray(c["lon"])[idx]], 1)
            out["gps"] = torch.from_numpy(ll.astype(np.float32))
            mask["gps"] = self.gps[idx]
        out["mask"] = {k: torch.from_numpy(np.asarray(v, dtype=bool)) for k, v in mask.items()}
        out["landuse"] = torch.from_numpy(np.asarray(c["landuse"])[idx].astype(np.int64))
        return out


def embed_cached(model: UniGeoCLIP, batch: dict[str, Any], stage: int = 1) -> dict[str, Tensor]:
    """Each tower's embedding from cached inputs (the frozen parts are not run)."""
    t, out = model.towers, {}
    for key in ("aerial", "aerial_view"):
        if key in batch:
            a = batch[key]
            head = t["aerial"].head_from_trunk if stage == 2 else t["aerial"].head
            out[key] = head(a["feat"], a["pixels"], a["band_mask"], a.get("cnn_keep"))
    mask = batch.get("mask", {})
    if "streetview" in batch:
        out["streetview"] = _present(
            t["streetview"].head, batch["streetview"], mask.get("streetview")
        )
    if "text" in batch:
        out["text"] = t["text"].head(batch["text"])
    if "dsm" in batch:
        out["dsm"] = _present(t["dsm"], batch["dsm"], mask.get("dsm"))
    if "gps" in batch:
        out["gps"] = t["gps"](batch["gps"])
    return out


def _present(fn: Any, x: Tensor, mask: Tensor | None) -> Tensor:
    """``fn`` on the rows that have the modality only; zero rows elsewhere (the loss masks them).

    Few samples have a DSM or a street view, so this skips most of those towers' work.
    """
    if mask is None or bool(mask.all()):
        return fn(x)
    idx = torch.nonzero(mask, as_tuple=False).squeeze(1)
    if idx.numel() == 0:
        idx = idx.new_zeros(1)  # one row keeps the graph and the shape; the loss masks it
    y = fn(x.index_select(0, idx))
    return y.new_zeros((len(x), y.shape[1])).index_copy(0, idx, y)


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a nested batch on ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
