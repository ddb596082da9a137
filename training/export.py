"""Export each tower to its own validated ONNX file and assemble the model bundle.

``python -m training.export --checkpoint out/train/checkpoint.pt --out bundle/`` writes
``bundle.json``, one ``<modality>.onnx`` per tower (opset 17, dynamic ``batch`` axis, contract
input names and dtypes, the :class:`~engine.model.contract.EncoderSpec` in ``metadata_props``) and
``tokenizer.json``. Every file is run in onnxruntime against torch on real inputs and refused if
max |Δ| exceeds the tolerance.

Validation inputs (:func:`validation_inputs`) are chosen per tower: up to 8 distinct samples that
HAVE the modality, spread over the held-out set and then the training set (the first held-out
samples of the real dataset have no DSM, and zero-filled rows test nothing). A modality that no
sample has is checked on the toy world's samples (:func:`synthetic_samples`);
``export_report.json`` says which (``"validation_inputs": {"dsm": "real:8", ...}``). The bundle's
training domain comes from the training samples (:mod:`training.domain`).

Options: ``--optimize`` adds ``<modality>.opt.onnx``, the graph after onnxruntime's transformer
optimizer (fused Attention / FastGelu / LayerNorm), validated against torch with the same gate;
``--int8 {dynamic,matmul,static}`` adds ``<modality>.int8.onnx`` (whole-graph dynamic, MatMul-only
per-channel dynamic of the optimised graph, or static QDQ calibrated on real inputs); ``--fp16``
adds a GPU variant. Reduced-precision files are kept only if their cosine to fp32 passes a gate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from engine.errors import ModelContractError
from engine.model.bundle_spec import TOKENIZER_FILE, BundleSpec
from engine.model.contract import BATCH_AXIS, INPUT_NAMES, OUTPUT_NAME, Modality

from .config import TrainConfig
from .domain import dataset_labels, training_domain
from .export_inputs import (  # noqa: F401  (re-exported: callers import them from here)
    VALIDATION_ROWS,
    ValidationInputs,
    synthetic_samples,
    tower_inputs_np,
    validation_inputs,
)
from .models.model import UniGeoCLIP
from .models.towers import tokenizer_path
from .optimize import (  # noqa: F401  (re-exported: callers import them from here)
    ATTENTION_OPS,
    INT8_METHODS,
    OPT_MODEL_TYPES,
    _Calibration,
    _matmul_ops,
    export_optimized,
    heads_width,
    optimize_graph,
    quantize_int8,
    run_onnx,
    set_spec,
    unfuse_skip_layernorm,
)
from .specs import encoder_spec

log = logging.getLogger(__name__)
OPSET = 17


@dataclass
class ExportReport:
    """What was written and how closely each file matches torch."""

    folder: Path
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # modality -> fp32 max |Δ|
    variant_cosine: dict[str, float] = field(default_factory=dict)  # "gps.int8" -> min cosine
    optimized: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> opt summary
    validation_inputs: dict[str, str] = field(default_factory=dict)  # modality -> "real:8"


class _Tower(nn.Module):
    """Wraps one tower so the traced graph has exactly the contract's inputs and output."""

    def __init__(self, model: UniGeoCLIP, modality: Modality) -> None:
        super().__init__()
        self.tower = model.towers[modality.value]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.tower(*inputs).float()


