"""Export of the tiny model: ORT equals torch per tower, specs parse, bundle is complete.

Also: every tower is validated on distinct samples that have its modality (not zero-filled
rows), and the bundle's training domain comes from the training samples, one box per area.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine.errors import ModelContractError
from engine.model.bundle_spec import BundleSpec
from engine.model.contract import (
    BATCH_AXIS,
    INPUT_NAMES,
    META_SPEC_KEY,
    OUTPUT_NAME,
    EncoderSpec,
    Modality,
)
from training.export import export_bundle, run_onnx, tower_inputs_np

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """Exported from a batch of 9 held-out samples whose DSM chips were removed."""
    trainer, _, _ = trained
    samples = [dict(trainer.val_set[i]) for i in range(9)]
    for s in samples:
        s.pop("dsm", None)  # like the real dataset's first held-out samples: no DSM
    batch = trainer.collate(samples)
    out = tmp_path_factory.mktemp("export") / "bundle"
    report = export_bundle(trainer.core, trainer.cfg, batch, out, trainer.train_set, int8=True)
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
    trainer = exported[0]
    # the learned 1/temperature travels with the bundle (zero-shot confidence uses it)
    assert spec.logit_scale == pytest.approx(float(trainer.core.temperature_scale()), rel=1e-4)
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
    assert int8_methods(_parse_int8(["text=embedding"]), mods) == {"text": "embedding"}
    got = int8_methods(_parse_int8(["matmul", "text=dynamic"]), mods)
    assert got == {"aerial": "matmul", "streetview": "matmul", "dsm": "matmul",
                   "text": "dynamic", "gps": "matmul"}  # fmt: skip
    with pytest.raises(ModelContractError, match="bad --int8"):
        int8_methods(_parse_int8(["matmul", "sonar=dynamic"]), mods)


# ---- validation inputs per tower and the training domain (review of the export) ----------


def test_a_modality_missing_from_the_batch_is_validated_on_synthetic_rows(exported):
    _, _, out, report = exported
    assert report.validation_inputs["dsm"] == "synthetic:8"  # no zero-filled constant chip
    assert report.validation_inputs["gps"] == "real:8"  # 9 rows, one was a duplicate at most
    saved = json.loads((out / "export_report.json").read_text())
    assert saved["validation_inputs"] == report.validation_inputs


class _Without(torch.utils.data.Dataset):
    """A dataset view whose samples lack one modality (the real held-out set lacks DSM)."""

    def __init__(self, ds, key: str) -> None:
        self.ds, self.key = ds, key

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return {k: v for k, v in self.ds[i].items() if k != self.key}


def _distinct_rows(inputs: dict[str, np.ndarray]) -> int:
    rows = len(next(iter(inputs.values())))
    flat = np.concatenate([v.reshape(rows, -1).astype(np.float64) for v in inputs.values()], 1)
    return len(np.unique(flat, axis=0))


def test_validation_rows_come_from_samples_that_have_the_modality(trained):
    from training.export import validation_inputs

    trainer, _, _ = trained
    held = _Without(trainer.val_set, "dsm")
    val = validation_inputs(trainer.cfg, (held, trainer.train_set), trainer.collate)
    assert val.sources == {m.value: "real:8" for m in Modality}
    dsm = val.inputs["dsm"][INPUT_NAMES[Modality.DSM][0]]
    assert dsm.shape[0] == 8 and _distinct_rows(val.inputs["dsm"]) == 8
    assert (dsm.reshape(8, -1).std(1) > 0).all()  # real terrain, not an all-zero stand-in
    # the DSM rows are real training chips: each equals one collated training sample
    train = (trainer.train_set[i] for i in range(len(trainer.train_set)))
    ref = trainer.collate([{"sample_id": s["sample_id"], "lat": 0.0, "lon": 0.0, "dsm": s["dsm"]}
                           for s in train if "dsm" in s])  # fmt: skip
    ref_rows = {r.tobytes() for r in ref["dsm"].numpy()}
    assert all(r.tobytes() in ref_rows for r in dsm)
    for m in Modality:
        assert _distinct_rows(val.inputs[m.value]) == 8, m


def test_no_sample_with_the_modality_falls_back_to_distinct_synthetic_rows(trained):
    from training.export import validation_inputs

    trainer, _, _ = trained
    no_dsm = (_Without(trainer.val_set, "dsm"), _Without(trainer.train_set, "dsm"))
    val = validation_inputs(trainer.cfg, no_dsm, trainer.collate, n=5)
    assert val.sources["dsm"] == "synthetic:5" and val.sources["aerial"] == "real:5"
    dsm = val.inputs["dsm"][INPUT_NAMES[Modality.DSM][0]]
    assert dsm.shape == (5, 1, *dsm.shape[2:]) and _distinct_rows(val.inputs["dsm"]) == 5
    assert np.isfinite(dsm).all() and (dsm.reshape(5, -1).std(1) > 0).all()


def test_identical_rows_are_refused(trained):
    from training.export import validation_inputs

    trainer, _, _ = trained
    one = [trainer.val_set[i] for i in range(20) if "aerial" in trainer.val_set[i]][:1]
    batch = trainer.collate(one * 6)  # six copies of one sample: one distinct row
    val = validation_inputs(trainer.cfg, (), batch=batch)
    assert val.sources["aerial"] == "synthetic:8"  # one distinct real row tests nothing


def test_domain_has_one_box_per_training_area_and_the_training_gsds():
    from engine.search.domain import gsd_out_of_range, in_domain_lonlat
    from training.domain import domain_from_samples

    area = np.array(["nd", "nd", "za", "za", "globe", "globe", "street"], dtype=object)
    lat = np.array([47.0, 47.1, -34.0, -34.1, 10.0, -20.0, 55.7])
    lon = np.array([-99.2, -99.1, 20.5, 20.6, -60.0, 120.0, 13.2])
    gsd = np.array([5.0, 5.0, 2.5, 2.5, 7421.3, 7421.3, 0.0])
    imagery = np.array([True, True, True, True, True, True, False])
    d = domain_from_samples(area, lat, lon, gsd, imagery)
    assert len(d.bboxes) == 2  # the coarse globe and the street-only area are not domain
    assert in_domain_lonlat(lon[:4], lat[:4], d).all()
    assert not in_domain_lonlat(np.array([-40.0, -60.0]), np.array([5.0, 10.0]), d).any()
    assert d.gsd_range_m == (2.5, 5.0)
    assert [gsd_out_of_range(g, d) for g in (2.4, 2.5, 5.0, 5.1)] == [True, False, False, True]


def test_padded_box_crosses_the_antimeridian_the_short_way():
    from training.domain import padded_box

    w, s, e, n = padded_box(np.array([179.9, -179.9]), np.array([-17.0, -16.9]), pad=0.05)
    assert w > e and np.isclose(w, 179.85) and np.isclose(e, -179.85)
    assert np.isclose(s, -17.05) and np.isclose(n, -16.85)


def _write_dataset(root: Path) -> Path:
    from training.data.writer import DatasetWriter, SampleRecord

    rng = np.random.default_rng(0)
    aerial = [rng.random((4, 16, 16)).astype(np.float32)]
    rows = [("tr-nd-%d", "naip", "train", 47.0, -99.2, 5.0), ("tr-za-%d", "za", "train", -34.0,
            20.5, 2.5), ("va-za-%d", "za", "val", -34.3, 20.9, 2.5),
            ("va-pe-%d", "peru", "val", -8.4, -74.5, 90.0)]  # fmt: skip
    with DatasetWriter(root, "mini") as w:
        for sid, area, split, lat, lon, gsd in rows:
            for i in range(3):
                prov = {"aerial": "real", "gps": "real"}
                ll = (lat + 0.01 * i, lon + 0.01 * i)
                w.add(SampleRecord(sid % i, *ll, area, split, gsd, aerial=aerial, provenance=prov))
        w.close(bands={"aerial": ["red", "green", "blue", "nir"]})
    return root


def test_bundle_spec_takes_the_domain_from_the_training_split(trained, tmp_path):
    from training.data import ChipDataset
    from training.export import bundle_spec

    trainer, _, _ = trained
    root = _write_dataset(tmp_path / "mini")
    val = ChipDataset(root, "val")  # what export's main used to pass
    d = bundle_spec(trainer.core, trainer.cfg, val).training_domain
    assert len(d.bboxes) == 2 and d.gsd_range_m == (2.5, 5.0)
    assert d.contains(-99.19, 47.01) and d.contains(20.51, -33.99)  # training samples
    assert not d.contains(-74.5, -8.4)  # a held-out-only area is not training domain


def test_toy_domain_covers_every_training_sample(trained):
    from engine.search.domain import in_domain_lonlat
    from training.export import bundle_spec

    trainer, _, _ = trained
    d = bundle_spec(trainer.core, trainer.cfg, trainer.train_set).training_domain
    lat, lon = trainer.train_set.coords()
    assert len(d.bboxes) == 1 and in_domain_lonlat(lon, lat, d).all()
    gsd = trainer.cfg.model.aerial.gsd_m
    assert d.gsd_range_m == ((gsd, gsd) if gsd else (0.0, float("inf")))


def test_main_exports_with_the_training_domain_and_real_validation_rows(trained, tmp_path):
    from engine.search.domain import in_domain_lonlat
    from training.export import main

    trainer, _, run = trained
    out = tmp_path / "bundle"
    assert main(["--checkpoint", str(run / "checkpoint.pt"), "--out", str(out)]) == 0
    d = BundleSpec.read(out).training_domain
    lat, lon = trainer.train_set.coords()
    assert in_domain_lonlat(lon, lat, d).all()
    saved = json.loads((out / "export_report.json").read_text())
    assert saved["validation_inputs"] == {m.value: "real:8" for m in Modality}


@pytest.fixture(scope="module")
def real_dataset() -> Path:
    root = REPO / "data-cache" / "dataset"
    if not (root / "samples.parquet").is_file():
        pytest.skip("data-cache/dataset not built (make data)")
    return root


def test_real_dataset_domain_holds_every_training_imagery_sample(real_dataset):
    import pyarrow.parquet as pq

    from engine.search.domain import gsd_out_of_range, in_domain_lonlat
    from training.domain import dataset_domain

    d = dataset_domain(real_dataset)
    t = pq.read_table(real_dataset / "samples.parquet").to_pylist()
    train = [r for r in t if r["split"] == "train"]
    fine = [r for r in train if (r["aerial"] or r["dsm"]) and 0 < r["gsd_m"] < 1000]
    assert len(fine) >= 100
    inside = in_domain_lonlat(np.array([r["lon"] for r in fine]),
                              np.array([r["lat"] for r in fine]), d)  # fmt: skip
    assert inside.all(), {r["area_id"] for r, ok in zip(fine, inside, strict=True) if not ok}
    assert not any(gsd_out_of_range(r["gsd_m"], d) for r in fine)
    assert len(d.bboxes) == len({r["area_id"] for r in fine})
