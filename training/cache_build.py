"""Building the locked-image feature cache (:mod:`training.feature_cache`) from a dataset folder.

Every chip goes through the engine's own preprocessing (the collate functions the trainer
uses), then through the frozen backbone once per augmented view. On a CPU the backbone runs in
onnxruntime (an exported copy, max |Δ| to torch checked): about 7x faster than torch's
depthwise convolutions on this 2-core machine; on a GPU it runs in torch.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.contract import Modality, footprint_m
from engine.errors import InputError, ModelContractError
from engine.preprocess import TextTokenizer

from .band_match import dataset_bands, footprint_crop, match_bands, rebanded
from .config import TrainConfig
from .data.collate import collate_samples
from .data.format import MANIFEST, chip_to_float, parse_ref
from .data.reader import ChipStore
from .effnet_towers import dihedral, view_ids
from .feature_cache import (
    META,
    PIX_SIZE,
    CacheWriter,
    FeatureCache,
    cache_inputs,
    cache_key,
    data_fingerprint,
    module_fingerprint,
)
from .model import UniGeoCLIP
from .specs import preprocess_for
from .towers import tokenizer_path

log = logging.getLogger(__name__)
CHUNK = 64
Runner = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]


def weights_fingerprints(model: UniGeoCLIP) -> dict[str, str]:
    """Fingerprints of the frozen parts the cache holds outputs of."""
    t = model.towers
    out = {}
    for m in ("aerial", "streetview"):
        if m in t and hasattr(t[m], "backbone"):
            out[m] = module_fingerprint(t[m].backbone)
    if "text" in t:
        out["text"] = module_fingerprint(t["text"].encoder)
    return out


def cache_folder(model: UniGeoCLIP, cfg: TrainConfig, root: str | Path) -> Path:
    """Where the cache for this model, config and dataset lives (existing or not)."""
    key = cache_key(cfg, data_fingerprint(root), weights_fingerprints(model))
    return Path(cfg.locked.cache_dir) / key


def ensure_cache(model: UniGeoCLIP, cfg: TrainConfig, root: str | Path) -> FeatureCache:
    """Open the cache of (data, weights, config), building it first when it does not exist."""
    folder = cache_folder(model, cfg, root)
    if (folder / META).is_file():
        log.info("feature cache %s: reused", folder)
        return FeatureCache.open(folder)
    t0 = time.perf_counter()
    build_cache(model, cfg, Path(root), folder)
    if cache_folder(model, cfg, root) != folder:  # the dataset was rewritten while we read it
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(f"{root} changed while its feature cache was built; run again")
    log.info("feature cache %s: built in %.0f s", folder, time.perf_counter() - t0)
    return FeatureCache.open(folder)


class _Backbone(nn.Module):
    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self.tower.trunk(x)
        return trunk, self.tower.backbone.tail(trunk, self.tower.split)


def backbone_runner(tower: nn.Module, size: int, device: torch.device, tmp: Path) -> Runner:
    """``x -> (trunk, pooled)`` as fp16 numpy: onnxruntime on the CPU, torch on a GPU."""
    net = _Backbone(tower).eval()
    if device.type != "cpu":
        net = net.to(device)

        @torch.no_grad()
        def run_torch(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            t, p = net(x.to(device))
            return t.half().cpu().numpy(), p.half().cpu().numpy()

        return run_torch
    import onnxruntime as ort

    path = tmp / f"backbone_{size}.onnx"
    x = torch.randn(2, 3, size, size)
    axes = {n: {0: "batch"} for n in ("x", "trunk", "pooled")}
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["trunk", "pooled"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = net(x)[1].numpy()
    diff = float(np.abs(sess.run(["pooled"], {"x": x.numpy()})[0] - ref).max())
    if diff > 1e-3:
        raise ModelContractError(f"backbone in onnxruntime differs from torch by {diff:.1e}")

    def run_ort(xb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        t, p = sess.run(["trunk", "pooled"], {"x": xb.numpy().astype(np.float32)})
        return t.astype(np.float16), p.astype(np.float16)

    return run_ort


def _chunks(items: list, n: int = CHUNK) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def manifest_rows(root: Path) -> list[dict[str, Any]]:
    """The manifest's rows, every chip reference checked to stay inside the dataset.

    Read leniently (format 1 and 2 datasets: split ``holdout``, per-sample ``aerial_bands``),
    since the cache needs only the columns it reads.
    """
    import pyarrow.parquet as pq

    rows = pq.read_table(root / MANIFEST).to_pylist()
    for r in rows:
        for col in ("aerial", "streetview"):
            for ref in r.get(col) or []:
                parse_ref(ref)
        if r.get("dsm"):
            parse_ref(r["dsm"])
    return rows


def _aerial_chip(row: dict[str, Any], ref: str, store: ChipStore, src: tuple, want: tuple,
                 foot: float = 0.0):  # fmt: skip
    """One aerial view in the tower's bands (a format-2 chip stores only its sensor's bands),
    cut to the contract's footprint ``foot`` (:func:`~training.band_match.footprint_crop`)."""
    chip = footprint_crop(chip_to_float(np.array(store.load(ref))), row.get("gsd_m"), foot)
    bands = tuple(b.lower() for b in (row.get("aerial_bands") or src))
    if len(bands) != chip.shape[0]:
        raise ModelContractError(
            f"sample {row['sample_id']}: chip {ref} has {chip.shape[0]} bands, its band list "
            f"{list(bands)} {len(bands)}"
        )
    return chip if bands == want else match_bands(chip, bands, want)


