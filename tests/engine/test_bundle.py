"""Bundle loading: spec round-trips, every contract error, and the model hash."""

from __future__ import annotations

import json
import re
import shutil

import onnx
import pytest

from engine.errors import ModelContractError
from engine.model.bundle import load_bundle
from engine.model.bundle_spec import BundleSpec
from engine.model.contract import EncoderSpec, Modality
from tests.fixtures.analytic_bundle import BREAKAGES, break_bundle, make_analytic_bundle


@pytest.fixture()
def fresh(tmp_path):
    return make_analytic_bundle(tmp_path / "bundle")


def test_load_analytic_bundle(analytic_bundle):
    b = load_bundle(analytic_bundle)
    assert b.spec.name == "analytic" and b.spec.dim == 8 and b.folder == analytic_bundle
    assert set(b.encoder_specs) == set(Modality) == set(b.files)
    for m, s in b.encoder_specs.items():
        assert s.modality is m and s.dim == 8 and b.files[m].name == f"{m.value}.onnx"
        assert b.headers[m].default_opset == 17
    assert b.encoder_specs[Modality.AERIAL].preprocess.bands == ("red", "green", "blue", "nir")
    assert b.encoder_specs[Modality.AERIAL].inputs["pixels"] == ["batch", 4, 16, 16]
    assert list(b.encoder_specs[Modality.TEXT].inputs) == ["input_ids", "attention_mask"]
    assert b.tokenizer_path == analytic_bundle / "tokenizer.json"
    assert re.fullmatch(r"[0-9a-f]{64}", b.model_hash)
    assert len(b.all_files()) == 7
    assert b.spec.provenance == {m.value: "synthetic" for m in Modality}
    assert b.spec.training_domain.contains(-99.15, 47.02)
    assert set(b.spec.class_prompts) == {"water", "vegetation", "bare", "built"}


def test_specs_round_trip(analytic_bundle):
    b = load_bundle(analytic_bundle)
    for s in b.encoder_specs.values():
        assert EncoderSpec.from_json(s.to_json()) == s
    assert BundleSpec.from_dict(b.spec.to_dict()) == b.spec
    assert BundleSpec.read(analytic_bundle) == b.spec


def test_bundle_overrides_and_partial_bundle(tmp_path):
    folder = make_analytic_bundle(
        tmp_path / "a",
        dim=12,
        tile_px=32,
        bands=("red", "nir"),
        modalities=[Modality.AERIAL],
        name="tiny",
        version="7",
    )
    b = load_bundle(folder)
    assert b.spec.dim == 12 and b.spec.name == "tiny" and b.spec.version == "7"
    assert list(b.files) == [Modality.AERIAL] and b.tokenizer_path is None
    s = b.encoder_specs[Modality.AERIAL]
    assert s.inputs["pixels"] == ["batch", 2, 32, 32] and s.model_version == "7"
    assert not (folder / "tokenizer.json").exists()


ERRORS = {
    "missing_bundle_json": r"no bundle\.json in .*is this a UniGeo model bundle",
    "missing_onnx": r"lists 'aerial\.onnx' as the aerial encoder but it is missing",
    "missing_tokenizer": r"text encoder but its tokenizer 'tokenizer\.json' is missing",
    "truncated": r"aerial\.onnx is not a readable ONNX model .*corrupt or truncated",
    "garbage": r"aerial\.onnx is not (a readable )?(an )?ONNX model",
    "missing_spec": r"aerial\.onnx carries no 'unigeo\.spec' metadata",
    "bad_spec_json": r"aerial\.onnx: spec is not valid JSON",
    "wrong_modality": r"streetview\.onnx holds a streetview encoder but bundle\.json lists it as "
    r"the aerial encoder",
    "wrong_dim": r"aerial\.onnx outputs D=9 but bundle\.json says dim=8",
    "inconsistent_version": r"exported from model analytic other but bundle\.json is analytic 1",
    "bad_opset": r"needs IR 8 / opset 99 but onnxruntime",
    "bad_ir": r"needs IR 99 / opset 17",
}


@pytest.mark.parametrize("how", sorted(ERRORS))
def test_every_contract_error_is_precise(fresh, how):
    break_bundle(fresh, how)
    with pytest.raises(ModelContractError, match=ERRORS[how]):
        load_bundle(fresh)


def test_breakages_are_all_covered():
    # wrong_input_name passes load_bundle (names live in the graph); test_model covers it.
    assert set(BREAKAGES) - set(ERRORS) == {"wrong_input_name"}


def test_bad_bundle_json_and_missing_folder(fresh, tmp_path):
    with pytest.raises(ModelContractError, match="folder not found"):
        load_bundle(tmp_path / "nowhere")
    (fresh / "bundle.json").write_text("{broken")
    with pytest.raises(ModelContractError, match="not valid JSON"):
        load_bundle(fresh)
    d = json.loads(json.dumps({"format_version": 1, "name": "x", "version": "1", "dim": 8}))
    d["encoders"] = {"aerial": "../aerial.onnx"}
    (fresh / "bundle.json").write_text(json.dumps(d))
    with pytest.raises(ModelContractError, match="plain file name"):
        load_bundle(fresh)


def test_model_hash_stable_and_sensitive(fresh, tmp_path):
    h1 = load_bundle(fresh).model_hash
    assert load_bundle(fresh).model_hash == h1
    copy = shutil.copytree(fresh, tmp_path / "elsewhere")
    assert load_bundle(copy).model_hash == h1  # the folder's location does not matter
    tok = copy / "tokenizer.json"
    tok.write_text(tok.read_text() + " ")
    h2 = load_bundle(copy).model_hash
    assert h2 != h1
    model = onnx.load(str(copy / "gps.onnx"))
    model.graph.node[0].attribute[0].t.raw_data = b"\x00\x00\x80\x3f"  # deg := 1.0
    (copy / "gps.onnx").write_bytes(model.SerializeToString())
    assert load_bundle(copy).model_hash not in (h1, h2)
