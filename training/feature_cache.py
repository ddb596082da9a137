"""The locked-image feature cache: what the frozen backbones compute, once, fp16 on disk.

A cache is one folder per component (:data:`COMPONENTS`), ``<cache_dir>/<component>-<key>/``,
whose key is the sha256 of everything its contents depend on: the dataset's files
(:func:`data_fingerprint`), the frozen weights it ran (:func:`module_fingerprint` of the
aerial/street CNN or the text encoder), the preprocessing, the augmented views and the backbone
split. Change any of them and that key changes, so a stale cache is never read; an unchanged
rebuild finds its cache and skips the backbones entirely. ``meta.json`` is written last: a
folder without it is incomplete and rebuilt.

Arrays (``N`` samples; ``V`` aerial chip views, i.e. dates; ``A`` augmented views):

==================  ================================  =========================================
``aerial_sample``   ``[V]`` int32                     the sample each aerial view belongs to
``aerial_feat``     ``[V, A, 1280]`` fp16             pooled CNN feature (stage 1)
``aerial_trunk``    ``[V, A, C, h, w]`` fp16          trunk output at the split (stage 2)
``aerial_pix``      ``[V, bands, 32, 32]`` fp16       normalised pixels, pooled (:data:`PIX_SIZE`)
``aerial_mask``     ``[V, bands]`` uint8              band presence
``street_sample``   ``[W]`` int32, ``street_feat`` ``[W, S, 1280]`` fp16 (S street views)
``dsm_index``       ``[N]`` int32 (-1 none), ``dsm`` ``[M, 1, H, W]`` fp16 normalised heights
``text_sample``     ``[T]`` int32, ``text_uid`` ``[T]`` int32 into ``text_feat`` ``[U, width]`` fp16
``lat``, ``lon``    ``[N]`` float64; ``landuse`` ``[N]`` int16; ``sample_id``, ``area``,
                    ``split``, ``texts`` (unique phrasings) are lists in ``meta.json``
==================  ================================  =========================================
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import InputError

from .config import TrainConfig

CACHE_FORMAT = 1
META = "meta.json"
PIX_SIZE = 32
"""Side the normalised aerial pixels are average-pooled to in the cache; the spectral stream
pools further to its own size (a divisor), which equals pooling the chip to that size at once."""
_CHIP_FOLDERS = ("aerial", "streetview", "dsm")


def _hash_file(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)


def data_fingerprint(root: str | Path) -> str:
    """sha256 over the dataset's description, manifest and every chip file (names and bytes)."""
    root = Path(root)
    files = [root / "dataset.json", root / "samples.parquet"]
    for sub in _CHIP_FOLDERS:
        if (root / sub).is_dir():
            files += sorted(p for p in (root / sub).rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        if not p.is_file():
            raise InputError(f"{root}: no {p.name}; is this a dataset built by training.data?")
        h.update(str(p.relative_to(root)).encode() + b"\0")
        _hash_file(h, p)
    return h.hexdigest()


def module_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's state_dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


COMPONENTS = ("base", "aerial", "street", "text")
"""A cache is one folder per component, each keyed separately, so a change to one (say the
text prompts) rebuilds that one only: ``base`` (per-sample metadata, coordinates, labels,
DSM chips), ``aerial``, ``street`` (frozen CNN outputs), ``text`` (frozen text-encoder outputs)."""
TEXT_VERSION = 2  # bump when the captions a sample gets change (see cache_build._sample_texts)


def component_inputs(cfg: TrainConfig, component: str) -> dict[str, Any]:
    """The config values one component's contents depend on (besides data and weights)."""
    m, lk = cfg.model, cfg.locked
    if component == "aerial":
        return {"aerial": {k: getattr(m.aerial, k) for k in ("image_size", "bands", "mean", "std",
                                                              "split")},
                "pix_size": PIX_SIZE, "views": lk.views,
                "footprint_crop": True}  # coarse chips cut to the contract footprint  # fmt: skip
    if component == "street":
        return {"street": {k: getattr(m.streetview, k) for k in ("image_size", "mean", "std")},
                "street_views": lk.street_views}  # fmt: skip
    if component == "text":
        return {"text": {k: getattr(m.text, k) for k in ("kind", "max_length", "lowercase")},
                "text_version": TEXT_VERSION}  # fmt: skip
    return {"dsm": {k: getattr(m.dsm, k) for k in ("image_size", "dsm_center", "dsm_scale_m")},
            "footprint": m.aerial.image_size * m.aerial.gsd_m}  # fmt: skip


def cache_inputs(cfg: TrainConfig) -> dict[str, Any]:
    """Every component's config inputs (recorded in the base component's metadata)."""
    return {"format": CACHE_FORMAT, **{c: component_inputs(cfg, c) for c in COMPONENTS}}


def component_key(cfg: TrainConfig, component: str, data_fp: str, weights_fp: str = "") -> str:
    """A component's folder name: ``<component>-`` + sha256 of data, weights and inputs."""
    doc = {"format": CACHE_FORMAT, "data": data_fp, "weights": weights_fp,
           "inputs": component_inputs(cfg, component)}  # fmt: skip
    text = json.dumps(doc, sort_keys=True, default=list)
    return f"{component}-" + hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class FeatureCache:
    """An opened cache: the components' arrays memory-mapped read-only, metadata in memory."""

    folders: dict[str, Path]
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def open(cls, folders: dict[str, Path]) -> FeatureCache:
        """Open the component folders (``base`` required: it holds the metadata)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        for comp, folder in folders.items():
            meta_path = Path(folder) / META
            if not meta_path.is_file():
                raise InputError(f"{folder} is not a complete feature cache (no {META})")
            m = json.loads(meta_path.read_text(encoding="utf-8"))
            if m.get("format") != CACHE_FORMAT:
                raise InputError(f"{folder}: cache format {m.get('format')} != {CACHE_FORMAT}")
            if comp == "base":
                meta = m
            elif "texts" in m:
                meta["texts"] = m["texts"]
            arrays.update({p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))})
        if "sample_id" not in meta:
            raise InputError("a feature cache needs its base component (sample metadata)")
        return cls(dict(folders), meta, arrays)

    @property
    def folder(self) -> Path:
        """The base component's folder (what logs and checkpoints name)."""
        return self.folders["base"]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def has(self, name: str) -> bool:
        return name in self.arrays and self.arrays[name].shape[0] > 0

    @property
    def n(self) -> int:
        return len(self.meta["sample_id"])

    def column(self, name: str) -> np.ndarray:
        """A per-sample metadata column (``sample_id``, ``area``, ``split``) as an array."""
        return np.asarray(self.meta[name], dtype=object)


class CacheWriter:
    """Collects arrays in a staging folder next to the target, published atomically."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))

    def put(self, name: str, arr: np.ndarray) -> None:
        np.save(self.stage / f"{name}.npy", arr, allow_pickle=False)

    def put_parts(self, name: str, parts: list[np.ndarray], empty_shape: tuple, dtype) -> None:
        """Concatenate ``parts`` (or an empty array of ``empty_shape``) and store it."""
        arr = np.concatenate(parts) if parts else np.zeros(empty_shape, dtype=dtype)
        self.put(name, arr.astype(dtype, copy=False))

    def publish(self, meta: dict[str, Any]) -> Path:
        meta = {"format": CACHE_FORMAT, **meta}
        (self.stage / META).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        if self.target.exists():
            shutil.rmtree(self.target)
        self.stage.rename(self.target)
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