def _aerial(model, cfg, rows, store, src_bands, run, w: CacheWriter) -> None:
    tower, pre = model.towers["aerial"], preprocess_for(Modality.AERIAL, cfg.model)
    want, augs = tuple(cfg.model.aerial.bands), view_ids(cfg.locked.views)
    views = [(i, ref) for i, r in enumerate(rows) for ref in (r.get("aerial") or [])]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feat", "trunk", "pix", "mask")}
    foot = footprint_m(pre)
    for chunk in _chunks(views):
        samples = [{"sample_id": str(i), "lat": 0.0, "lon": 0.0,
                    "aerial": _aerial_chip(rows[i], ref, store, src_bands, want, foot)}
                   for i, ref in chunk]  # fmt: skip
        fixed, masks = rebanded(samples, want, want)
        pixels = collate_samples(fixed, {Modality.AERIAL: pre})["aerial"]
        mask = torch.from_numpy(masks)
        with torch.no_grad():
            x = tower.backbone_input(pixels, mask)
        outs = [run(dihedral(x, k).contiguous()) for k in augs]
        parts["trunk"].append(np.stack([o[0] for o in outs], axis=1))
        parts["feat"].append(np.stack([o[1] for o in outs], axis=1))
        pooled = F.adaptive_avg_pool2d(pixels, PIX_SIZE)
        parts["pix"].append(pooled.half().numpy())
        parts["mask"].append(masks.astype(np.uint8))
    w.put("aerial_sample", np.array([i for i, _ in views], dtype=np.int32))
    for k, v in parts.items():
        w.put_parts(f"aerial_{k}", v, (0,), np.uint8 if k == "mask" else np.float16)


def _street(model, cfg, rows, store, run, w: CacheWriter) -> None:
    tower, pre = model.towers["streetview"], preprocess_for(Modality.STREETVIEW, cfg.model)
    views = [(i, ref) for i, r in enumerate(rows) for ref in (r.get("streetview") or [])]
    feats = []
    for chunk in _chunks(views, 16):
        samples = [{"sample_id": str(i), "lat": 0.0, "lon": 0.0,
                    "streetview": chip_to_float(np.array(store.load(ref)))} for i, ref in chunk]  # fmt: skip
        pixels = collate_samples(samples, {Modality.STREETVIEW: pre})["streetview"]
        with torch.no_grad():
            x = tower.backbone_input(pixels)
        feats.append(np.stack([run(dihedral(x, k).contiguous())[1]
                               for k in view_ids(cfg.locked.street_views)], axis=1))  # fmt: skip
    w.put("street_sample", np.array([i for i, _ in views], dtype=np.int32))
    w.put_parts("street_feat", feats, (0, cfg.locked.street_views, 1280), np.float16)


