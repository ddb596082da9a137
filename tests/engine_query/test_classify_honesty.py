"""Honest zero-shot classification: learned logit scale, declared accuracy warnings, final prompts.

Fake-model tests pin down the maths; the real-data test runs the CLI with the shipped default
bundle on a NAIP North Dakota scene (the reviewer's finding F2/F11 reproduction).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from engine.classify.land_use import zero_shot
from engine.classify.prompts import LOW_MARGIN, resolve_prompts, zero_shot_warning
from engine.cli.classify import read_classes
from engine.errors import InputError, ModelContractError
from engine.model.bundle_spec import BundleSpec
from engine.model.contract import Modality

D = 16
NAMES = ("water", "crops", "town")


def _bundle_dict(**extra) -> dict:
    d = {"format_version": 1, "name": "b", "version": "1", "dim": 8, "encoders": {"text": "t.onnx"}}
    return {**d, **extra}


def _setup(fx, rng, noise=0.2, **bundle_kw):
    """Three clusters (4 x 6 tiles each band of columns) and a fake model whose bundle prompts
    ("<name>", "an aerial view of <name>") both point at their class centre."""
    centres = fx.unit(rng.standard_normal((3, D)))
    truth = np.repeat(np.arange(3), 2)[None, :].repeat(4, axis=0)
    store = fx.make_store(centres[truth] + noise * rng.standard_normal((4, 6, D)) / np.sqrt(D))
    vocab, prompts = {}, {}
    for i, n in enumerate(NAMES):
        prompts[n] = (n, f"an aerial view of {n}")
        vocab[n] = vocab[f"an aerial view of {n}"] = centres[i]
        for t in ("{}", "an aerial view of {}", "a photo of {}"):
            vocab.setdefault(t.replace("{}", n), centres[i])
    vocab["a photo of wetland"] = vocab["wetland"] = vocab["an aerial view of wetland"] = centres[0]
    kw = {"class_prompts": prompts, "prompt_templates": ("{}", "a photo of {}"), **bundle_kw}
    return store, truth, centres, fx.FakeModel(D, vocab, **kw)


def _texts(model) -> list[str]:
    return [t for kind, (texts, _) in model.calls if kind == "text" for t in texts]


# -- contract --------------------------------------------------------------------------------------
def test_bundle_optional_fields_round_trip_and_validate():
    ev = {"zero_shot": {"accuracy": 0.25, "n_test": 40, "classes": 4}, "source": "eval run 7"}
    b = BundleSpec.from_dict(_bundle_dict(logit_scale=13.5, evaluation=ev))
    assert b.logit_scale == 13.5 and b.zero_shot_accuracy == 0.25
    assert BundleSpec.from_dict(b.to_dict()) == b
    old = BundleSpec.from_dict(_bundle_dict())
    assert old.logit_scale is None and old.zero_shot_accuracy is None
    assert "logit_scale" not in old.to_dict() and "evaluation" not in old.to_dict()
    bad = [
        ({"logit_scale": 0}, "logit_scale"),
        ({"logit_scale": -3.0}, "logit_scale"),
        ({"logit_scale": 5000}, "logit_scale"),
        ({"logit_scale": "14"}, "logit_scale"),
        ({"logit_scale": True}, "logit_scale"),
        ({"evaluation": [0.5]}, "evaluation"),
        ({"evaluation": {"zero_shot": 0.5}}, "zero_shot"),
        ({"evaluation": {"zero_shot": {"accuracy": 1.5}}}, "accuracy"),
    ]
    for extra, match in bad:
        with pytest.raises(ModelContractError, match=match):
            BundleSpec.from_dict(_bundle_dict(**extra))


def test_shipped_default_bundle_declares_scale_and_accuracy():
    from pathlib import Path

    b = BundleSpec.read(Path(__file__).resolve().parents[2] / "resources/models/default")
    # exp(logit_scale) of the training checkpoint (temperature 0.0830 in its metrics)
    assert b.logit_scale == pytest.approx(12.04, abs=0.01)
    # measured on the held-out labelled area (Havel, never trained on): 9 classes, chance 0.111
    assert b.zero_shot_accuracy == pytest.approx(0.2699)
    assert b.evaluation["zero_shot"]["n_test"] == 478
    assert "MODEL_CARD" in b.evaluation["source"]


# -- prompts (F11) ----------------------------------------------------------------------------------
def test_resolve_prompts_templates_only_bare_names():
    b = BundleSpec(
        "b",
        "1",
        8,
        {Modality.TEXT: "t.onnx"},
        class_prompts={"water": ("water", "an aerial view of water"), "sand": ("sand",)},
        prompt_templates=("{}", "an aerial view of {}"),
    )
    final, templated = resolve_prompts(None, b)
    assert final == {"water": ["water", "an aerial view of water"], "sand": ["sand"]}
    assert templated == []
    user = {"wetland": ["wetland"], "lake": ["a lake", " open water "], "sand": ["sand"]}
    final, templated = resolve_prompts(user, b)
    assert final["wetland"] == ["wetland", "an aerial view of wetland"]
    assert final["lake"] == ["a lake", "open water"]  # written prompts stay as written
    assert final["sand"] == ["sand"]  # the bundle's own prompts for that class are final
    assert templated == ["wetland"]
    assert resolve_prompts({"a": "pond", "b": ["b"]}, b, ["x {}"])[0] == {
        "a": ["pond"],
        "b": ["x b"],
    }
    with pytest.raises(InputError, match="class 'b' has no prompts"):
        resolve_prompts({"a": ["x"], "b": [" ", ""]}, b)
    with pytest.raises(InputError, match="exactly one"):
        resolve_prompts({"a": ["a"]}, b, ["no placeholder"])


def test_zero_shot_embeds_bundle_prompts_once(fx, rng):
    store, truth, _, model = _setup(fx, rng)
    res = zero_shot(store, model)
    assert np.array_equal(res.class_raster, truth)
    texts = _texts(model)
    assert texts == [p for n in NAMES for p in (n, f"an aerial view of {n}")]
    assert not any("of an aerial view" in t or "a photo of" in t for t in texts)
    assert all(tmpl is None for _, (_, tmpl) in model.calls)
    assert res.params["class_prompts"]["water"] == ["water", "an aerial view of water"]
    assert res.params["templated_classes"] == [] and res.params["templates"] == []
    model.calls.clear()
    res = zero_shot(store, model, {"wetland": ["wetland"], "town": ["an aerial view of town"]})
    assert _texts(model) == ["wetland", "a photo of wetland", "an aerial view of town"]
    assert res.params["templated_classes"] == ["wetland"]
    assert res.params["templates"] == ["{}", "a photo of {}"]


# -- confidence (F2) --------------------------------------------------------------------------------
def _cosines(fx, store, centres, r, c):
    protos = fx.unit(centres)  # each class's prompts all embed to its centre
    return protos @ store.embeddings[r, c].astype(np.float64)  # stored vectors, as the engine


def test_confidence_uses_the_bundles_logit_scale(fx, rng):
    store, _, centres, model = _setup(fx, rng, logit_scale=12.5)
    res = zero_shot(store, model)
    cos = _cosines(fx, store, centres, 1, 3)
    p = np.exp(12.5 * (cos - cos.max()))
    assert res.confidence[1, 3] == pytest.approx(p.max() / p.sum(), rel=1e-4)
    assert res.params["temperature"] == pytest.approx(0.08)
    assert res.params["temperature_source"] == "bundle"
    # the old hard-coded 0.01 made the same tile near-certain
    old = zero_shot(store, model, temperature=0.01)
    assert old.params["temperature_source"] == "given"
    assert np.nanmedian(old.confidence) > np.nanmedian(res.confidence)
    sorted_cos = np.sort(cos)
    gap = zero_shot(store, model, confidence="margin").confidence[1, 3]
    assert gap == pytest.approx(sorted_cos[-1] - sorted_cos[-2], abs=1e-4)


def test_margin_statistics_in_params(fx, rng):
    store, _, centres, model = _setup(fx, rng, logit_scale=20.0)
    res = zero_shot(store, model)
    gaps = []
    for r in range(4):
        for c in range(6):
            s = np.sort(_cosines(fx, store, centres, r, c))
            gaps.append(s[-1] - s[-2])
    # from a 0.0005-wide histogram: within a bin of the lower middle value (24 tiles)
    lo_mid = np.sort(gaps)[11]
    assert res.params["cosine_margin_median"] == pytest.approx(lo_mid, abs=5e-4)
    assert res.params["near_tie_share"] == pytest.approx(np.mean(np.array(gaps) < LOW_MARGIN))
    assert res.params["low_margin"] == LOW_MARGIN


# -- warnings ---------------------------------------------------------------------------------------
GOOD = {"zero_shot": {"accuracy": 0.9, "n_test": 50, "classes": 3}}


def test_no_warning_for_a_measured_good_model(fx, rng):
    store, _, _, model = _setup(fx, rng, logit_scale=20.0, evaluation=GOOD)
    res = zero_shot(store, model)
    assert res.warning == "" and res.params["warning"] == ""
    assert res.params["declared_zero_shot_accuracy"] == 0.9


def test_warning_for_low_unknown_accuracy_and_unknown_scale(fx, rng):
    low = {"zero_shot": {"accuracy": 0.015, "n_test": 68, "classes": 7}}
    store, _, _, model = _setup(fx, rng, logit_scale=13.2, evaluation=low)
    w = zero_shot(store, model).warning
    assert "1.5% zero-shot land-use accuracy" in w and "68 test samples" in w
    assert "chance 14%" in w and "few-shot" in w and "logit_scale" not in w
    odd = BundleSpec.from_dict(
        _bundle_dict(evaluation={"zero_shot": {"accuracy": 0.1, "classes": "x"}})
    )
    assert "scored 10.0% zero-shot land-use accuracy:" in zero_shot_warning(odd)
    store, _, _, model = _setup(fx, rng)  # neither accuracy nor scale declared
    res = zero_shot(store, model)
    assert "declares no measured zero-shot accuracy" in res.warning
    assert "declares no logit_scale" in res.warning
    assert res.params["temperature"] == 0.01 and res.params["temperature_source"] == "fallback"


def test_warning_for_near_ties(fx, rng):
    # every tile sits exactly between the first two class centres: all near-ties
    store, _, centres, model = _setup(fx, rng, logit_scale=20.0, evaluation=GOOD)
    mid = fx.unit(centres[0] + centres[1])
    tied = fx.make_store(np.broadcast_to(mid, (4, 6, D)) + 1e-4 * rng.standard_normal((4, 6, D)))
    res = zero_shot(tied, model)
    assert res.params["near_tie_share"] == 1.0
    assert "100% of the tiles are near-ties" in res.warning
    assert zero_shot_warning(model.bundle, near_tie_share=0.4) == ""
    assert "near-ties" in zero_shot_warning(model.bundle, near_tie_share=0.6)
    assert "90.0%" in zero_shot_warning(model.bundle, 0.0, min_accuracy=0.95)


# -- CLI --------------------------------------------------------------------------------------------
def test_read_classes_shapes(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(["wetland", " field "]))
    assert read_classes(str(f)) == {"wetland": ["wetland"], "field": ["field"]}
    f.write_text(json.dumps({"lake": ["a lake"], "river": "a river"}))
    assert read_classes(str(f)) == {"lake": ["a lake"], "river": ["a river"]}
    for bad in ("{}x", json.dumps(3), json.dumps({"a": 3})):
        f.write_text(bad)
        with pytest.raises(InputError, match="--classes"):
            read_classes(str(f))


def test_cli_on_real_naip_with_default_bundle(shared_data, tmp_path, capsys):
    from pathlib import Path

    from engine.cli.main import main

    bundle = str(Path(__file__).resolve().parents[2] / "resources/models/default")
    tif = shared_data / "naip_north_dakota" / "m_4709963_se_14_1_20200831.tif"
    if not tif.is_file():
        pytest.skip(f"{tif.name} is not in the shared data")
    store = tmp_path / "nd.store"
    assert main(["embed", str(tif), "--model", bundle, "--out", str(store)]) == 0
    out = tmp_path / "cls.tif"
    assert main(["classify", str(store), "--model", bundle, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "warning  Zero-shot land use" in text and "27.0% zero-shot" in text
    assert "temperature 0.08304 (bundle)" in text
    with rasterio.open(out) as ds:
        params = json.loads(ds.tags()["UNIGEO_PARAMS"])
    assert params["class_prompts"]["water"][0] == "an aerial view of water"
    assert "an aerial view of an aerial view" not in json.dumps(params)
    assert params["warning"].startswith("Zero-shot land use")
    with rasterio.open(tmp_path / "cls_confidence.tif") as ds:
        conf = ds.read(1)
    p50 = float(np.nanmedian(conf))
    # softmax at the learned scale 22.4 over 9 classes: far below the old 0.9999
    assert 1 / 9 < p50 < 0.9, p50
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(["wetland", "cropland"]))
    args = ["classify", str(store), "--model", bundle, "--out", str(tmp_path / "c2.tif")]
    assert main([*args, "--classes", str(classes)]) == 0
    with rasterio.open(tmp_path / "c2.tif") as ds:
        params = json.loads(ds.tags()["UNIGEO_PARAMS"])
    assert params["class_prompts"]["wetland"] == [
        "wetland",
        "an aerial view of wetland",
        "a satellite image of wetland",
    ]
    assert params["templated_classes"] == ["wetland", "cropland"]