def _write_onnx(model: UniGeoCLIP, m: Modality, cfg: TrainConfig, trace: dict, path: Path) -> None:
    names = list(INPUT_NAMES[m])
    args = tuple(torch.from_numpy(trace[n][:2]) for n in names)
    axes = {n: {0: BATCH_AXIS} for n in [*names, OUTPUT_NAME]}
    with _eager_attention(model.towers[m.value]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python-side shape checks
        torch.onnx.export(
            _Tower(model, m).eval(), args, str(path), input_names=names,
            output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=OPSET,
            do_constant_folding=True, dynamo=False,
        )  # fmt: skip
    proto = onnx.load(str(path))
    set_spec(proto, encoder_spec(m, cfg.model).to_json())
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _eager_attention(tower: nn.Module) -> Iterator[None]:
    """Trace transformers' encoders with eager attention, then restore what training used.

    onnxruntime ran the SigLIP tower exported this way 27 % faster (21.1 vs 16.6 img/s, ViT-S/16
    at 128 px, one thread) than its SDPA export, with the same outputs.
    """
    subs = [
        (sub, sub.config._attn_implementation)
        for sub in tower.modules()
        if hasattr(sub, "set_attn_implementation") and hasattr(sub, "config")
    ]
    for sub, _ in subs:
        sub.set_attn_implementation("eager")
    try:
        yield
    finally:
        for sub, impl in subs:
            sub.set_attn_implementation(impl)


@torch.no_grad()
def export_tower(
    model: UniGeoCLIP, m: Modality, cfg: TrainConfig, inputs: dict, path: Path, tol: float
) -> float:
    """Export, then validate on ``inputs`` (another batch size than traced); return max |Δ|."""
    _write_onnx(model, m, cfg, inputs, path)
    ref = model.towers[m.value](*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES[m]))
    diff = float(np.abs(run_onnx(path, inputs) - ref.float().numpy()).max())
    if not diff <= tol:
        path.unlink(missing_ok=True)
        raise ModelContractError(
            f"{m.value}: onnxruntime differs from torch by {diff:.2e} > {tol:.0e}; not exported"
        )
    return diff


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


# A reduced-precision variant is kept only if every validation embedding stays this close (cosine)
# to fp32; PERFORMANCE_NOTES reports int8 at 0.96-0.999 on random weights and fp16 collapses.
MIN_COSINE = {"int8": 0.99, "fp16": 0.999}


def export_variants(
    path: Path, inputs: dict, spec_json: str, int8: bool | str, fp16: bool,
    calib: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:  # fmt: skip
    """int8 / fp16 siblings of ``path``; returns {"<mod>.int8": min cosine to fp32}.

    ``int8`` is False/"" (none), True (= "dynamic") or one of :data:`INT8_METHODS`; "matmul"
    quantises ``<mod>.opt.onnx`` when the optimised graph was kept (fused attention becomes
    QAttention). A variant below :data:`MIN_COSINE` is deleted (its cosine is still reported),
    so the bundle never ships a reduced-precision file that changes the embeddings.
    """
    method = "dynamic" if int8 is True else (int8 or "")
    ref = run_onnx(path, inputs)
    out: dict[str, float] = {}
    for kind in [k for k, on in (("int8", method), ("fp16", fp16)) if on]:
        v = path.with_suffix(f".{kind}.onnx")
        if kind == "int8":
            opt = path.with_suffix(".opt.onnx")
            src = opt if method in ("matmul", "embedding") and opt.is_file() else path
            quantize_int8(src, v, method, calib if calib is not None else inputs)
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(v))
        cos = out[f"{path.stem}.{kind}"] = _finalise_variant(v, spec_json, inputs, ref)
        if cos < MIN_COSINE[kind]:
            v.unlink()
            log.warning(
                "%s: min cosine %.4f < %.3f, variant not kept", v.name, cos, MIN_COSINE[kind]
            )
    return out


def _finalise_variant(p: Path, spec_json: str, inputs: dict, ref: np.ndarray) -> float:
    proto = onnx.load(str(p))
    set_spec(proto, spec_json)
    onnx.save(proto, str(p))
    return _cosine_min(run_onnx(p, inputs), ref)