def _dsm(cfg, rows, store, w: CacheWriter) -> None:
    pre = preprocess_for(Modality.DSM, cfg.model)
    have = [i for i, r in enumerate(rows) if r.get("dsm")]
    foot = footprint_m(pre)
    chips = {i: footprint_crop(np.array(store.load(rows[i]["dsm"]), dtype=np.float32),
                               rows[i].get("gsd_m"), foot) for i in have}  # fmt: skip
    have = [i for i in have if np.isfinite(chips[i]).any()]  # all-nodata chips are unusable
    index = np.full(len(rows), -1, dtype=np.int32)
    index[have] = np.arange(len(have), dtype=np.int32)
    parts = []
    for chunk in _chunks(have):
        samples = [{"sample_id": str(i), "lat": 0.0, "lon": 0.0, "dsm": chips[i]} for i in chunk]
        parts.append(collate_samples(samples, {Modality.DSM: pre})["dsm"].half().numpy())
    w.put("dsm_index", index)
    w.put_parts("dsm", parts, (0, 1, pre.size, pre.size), np.float16)


def _text(model, cfg, rows, device, w: CacheWriter) -> list[str]:
    tower, pre = model.towers["text"], preprocess_for(Modality.TEXT, cfg.model)
    pairs = [(i, t) for i, r in enumerate(rows) for t in (r.get("text") or []) if t and t.strip()]
    uniq = sorted({t for _, t in pairs})
    uid = {t: k for k, t in enumerate(uniq)}
    tok = TextTokenizer(tokenizer_path(cfg.model.text), pre.max_text_length, pre.lowercase)
    enc = tower.encoder.to(device).eval()
    ids_all, att_all = tok.encode(uniq) if uniq else (np.zeros((0, 1)), np.zeros((0, 1)))
    lengths = att_all.sum(1)
    order = np.argsort(lengths, kind="stable")
    feats = np.zeros((len(uniq), enc.config.hidden_size), dtype=np.float16)
    # Length-sorted batches cut to their longest text: the pooled feature is a masked mean, so
    # the padding dropped here never counted (about 2x fewer tokens than padding to 32).
    for chunk in _chunks(list(order), 128):
        width = int(max(1, lengths[chunk].max()))
        ids = torch.from_numpy(ids_all[chunk, :width]).to(device)
        att = torch.from_numpy(att_all[chunk, :width]).to(device)
        with torch.no_grad():
            feats[chunk] = tower.pool(ids, att).half().cpu().numpy()
    tower.to("cpu")
    w.put("text_sample", np.array([i for i, _ in pairs], dtype=np.int32))
    w.put("text_uid", np.array([uid[t] for _, t in pairs], dtype=np.int32))
    w.put("text_feat", feats)
    return uniq


def build_cache(model: UniGeoCLIP, cfg: TrainConfig, root: Path, folder: Path) -> Path:
    """Compute and publish the cache of every sample (all splits) of the dataset ``root``."""
    mods = set(cfg.model.modalities)
    rows = manifest_rows(root)
    store = ChipStore(root)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    w = CacheWriter(folder)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "aerial" in mods:
                t = model.towers["aerial"]
                run = backbone_runner(t, cfg.model.aerial.image_size, device, Path(tmp))
                src = dataset_bands(root) or tuple(cfg.model.aerial.bands)
                _aerial(model, cfg, rows, store, src, run, w)
            if "streetview" in mods:
                t = model.towers["streetview"]
                run = backbone_runner(t, cfg.model.streetview.image_size, device, Path(tmp))
                _street(model, cfg, rows, store, run, w)
        if "dsm" in mods:
            _dsm(cfg, rows, store, w)
        texts = _text(model, cfg, rows, device, w) if "text" in mods else []
        w.put("lat", np.array([r["lat"] for r in rows], dtype=np.float64))
        w.put("lon", np.array([r["lon"] for r in rows], dtype=np.float64))
        w.put("landuse", np.array([-1 if r["landuse"] is None else r["landuse"] for r in rows],
                                  dtype=np.int16))  # fmt: skip
        meta: dict[str, Any] = {
            **cache_inputs(cfg), "dataset": str(root), "texts": texts,
            "sample_id": [r["sample_id"] for r in rows], "area": [r["area_id"] for r in rows],
            "split": [r["split"] for r in rows],
            "gps": [bool(r.get("gps_provenance")) for r in rows],
            "groups": [r.get("groups") or [] for r in rows],
            "dates": [r.get("aerial_dates") or [] for r in rows],
        }  # fmt: skip
        return w.publish(meta)
    except BaseException:
        w.abort()
        raise
