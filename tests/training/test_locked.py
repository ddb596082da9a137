"""Locked-image training: the feature cache (and when it is invalidated), stage 1 -> stage 2 ->
export -> engine parity, and resuming a stage mid-way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.model import UniGeoModel
from engine.model.contract import Modality
from training.config import load_config

BANDS6 = ["red", "green", "blue", "nir", "swir1", "swir2"]


def lit_config(source: Path, cache: Path, **over):
    """lit_cpu shrunk to seconds: random-init Lite0 (no weights download), scratch text."""
    from training.config import merge

    base = {
        "steps": 6, "log_every": 2, "ckpt_every": 3, "device": "cpu",
        "model": {
            "embed_dim": 16,
            "aerial": {"pretrained": False, "image_size": 32, "gsd_m": 2.0, "head_hidden": 32,
                       "spectral_width": 8, "spectral_size": 8},
            "streetview": {"pretrained": False, "image_size": 32, "head_hidden": 32},
            "dsm": {"image_size": 32, "patch_size": 8},
            "text": {"kind": "scratch", "max_length": 16, "scratch_width": 32, "head_hidden": 0},
            "gps": {"width": 32, "depth": 1, "heads": 4, "num_registers": 1},
        },
        "optim": {"warmup_steps": 2},
        "data": {"source": str(source), "batch_size": 8},
        "locked": {"cache_dir": str(cache), "views": 2, "stage2_steps": 4},
    }  # fmt: skip
    return load_config("lit_cpu", merge(base, over))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from training.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "ds"
    generate(SynthConfig(size=72, chip_px=32, street_px=32, seed=3), out)
    return out


@pytest.fixture(scope="module")
def built(synth, tmp_path_factory):
    """A model and its cache on the synthetic dataset."""
    from training.cache_build import ensure_cache
    from training.models.model import UniGeoCLIP

    cfg = lit_config(synth, tmp_path_factory.mktemp("cache"))
    torch.manual_seed(0)
    model = UniGeoCLIP(cfg.model)
    return model, cfg, ensure_cache(model, cfg, synth)


def test_cache_holds_what_the_frozen_backbone_computes(built, synth):
    from training.band_match import dataset_bands, rebanded
    from training.data.collate import collate_samples
    from training.data.format import chip_to_float
    from training.data.reader import ChipStore
    from training.specs import preprocess_for

    model, cfg, cache = built
    rows = json.loads((synth / "dataset.json").read_text())
    assert rows["bands"]["aerial"] == ["red", "green", "blue", "nir"]
    a = cache["aerial_feat"]
    assert a.dtype == np.float16 and a.shape[1:] == (2, 1280)
    assert cache["aerial_mask"].shape[1] == 6
    # synthetic chips are RGBN: SWIR bands are absent in every cached view
    assert (np.asarray(cache["aerial_mask"])[:, 4:] == 0).all()
    assert (np.asarray(cache["aerial_mask"])[:, :4] == 1).all()
    from training.cache_build import manifest_rows

    row = manifest_rows(synth)[int(cache["aerial_sample"][0])]
    chip = chip_to_float(np.array(ChipStore(synth).load(row["aerial"][0])))
    fixed, mask = rebanded([{"sample_id": "x", "lat": 0, "lon": 0, "aerial": chip}],
                           dataset_bands(synth), BANDS6)  # fmt: skip
    px = collate_samples(fixed, {Modality.AERIAL: preprocess_for(Modality.AERIAL, cfg.model)})
    tower = model.towers["aerial"]
    with torch.no_grad():
        want = tower.features(tower.backbone_input(px["aerial"], torch.from_numpy(mask)))
    np.testing.assert_allclose(
        np.asarray(a[0, 0], np.float32), want[0].numpy(), atol=2e-2, rtol=1e-2
    )


def test_cache_is_reused_and_invalidated_by_data_and_backbone(built, synth, tmp_path):
    import shutil

    from training.cache_build import cache_folders

    model, cfg, cache = built
    assert cache_folders(model, cfg, synth) == cache.folders  # same data and weights: reused
    assert set(cache.folders) == {"base", "aerial", "street", "text"}
    # the data change: one byte of one chip file changes every component
    data2 = tmp_path / "ds2"
    shutil.copytree(synth, data2)
    shard = sorted((data2 / "aerial").glob("*.npy"))[0]
    arr = np.load(shard)
    arr.flat[-1] = (int(arr.flat[-1]) + 1) % 255 if arr.dtype == np.uint8 else arr.flat[-1] * 0.5
    np.save(shard, arr)
    changed = cache_folders(model, cfg, data2)
    assert all(changed[c].name != cache.folders[c].name for c in cache.folders)
    # the backbone change: one weight of the locked aerial CNN -> the aerial features only
    with torch.no_grad():
        model.towers["aerial"].backbone._blocks[3]._project_conv.weight[0, 0, 0, 0] += 1e-3
    try:
        f = cache_folders(model, cfg, synth)
        assert f["aerial"] != cache.folders["aerial"]
        assert {c: f[c] for c in ("base", "street", "text")} == {
            c: cache.folders[c] for c in ("base", "street", "text")
        }
    finally:
        with torch.no_grad():
            model.towers["aerial"].backbone._blocks[3]._project_conv.weight[0, 0, 0, 0] -= 1e-3
    assert cache_folders(model, cfg, synth) == cache.folders
    # the text encoder is part of the text key
    with torch.no_grad():
        next(model.towers["text"].encoder.parameters()).view(-1)[0] += 1e-3
    try:
        assert cache_folders(model, cfg, synth)["text"] != cache.folders["text"]
    finally:
        with torch.no_grad():
            next(model.towers["text"].encoder.parameters()).view(-1)[0] -= 1e-3
    # a head is not cached: changing it keeps the cache
    with torch.no_grad():
        model.towers["aerial"].fuse[0].weight.add_(1.0)
    assert cache_folders(model, cfg, synth) == cache.folders
    # and the augmented views are part of the aerial key
    other = lit_config(synth, Path(cfg.locked.cache_dir), locked={"views": 3})
    f = cache_folders(model, other, synth)
    assert f["aerial"] != cache.folders["aerial"] and f["text"] == cache.folders["text"]


def test_radiometric_gain_and_texture_dropout_reach_the_head(built):
    """locked.radiometric scales the spectral input by a bounded gain (indices barely move);
    locked.cnn_dropout zeroes the texture stream of the dropped chips only; evaluation gets
    neither."""
    from dataclasses import replace

    from training.locked_batches import CachedBatches, embed_cached

    model, cfg, cache = built
    lk = replace(cfg.locked, radiometric=0.3, cnn_dropout=0.5, band_dropout=0.0)
    aug = CachedBatches(cache, replace(cfg, locked=lk))
    idx = list(range(min(8, cache.n)))
    plain = aug.batch(idx, np.random.default_rng(1), train=False)["aerial"]
    assert "cnn_keep" not in plain  # evaluation: no augmentation
    a = aug.batch(idx, np.random.default_rng(1))["aerial"]
    keep = a["cnn_keep"].numpy()
    assert set(np.unique(keep)) <= {0.0, 1.0}
    raw0 = (plain["pixels"] * 0.5 + 0.5).numpy()
    raw1 = (a["pixels"] * 0.5 + 0.5).numpy()
    assert raw1.min() >= 0.0 and raw1.max() <= 1.0
    bright = raw0 > 0.05
    ratio = raw1[bright] / raw0[bright]
    hi = np.exp(0.3 + 0.1) + 1e-4
    assert ratio.max() <= hi and ratio[raw1[bright] < 0.999].min() >= 1 / hi
    assert not np.allclose(raw0, raw1)
    # NDVI moves by at most the per-band part of the gain
    ndvi = lambda r: (r[:, 3] - r[:, 0]) / (r[:, 3] + r[:, 0] + 1e-4)  # noqa: E731
    ok = (raw0[:, [0, 3]] > 0.05).all(1) & (raw1[:, [0, 3]] < 0.999).all(1)
    assert np.abs(ndvi(raw1)[ok] - ndvi(raw0)[ok]).max() < 0.1
    tower = model.towers["aerial"]
    a["feat"] = torch.randn(a["feat"].shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z_all = tower.head(a["feat"], a["pixels"], a["band_mask"])
        z_drop = embed_cached(model, {"aerial": a}, stage=1)["aerial"]
        z_none = tower.head(a["feat"], a["pixels"], a["band_mask"], torch.zeros(len(idx)))
    kept, dropped = keep == 1, keep == 0
    torch.testing.assert_close(z_drop[kept], z_all[kept])
    torch.testing.assert_close(z_drop[dropped], z_none[dropped])
    assert dropped.any() and kept.any()  # this seed drops some chips, keeps others
    assert not torch.allclose(z_drop[dropped], z_all[dropped])


def test_labelled_samples_get_their_class_prompts_as_captions(built):
    _, _, cache = built
    texts = cache.meta["texts"]
    assert "an aerial view of forest" in texts or "an aerial view of water" in texts
    lab = np.asarray(cache["landuse"])
    owner = np.asarray(cache["text_sample"])
    uid = np.asarray(cache["text_uid"])
    prompts = {i for i, t in enumerate(texts) if t.startswith("an aerial view of ")}
    with_prompt = {int(owner[k]) for k in range(len(owner)) if int(uid[k]) in prompts}
    assert with_prompt and all(lab[i] >= 0 for i in with_prompt)


def test_stage1_stage2_export_engine_parity(synth, tmp_path):
    from training.checkpoint import load_model
    from training.export import export_bundle, validation_inputs
    from training.locked import run_stages
    from training.steps import build_datasets, make_collate

    cfg = lit_config(synth, tmp_path / "cache")
    # stage 1 (6 steps) then stage 2 stopped at step 2 of 4: resumable
    run_stages(cfg, tmp_path / "run", stop=2)
    assert (tmp_path / "run" / "stage1.pt").is_file() and (tmp_path / "run" / "stage2.pt").is_file()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    s1 = torch.load(tmp_path / "run" / "stage1.pt", weights_only=True)
    assert s1["step"] == 6 and s1["extra"]["stage"] == 1
    model = run_stages(cfg, tmp_path / "run")  # resumes stage 2 at step 2
    s2 = torch.load(tmp_path / "run" / "stage2.pt", weights_only=True)
    assert s2["step"] == 4
    # stage 2 trained the aerial backbone's tail, never the trunk (it is cached)
    b1, b2 = s1["model"], s2["model"]
    # an uninterrupted run (same cache) ends with the same weights as the resumed one
    full = run_stages(cfg, tmp_path / "run_full").state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(full[k], v, rtol=0, atol=1e-6, msg=k)
    tail = "towers.aerial.backbone._blocks.12._project_conv.weight"
    trunk = "towers.aerial.backbone._blocks.2._project_conv.weight"
    assert not torch.equal(b1[tail], b2[tail]) and torch.equal(b1[trunk], b2[trunk])
    # export the final checkpoint and run it through the engine
    m2, cfg2 = load_model(tmp_path / "run" / "checkpoint.pt")
    train, val = build_datasets(cfg2)
    collate = make_collate(cfg2)
    batch = validation_inputs(cfg2, (val, train), collate)
    export_bundle(m2, cfg2, batch, tmp_path / "bundle", train)
    engine = UniGeoModel.load(tmp_path / "bundle", threads=1)
    spec = engine.spec(Modality.AERIAL)
    assert list(spec.inputs) == ["pixels", "band_mask"] and list(spec.preprocess.bands) == BANDS6
    assert spec.preprocess.size * spec.preprocess.gsd_m == 64.0
    assert engine.spec(Modality.DSM).preprocess.gsd_m == 2.0  # one footprint: 32 px x 2 m
    rng = np.random.default_rng(0)
    chips = rng.uniform(0.05, 0.6, size=(5, 6, 32, 32)).astype(np.float32)
    chips[:3, 4:] = np.nan  # three chips from a sensor without SWIR
    got = engine.encode_tiles(Modality.AERIAL, chips)
    from engine.model.preprocess import band_presence, normalize_image

    mask = band_presence(chips)
    assert mask[:3].tolist() == [[1, 1, 1, 1, 0, 0]] * 3 and mask[3:].min() == 1
    p = spec.preprocess
    with torch.no_grad():
        want = m2.towers["aerial"](torch.from_numpy(normalize_image(chips, p.mean, p.std)),
                                   torch.from_numpy(mask)).numpy()  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the masked SWIR planes' contents do not matter: NaN or anything else with mask 0
    other = chips.copy()
    other[:3, 4:] = 0.9
    np.testing.assert_allclose(
        engine.encode_tiles(Modality.AERIAL, other, band_mask=mask), got, atol=1e-5
    )
    # ... while a SWIR of zeros that is declared present gives another embedding
    zeros = chips.copy()
    zeros[:3, 4:] = 0.0
    assert np.abs(engine.encode_tiles(Modality.AERIAL, zeros)[:3] - got[:3]).max() > 1e-3


def test_a_checkpoint_of_another_recipe_is_moved_aside_not_resumed(synth, tmp_path):
    """make model after the recipe changed must train the new recipe, not ship the old run."""
    from training.locked import config_changes, run_stages

    cfg = lit_config(synth, tmp_path / "cache", locked={"stage2_steps": 0, "radiometric": 0.0})
    run_stages(cfg, tmp_path / "run", stop=3)  # interrupted: same recipe resumes at step 3
    old = torch.load(tmp_path / "run" / "stage1.pt", weights_only=True)
    assert old["step"] == 3
    new = lit_config(synth, tmp_path / "cache", locked={"stage2_steps": 0, "radiometric": 0.3},
                     data={"source": str(synth) + "/"})  # fmt: skip
    assert config_changes(cfg, new) == ["locked.radiometric"]  # the data path may move
    run_stages(new, tmp_path / "run")
    stale = torch.load(tmp_path / "run" / "stage1.stale.pt", weights_only=True)
    assert stale["step"] == 3 and stale["config"]["locked"]["radiometric"] == 0.0
    done = torch.load(tmp_path / "run" / "stage1.pt", weights_only=True)
    assert done["step"] == 6 and done["config"]["locked"]["radiometric"] == 0.3


def test_torch_model_scores_like_the_engine(synth, tmp_path):
    """training.torch_engine.TorchModel (ablations are scored with it) matches the ONNX bundle."""
    from training.checkpoint import load_model
    from training.export import export_bundle, validation_inputs
    from training.locked import run_stages
    from training.steps import build_datasets, make_collate
    from training.torch_engine import TorchModel

    cfg = lit_config(synth, tmp_path / "cache", steps=2, locked={"stage2_steps": 0})
    run_stages(cfg, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    m, c = load_model(ckpt)
    train, val = build_datasets(c)
    export_bundle(m, c, validation_inputs(c, (val, train), make_collate(c)), tmp_path / "b", train)
    engine, torch_model = UniGeoModel.load(tmp_path / "b", threads=1), TorchModel(ckpt, ["water"])
    chips = np.random.default_rng(1).uniform(0, 1, (4, 6, 32, 32)).astype(np.float32)
    chips[:2, 3:] = np.nan
    for a, b in [
        (engine.encode_tiles(Modality.AERIAL, chips), torch_model.encode_tiles(Modality.AERIAL, chips)),
        (engine.encode_text(["forest", "open water"], templates=["{}", "a photo of {}"]),
         torch_model.encode_text(["forest", "open water"], templates=["{}", "a photo of {}"])),
        (engine.encode_gps([10.0, -33.5], [20.0, 151.2]),
         torch_model.encode_gps([10.0, -33.5], [20.0, 151.2])),
    ]:  # fmt: skip
        np.testing.assert_allclose(a, b, atol=2e-4)
    assert torch_model.bundle.class_prompts["water"][0] == "an aerial view of water"


def test_ablation_runs_side_by_side_train_the_same_weights_as_one_by_one(synth, tmp_path):
    """``scripts/ablations.py --locked --jobs 2``: runs trained in parallel processes are the
    runs trained alone (same seeds, one thread each), bit for bit."""
    from training.ablate_locked import train_runs

    cache = tmp_path / "cache"
    cfgs = [lit_config(synth, cache, seed=s, data={"seed": s}, locked={"stage2_steps": 0})
            for s in (0, 1)]  # fmt: skip
    train_runs([("s0", cfgs[0], tmp_path / "one" / "s0")], jobs=1)  # also builds the cache
    train_runs([("s1", cfgs[1], tmp_path / "one" / "s1")], jobs=1)
    walls = train_runs([(f"s{k}", c, tmp_path / "two" / f"s{k}") for k, c in enumerate(cfgs)],
                       jobs=2)  # fmt: skip
    assert set(walls) == {"s0", "s1"} and all(w > 0 for w in walls.values())
    for k in (0, 1):
        a = torch.load(tmp_path / "one" / f"s{k}" / "checkpoint.pt", weights_only=True)
        b = torch.load(tmp_path / "two" / f"s{k}" / "checkpoint.pt", weights_only=True)
        sa, sb = a.get("model", a), b.get("model", b)
        assert sa.keys() == sb.keys()
        for name in sa:
            assert torch.equal(sa[name], sb[name]), name
    s0 = torch.load(tmp_path / "two" / "s0" / "checkpoint.pt", weights_only=True)
    s1 = torch.load(tmp_path / "two" / "s1" / "checkpoint.pt", weights_only=True)
    m0, m1 = s0.get("model", s0), s1.get("model", s1)
    assert any(not torch.equal(m0[n], m1[n]) for n in m0 if m0[n].is_floating_point())


def test_distillation_term_pulls_the_embedding_towards_the_backbones_neighbourhoods(
    built, tmp_path
):
    """locked.distill_weight: the same run with the term ends closer to the frozen features'
    cross-view similarity structure than without it, and logs the term."""
    from training.locked import LockedTrainer
    from training.locked_batches import CachedBatches, embed_cached
    from training.losses import relational_distill
    from training.models.model import UniGeoCLIP

    _, cfg, cache = built
    ev = CachedBatches(cache, cfg)
    idx = list(range(min(16, cache.n)))
    batch = ev.batch(idx, np.random.default_rng(7))

    def gap(weight: float) -> tuple[float, list[dict]]:
        c = lit_config(Path(cfg.data.source), Path(cfg.locked.cache_dir), steps=24,
                       locked={"stage2_steps": 0, "distill_weight": weight})  # fmt: skip
        torch.manual_seed(0)
        model = UniGeoCLIP(c.model)
        rows = LockedTrainer(model, c, cache, tmp_path / f"w{weight}", 1).fit()
        model.eval()
        with torch.no_grad():
            e = embed_cached(model, batch, 1)
            d = relational_distill(e["aerial"], e["aerial_view"], batch["aerial"]["feat"],
                                   batch["aerial_view"]["feat"], batch["mask"]["aerial"], 0.05)  # fmt: skip
        return float(d), rows

    off, rows_off = gap(0.0)
    on, rows_on = gap(5.0)
    assert "loss/aerial-distill" in rows_on[-1] and "loss/aerial-distill" not in rows_off[-1]
    assert on < 0.8 * off, (on, off)
