"""Export of the tiny model: ORT equals torch per tower, specs parse, bundle is complete."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from engine.contract import (
    BATCH_AXIS,
    INPUT_NAMES,
    META_SPEC_KEY,
    OUTPUT_NAME,
    BundleSpec,
    EncoderSpec,
    Modality,
)
from engine.errors import ModelContractError
from training.export import export_bundle, run_onnx, tower_inputs_np


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    trainer, _, _ = trained
    batch = trainer.collate([trainer.val_set[i] for i in range(9)])
    out = tmp_path_factory.mktemp("export") / "bundle"
    report = export_bundle(trainer.core, trainer.cfg, batch, out, trainer.val_set, int8=True)
    return trainer, batch, out, report


def test_every_tower_matches_torch_within_tolerance(exported):
    _, _, out, report = exported
    assert set(report.max_abs_diff) == {m.value for m in Modality}
    assert all(d <= 1e-4 for d in report.max_abs_diff.values()), report.max_abs_diff
    saved = json.loads((out / "export_report.json").read_text())
    assert saved["max_abs_diff"] == report.max_abs_diff


@pytest.mark.parametrize("modality", list(Modality))
def test_onnx_file_follows_the_contract(exported, modality):
    trainer, batch, out, _ = exported
    proto = onnx.load(str(out / f"{modality.value}.onnx"))
    assert proto.opset_import[0].version == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    spec = EncoderSpec.from_json(meta[META_SPEC_KEY])
    assert spec.modality is modality and spec.dim == trainer.cfg.model.embed_dim
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES[modality])
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH_AXIS
    inputs = tower_inputs_np(modality, batch)
    for n in (1, 5):  # dynamic batch axis, other sizes than traced
        part = {k: v[:n] for k, v in inputs.items()}
        got = run_onnx(out / f"{modality.value}.onnx", part)
        with torch.no_grad():
            ref = trainer.core.towers[modality.value](*(torch.from_numpy(part[k]) for k in part))
        assert got.shape == (n, spec.dim)
        assert np.abs(got - ref.numpy()).max() <= 1e-4


def test_bundle_reads_back_and_int8_stays_close(exported):
    _, _, out, report = exported
    spec = BundleSpec.read(out)
    assert {m.value for m in spec.encoders} == {m.value for m in Modality}
    assert all((out / f).is_file() for f in spec.encoders.values())
    assert (out / spec.tokenizer).is_file()
    assert spec.provenance["aerial"] == "synthetic" and "cropland" in spec.class_prompts
    assert spec.training_domain.contains(7.0, 47.0)
    assert set(report.variant_cosine) == {f"{m.value}.int8" for m in Modality}
    for name, cos in report.variant_cosine.items():
        kept = (out / f"{name}.onnx").is_file()
        assert kept == (cos >= 0.99), (name, cos)  # below the gate the file is removed
        if kept:
            meta = {p.key for p in onnx.load(str(out / f"{name}.onnx")).metadata_props}
            assert META_SPEC_KEY in meta


def test_failed_validation_leaves_nothing_behind(exported, tmp_path):
    trainer, batch, _, _ = exported
    target = tmp_path / "bad_bundle"
    with pytest.raises(ModelContractError, match="differs from torch"):
        export_bundle(trainer.core, trainer.cfg, batch, target, tol=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_engine_loads_the_bundle_and_agrees_with_torch(exported):
    from engine.model import UniGeoModel

    trainer, _, out, _ = exported
    model = UniGeoModel.load(out, providers="cpu", threads=1)
    lat, lon = np.array([46.2, 47.9, -33.9]), np.array([6.1, 8.4, 20.5])
    got = model.encode_gps(lat, lon)
    with torch.no_grad():
        ll = torch.tensor(np.stack([lat, lon], 1), dtype=torch.float32)
        ref = trainer.core.towers["gps"](ll).numpy()
    assert np.abs(got - ref).max() <= 1e-4
    texts = ["an aerial view of forest", "mostly water here"]
    got = model.encode_text(texts)
    batch = trainer.collate([{"sample_id": str(i), "lat": 0.0, "lon": 0.0, "text": t}
                             for i, t in enumerate(texts)])  # fmt: skip
    with torch.no_grad():
        ref = trainer.core.encode("text", batch["text"]).numpy()
    assert np.abs(got - ref).max() <= 1e-4