def export_bundle(
    model: UniGeoCLIP,
    cfg: TrainConfig,
    batch: dict | ValidationInputs,
    out_dir: str | Path,
    dataset: Any = None,
    tol: float = 1e-4,
    int8: bool | str | dict[str, str] = False,
    fp16: bool = False,
    optimize: bool = False,
    calib: dict | None = None,
) -> ExportReport:
    """Write the complete bundle into ``out_dir``, staged so a failure leaves nothing behind.

    Args:
        batch: the validation inputs (:func:`validation_inputs`), or a collated batch whose
            rows having each modality are used (synthetic ones where fewer than 2 differ).
        dataset: the training data: class prompts, provenance and the training domain
            (:func:`training.domain.training_domain`; a dataset folder's ``train`` split).
        optimize: also write ``<m>.opt.onnx`` (see :func:`export_optimized`); ``bundle.json``
            then names it for the towers where it was kept.
        int8: False, True (= "dynamic"), one of :data:`INT8_METHODS`, or a dict
            ``{modality or "*": method}`` (see :func:`int8_methods`).
        calib: a collated batch of real samples for ``int8="static"`` (default: ``batch``).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "bundle.json").is_file():
        raise ModelContractError(
            f"{out} exists and is not a model bundle; choose a new or empty folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    report = ExportReport(folder=out)
    model = model.eval()  # not .float(): that would round the GPS tower's float64 buffer
    try:
        _export_towers(model, cfg, (batch, calib), stage, report, tol, (int8, fp16, optimize))
        if Modality.TEXT in model.modalities:
            shutil.copyfile(tokenizer_path(cfg.model.text), stage / TOKENIZER_FILE)
        spec = bundle_spec(model, cfg, dataset)
        opt = {
            m: f"{m.value}.opt.onnx"
            for m in spec.encoders
            if (stage / f"{m.value}.opt.onnx").is_file()
        }
        dataclasses.replace(spec, encoders={**spec.encoders, **opt}).write(stage)
        summary = {"max_abs_diff": report.max_abs_diff, "tolerance": tol,
                   "variant_cosine": report.variant_cosine, "optimized": report.optimized,
                   "validation_inputs": report.validation_inputs,
                   "int8_method": int8_methods(int8, model.modalities) or None}  # fmt: skip
        (stage / "export_report.json").write_text(json.dumps(summary, indent=2) + "\n")
        stage.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        (stage / "bundle.json").chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


def _export_towers(
    model: UniGeoCLIP, cfg: TrainConfig, batches: tuple[Any, dict | None], stage: Path,
    report: ExportReport, tol: float, variants: tuple[bool | str, bool, bool],
) -> None:  # fmt: skip
    batch, calib_batch = batches
    val = batch if isinstance(batch, ValidationInputs) else validation_inputs(cfg, (), batch=batch)
    missing = [m.value for m in model.modalities if m.value not in val.inputs]
    if missing:
        raise ModelContractError(f"no validation inputs for {missing}; build them for every tower")
    report.validation_inputs = dict(val.sources)
    int8, fp16, optimize = variants
    methods = int8_methods(int8, model.modalities)
    for m in model.modalities:
        inputs = val.inputs[m.value]
        calib = tower_inputs_np(m, calib_batch) if calib_batch is not None else None
        path = stage / f"{m.value}.onnx"
        report.max_abs_diff[m.value] = export_tower(model, m, cfg, inputs, path, tol)
        if optimize:
            report.optimized[m.value] = export_optimized(model, m, cfg, inputs, path, tol)
        spec_json = encoder_spec(m, cfg.model).to_json()
        q = methods.get(m.value, "")
        report.variant_cosine.update(export_variants(path, inputs, spec_json, q, fp16, calib))
        log.info("%s: max |Δ| %.2e", m.value, report.max_abs_diff[m.value])


def int8_methods(int8: bool | str | dict[str, str], mods: list[Modality]) -> dict[str, str]:
    """``{modality: int8 method}`` from False / True / a method / ``{modality or "*": method}``."""
    if isinstance(int8, dict):
        bad = set(int8) - {"*", *(m.value for m in mods)}
        if bad or not set(int8.values()) <= set(INT8_METHODS):
            raise ModelContractError(f"bad --int8 entries {int8}; use METHOD or MODALITY=METHOD")
        return {
            m.value: int8.get(m.value, int8.get("*", ""))
            for m in mods
            if int8.get(m.value, int8.get("*"))
        }
    method = "dynamic" if int8 is True else (int8 or "")
    return {m.value: method for m in mods} if method else {}


def _parse_int8(values: list[str] | None) -> dict[str, str]:
    """CLI ``--int8 [METHOD] [MODALITY=METHOD ...]``; a bare ``--int8`` means dynamic for every
    tower, ``MODALITY=METHOD`` entries alone quantise those towers only."""
    if values is None:
        return {}
    out = {"*": "dynamic"} if not values else ({} if "=" in values[0] else {"*": values[0]})
    out.update(v.split("=", 1) for v in values if "=" in v)
    return out


def bundle_spec(model: UniGeoCLIP, cfg: TrainConfig, dataset: Any = None) -> BundleSpec:
    """``bundle.json`` content; prompts, provenance and domain come from the training dataset."""
    prompts, prov = dataset_labels(dataset)
    return BundleSpec(
        name=cfg.model.name, version=cfg.model.version, dim=cfg.model.embed_dim,
        encoders={m: f"{m.value}.onnx" for m in model.modalities}, class_prompts=prompts,
        provenance={k: v for k, v in prov.items() if k in cfg.model.modalities},
        training_domain=training_domain(dataset, cfg.model.aerial.gsd_m),
        description=f"UniGeoCLIP ({cfg.name} config), trained on data source '{cfg.data.source}'.",
        # the learned 1/temperature: the engine's zero-shot confidence is softmax(cos * scale)
        logit_scale=round(float(model.temperature_scale().detach()), 5),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import load_model
    from .steps import build_datasets, make_collate

    ap = argparse.ArgumentParser(description="Export a checkpoint as a UniGeo model bundle.")
    ap.add_argument("--checkpoint", required=True, help="checkpoint.pt written by training.train")
    ap.add_argument("--out", required=True, help="bundle folder to create (replaced if present)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |Δ| onnxruntime vs torch")
    ap.add_argument("--int8", nargs="*", default=None, metavar="METHOD|MODALITY=METHOD",
                    help="also write <modality>.int8.onnx: dynamic (a bare --int8; whole "
                    "graph), matmul (MatMul-only per-channel, of the optimised graph) or static "
                    "(QDQ calibrated on real training samples); per tower e.g. "
                    "--int8 matmul text=dynamic")  # fmt: skip
    ap.add_argument(
        "--optimize",
        action="store_true",
        help="also write <modality>.opt.onnx (fused attention/GELU) and use it",
    )
    ap.add_argument("--calib", type=int, default=64, help="training samples for --int8 static")
    ap.add_argument("--fp16", action="store_true", help="also write <modality>.fp16.onnx (GPU)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, cfg = load_model(a.checkpoint)
    train, val = build_datasets(cfg)
    collate = make_collate(cfg)
    batch = validation_inputs(cfg, (val, train), collate)
    calib = None
    int8 = _parse_int8(a.int8)
    if "static" in int8.values():  # spread over the training set: real tiles of every area
        idx = np.linspace(0, len(train) - 1, min(a.calib, len(train))).astype(int)
        calib = collate([train[int(i)] for i in idx])
    rep = export_bundle(model, cfg, batch, a.out, train, a.tol, int8, a.fp16, a.optimize, calib)
    for k, v in rep.max_abs_diff.items():
        print(f"{k:11s} max |Δ| = {v:.2e} on {rep.validation_inputs[k]} inputs")
    for k, o in rep.optimized.items():
        print(f"{k:11s} optimised ({o['model_type']}): max |Δ| = {o['max_abs_diff']:.2e}, "
              f"kept {o['kept']}, fused {o['fused']}")  # fmt: skip
    for k, v in rep.variant_cosine.items():
        print(f"{k:16s} min cosine to fp32 = {v:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
