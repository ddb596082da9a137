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

from engine.errors import InputError, ModelContractError
from engine.model.contract import Modality, footprint_m
from engine.model.preprocess import TextTokenizer

from .band_match import dataset_bands, footprint_crop, match_bands, rebanded
from .config import TrainConfig
from .data.collate import collate_samples
from .data.format import MANIFEST, chip_to_float, parse_ref
from .data.reader import ChipStore
from .domain import class_prompts
from .feature_cache import (
    META,
    PIX_SIZE,
    CacheWriter,
    FeatureCache,
    component_inputs,
    component_key,
    data_fingerprint,
    module_fingerprint,
)
from .models.effnet_towers import dihedral, view_ids
from .models.model import UniGeoCLIP
from .models.towers import tokenizer_path
from .specs import preprocess_for

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


def cache_folders(model: UniGeoCLIP, cfg: TrainConfig, root: str | Path,
                  data_fp: str | None = None) -> dict[str, Path]:  # fmt: skip
    """Where each cache component for this model, config and dataset lives (existing or not)."""
    data_fp = data_fp or data_fingerprint(root)
    w = weights_fingerprints(model)
    mods = set(cfg.model.modalities)
    comps = {"base": ""}
    if "aerial" in mods:
        comps["aerial"] = w.get("aerial", "")
    if "streetview" in mods:
        comps["street"] = w.get("streetview", "")
    if "text" in mods:
        comps["text"] = w.get("text", "")
    base = Path(cfg.locked.cache_dir)
    return {c: base / component_key(cfg, c, data_fp, fp) for c, fp in comps.items()}


def ensure_cache(model: UniGeoCLIP, cfg: TrainConfig, root: str | Path) -> FeatureCache:
    """Open the cache of (data, weights, config), building the missing components first."""
    data_fp = data_fingerprint(root)
    folders = cache_folders(model, cfg, root, data_fp)
    missing = [c for c, f in folders.items() if not (f / META).is_file()]
    if missing:
        t0 = time.perf_counter()
        build_cache(model, cfg, Path(root), {c: folders[c] for c in missing})
        if data_fingerprint(root) != data_fp:  # the dataset was rewritten while we read it
            for c in missing:
                shutil.rmtree(folders[c], ignore_errors=True)
            raise InputError(f"{root} changed while its feature cache was built; run again")
        log.info("feature cache: built %s in %.0f s", ", ".join(missing), time.perf_counter() - t0)
    log.info("feature cache: %s", ", ".join(f.name for f in folders.values()))
    return FeatureCache.open(folders)


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
    # No spin-waiting between ops: on a shared CPU spinning threads stall each other (a
    # 2-thread torch step ran 10x slower than a 1-thread one under load here).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def _sample_texts(row: dict[str, Any], names: list[str]) -> list[str]:
    """A sample's captions: the dataset's phrasings, and for a labelled sample the zero-shot
    prompts of its class ("an aerial view of farm fields"; derived from the label, like the
    dataset's own captions), so class prompts without a place name meet the imagery in training."""
    texts = [t for t in (row.get("text") or []) if t and t.strip()]
    lab = row.get("landuse")
    if lab is not None and 0 <= lab < len(names) and row.get("aerial"):
        texts += list(class_prompts([names[lab]])[names[lab]])
    return texts


def _text(model, cfg, rows, device, w: CacheWriter, names: list[str]) -> list[str]:
    tower, pre = model.towers["text"], preprocess_for(Modality.TEXT, cfg.model)
    pairs = [(i, t) for i, r in enumerate(rows) for t in _sample_texts(r, names)]
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


def _build_one(comp: str, model: UniGeoCLIP, cfg: TrainConfig, root: Path, rows: list,
               folder: Path, device: torch.device) -> None:  # fmt: skip
    store = ChipStore(root)
    w = CacheWriter(folder)
    meta: dict[str, Any] = {"component": comp, "dataset": str(root),
                            "inputs": component_inputs(cfg, comp)}  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if comp == "aerial":
                run = backbone_runner(model.towers["aerial"], cfg.model.aerial.image_size, device,
                                      Path(tmp))  # fmt: skip
                src = dataset_bands(root) or tuple(cfg.model.aerial.bands)
                _aerial(model, cfg, rows, store, src, run, w)
            elif comp == "street":
                run = backbone_runner(model.towers["streetview"], cfg.model.streetview.image_size,
                                      device, Path(tmp))  # fmt: skip
                _street(model, cfg, rows, store, run, w)
            elif comp == "text":
                meta["texts"] = _text(model, cfg, rows, device, w, class_names(root))
            else:
                _base(cfg, rows, store, w, meta)
        w.publish(meta)
    except BaseException:
        w.abort()
        raise


def _base(cfg: TrainConfig, rows: list, store: ChipStore, w: CacheWriter, meta: dict) -> None:
    if "dsm" in cfg.model.modalities:
        _dsm(cfg, rows, store, w)
    w.put("lat", np.array([r["lat"] for r in rows], dtype=np.float64))
    w.put("lon", np.array([r["lon"] for r in rows], dtype=np.float64))
    w.put("landuse", np.array([-1 if r["landuse"] is None else r["landuse"] for r in rows],
                              dtype=np.int16))  # fmt: skip
    meta.update({
        "sample_id": [r["sample_id"] for r in rows], "area": [r["area_id"] for r in rows],
        "split": [r["split"] for r in rows], "gps": [bool(r.get("gps_provenance")) for r in rows],
        "groups": [r.get("groups") or [] for r in rows],
        "dates": [r.get("aerial_dates") or [] for r in rows],
    })  # fmt: skip


def class_names(root: Path) -> list[str]:
    """The dataset's land-use class names (``dataset.json``)."""
    import json

    return list(json.loads((root / "dataset.json").read_text()).get("class_names", []))


def build_cache(model: UniGeoCLIP, cfg: TrainConfig, root: Path, folders: dict[str, Path]) -> None:
    """Compute and publish the given cache components for every sample (all splits) of ``root``."""
    rows = manifest_rows(root)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    for comp, folder in folders.items():
        t0 = time.perf_counter()
        _build_one(comp, model, cfg, root, rows, folder, device)
        log.info("feature cache %s: %.0f s", folder.name, time.perf_counter() - t0)
