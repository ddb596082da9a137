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


# ---- optimised graph and int8 variants (issue #8) ------------------------------------------


@pytest.fixture(scope="module")
def exported_opt(trained, tmp_path_factory):
    """The tiny model exported with ``--optimize --int8 matmul``."""
    trainer, _, _ = trained
    batch = trainer.collate([trainer.val_set[i] for i in range(9)])
    out = tmp_path_factory.mktemp("export_opt") / "bundle"
    report = export_bundle(
        trainer.core, trainer.cfg, batch, out, trainer.val_set, int8="matmul", optimize=True
    )
    return trainer, batch, out, report


def _ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_optimised_graphs_fuse_attention_and_match_torch(exported_opt):
    trainer, batch, out, report = exported_opt
    assert set(report.optimized) == {m.value for m in Modality}
    # The micro ViT towers are fused by the "clip" model type, one Attention per block.
    aerial = report.optimized["aerial"]
    assert aerial["kept"] and aerial["model_type"] == "clip"
    assert aerial["fused"]["Attention"] == 2  # tiny config: micro ViT, depth 2
    kept = [m for m in Modality if report.optimized[m.value]["kept"]]
    for m in Modality:
        assert (out / f"{m.value}.opt.onnx").is_file() == (m in kept), m
    for m in kept:
        assert report.optimized[m.value]["max_abs_diff"] <= 1e-4
        ops = _ops(out / f"{m.value}.opt.onnx")
        assert ops.get("Attention", 0) + ops.get("MultiHeadAttention", 0) >= 1
        assert "SkipLayerNormalization" not in ops  # split back: its CPU kernel is slower
        inputs = tower_inputs_np(m, batch)
        for n in (1, 5):
            part = {k: v[:n] for k, v in inputs.items()}
            got = run_onnx(out / f"{m.value}.opt.onnx", part)
            with torch.no_grad():
                ref = trainer.core.towers[m.value](*(torch.from_numpy(part[k]) for k in part))
            assert got.shape == (n, trainer.cfg.model.embed_dim)
            assert np.abs(got - ref.numpy()).max() <= 1e-4, m
    saved = json.loads((out / "export_report.json").read_text())
    assert saved["optimized"]["aerial"]["fused"]["Attention"] == 2
    assert saved["int8_method"] == {m.value: "matmul" for m in Modality}


def test_spec_metadata_survives_optimisation_and_quantisation(exported_opt):
    _, _, out, _ = exported_opt
    variants = sorted(out.glob("*.opt.onnx")) + sorted(out.glob("*.int8.onnx"))
    assert len(variants) >= 2
    for path in variants:
        modality = path.name.split(".")[0]
        plain = {p.key: p.value for p in onnx.load(str(out / f"{modality}.onnx")).metadata_props}
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta[META_SPEC_KEY] == plain[META_SPEC_KEY], path.name
        assert EncoderSpec.from_json(meta[META_SPEC_KEY]).modality is Modality(modality)


def test_matmul_int8_quantises_matmuls_and_keeps_conv_fp32(exported_opt):
    _, _, out, report = exported_opt
    assert report.variant_cosine["aerial.int8"] >= 0.99
    proto = onnx.load(str(out / "aerial.int8.onnx"))
    ops = _ops(out / "aerial.int8.onnx")
    assert ops.get("Conv", 0) == 1 and "ConvInteger" not in ops  # patch embedding stays fp32
    assert ops.get("QAttention", 0) == 2 and "Attention" not in ops  # quantised from .opt
    assert ops.get("MatMulInteger", 0) >= 4  # out_proj, fc1, fc2 per block (+ head)
    assert ops.get("LayerNormalization", 0) >= 4
    inits = {t.name: t for t in proto.graph.initializer}
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    assert inits[conv.input[1]].data_type == onnx.TensorProto.FLOAT
    # per-channel weights: a scale per output column of each quantised MatMul weight
    scales = [t for t in proto.graph.initializer if t.name.endswith("_scale")]
    assert max(int(np.prod(t.dims)) for t in scales) >= 64  # micro ViT width 64


def _bundle_with(out, dst, suffix: str):
    """A copy of bundle ``out`` whose bundle.json names ``<m><suffix>`` where that file exists."""
    import shutil

    shutil.copytree(out, dst)
    data = json.loads((dst / "bundle.json").read_text())
    for m in list(data["encoders"]):
        if (dst / f"{m}{suffix}").is_file():
            data["encoders"][m] = f"{m}{suffix}"
    (dst / "bundle.json").write_text(json.dumps(data))
    return dst


def test_engine_runs_the_optimised_and_int8_bundle(exported_opt, tmp_path):
    from engine.model import UniGeoModel

    _, _, out, _ = exported_opt
    assert BundleSpec.read(out).encoders[Modality.AERIAL] == "aerial.opt.onnx"
    tiles = np.random.default_rng(0).random((6, 4, 32, 32), np.float32)  # reflectance in [0, 1]
    texts = ["an aerial view of forest", "mostly water here", "cropland"]
    emb = {}
    for name, suffix in (("plain", ".onnx"), ("opt", None), ("int8", ".int8.onnx")):
        folder = out if suffix is None else _bundle_with(out, tmp_path / name, suffix)
        with UniGeoModel.load(folder, providers="cpu", threads=1) as model:
            emb[name] = (model.encode_tiles(Modality.AERIAL, tiles), model.encode_text(texts))
    for got, ref in zip(emb["opt"], emb["plain"], strict=True):
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4
    for got, ref in zip(emb["int8"], emb["plain"], strict=True):
        assert got.shape == ref.shape and (got * ref).sum(1).min() >= 0.99  # unit rows: cosine


def test_static_int8_is_qdq_and_unknown_methods_are_refused(exported_opt, tmp_path):
    from training.export import quantize_int8

    _, batch, out, _ = exported_opt
    inputs = tower_inputs_np(Modality.AERIAL, batch)
    dst = tmp_path / "aerial.static.onnx"
    quantize_int8(out / "aerial.onnx", dst, "static", calib=inputs)
    ops = _ops(dst)
    assert ops.get("QuantizeLinear", 0) >= 4 and ops.get("DequantizeLinear", 0) >= 4
    ref = run_onnx(out / "aerial.onnx", inputs)
    got = ort_cpu_run(dst, inputs)
    assert (got * ref).sum(1).min() / np.linalg.norm(got, axis=1).max() >= 0.98
    with pytest.raises(ModelContractError, match="unknown int8 method"):
        quantize_int8(out / "aerial.onnx", tmp_path / "x.onnx", "int4")
    assert not (tmp_path / "x.onnx").exists()


def ort_cpu_run(path, inputs):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def test_int8_methods_per_tower_from_the_command_line():
    from training.export import _parse_int8, int8_methods

    mods = list(Modality)
    assert int8_methods(_parse_int8(None), mods) == {}
    assert set(int8_methods(_parse_int8([]), mods).values()) == {"dynamic"}  # bare --int8
    got = int8_methods(_parse_int8(["matmul", "text=dynamic"]), mods)
    assert got == {"aerial": "matmul", "streetview": "matmul", "dsm": "matmul",
                   "text": "dynamic", "gps": "matmul"}  # fmt: skip
    with pytest.raises(ModelContractError, match="bad --int8"):
        int8_methods(_parse_int8(["matmul", "sonar=dynamic"]), mods)
