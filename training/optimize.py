"""ONNX graph work after export: the spec in the metadata, fused graphs and int8 variants.

- :func:`set_spec` / :func:`run_onnx`: write the encoder spec into a file's metadata; run a file
  on the CPU provider, checked against the input/output contract.
- Graph optimisation (:func:`export_optimized`): onnxruntime's transformer optimizer per tower
  (the model type that fuses most attention kept), SkipLayerNormalization split back (its CPU
  kernel was 4x slower here), validated against torch like the plain export.
- int8 (:func:`quantize_int8`): ``dynamic`` (whole graph), ``matmul`` (MatMul, fused Attention
  and embeddings only, per channel, reduce_range for CPUs without VNNI) or ``static`` (QDQ
  calibrated on real inputs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from engine.errors import ModelContractError
from engine.model.contract import INPUT_DTYPES, INPUT_NAMES, META_SPEC_KEY, OUTPUT_NAME, Modality

from .config import TrainConfig
from .models.model import UniGeoCLIP
from .specs import encoder_spec

log = logging.getLogger(__name__)

_ORT_DTYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


def set_spec(proto: onnx.ModelProto, spec_json: str) -> None:
    """Store the spec under ``META_SPEC_KEY``, replacing any previous value."""
    for p in list(proto.metadata_props):
        if p.key == META_SPEC_KEY:
            proto.metadata_props.remove(p)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_SPEC_KEY, spec_json


def run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Run a file on the CPU provider; check its input names and dtypes against the contract."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = {i.name: i.type for i in sess.get_inputs()}
    want = {n: _ORT_DTYPES[INPUT_DTYPES[n]] for n in inputs}
    if got != want or [o.name for o in sess.get_outputs()] != [OUTPUT_NAME]:
        raise ModelContractError(f"{path.name}: inputs {got} / outputs do not match the contract")
    return sess.run([OUTPUT_NAME], inputs)[0]


# ---- graph optimisation ----------------------------------------------------------------------

# onnxruntime.transformers optimizer model types tried per tower, in order; the one that fuses
# the most attention blocks wins. Only "clip" recognises the SigLIP/ViT attention ("vit" fuses
# LayerNorm and GELU only); MiniLM and the GPS register transformer are BERT-like.
_IMG_TYPES = ("clip", "vit")
OPT_MODEL_TYPES = {Modality.AERIAL: _IMG_TYPES, Modality.STREETVIEW: _IMG_TYPES,
                   Modality.DSM: _IMG_TYPES, Modality.TEXT: ("bert",), Modality.GPS: ("bert",)}  # fmt: skip
ATTENTION_OPS = ("Attention", "MultiHeadAttention")


def heads_width(m: Modality, cfg: TrainConfig, tower: nn.Module | None = None) -> tuple[int, int]:
    """(attention heads, hidden width) of a tower; (0, 0) lets the optimizer guess (it often fails).

    From the config for the GPS encoder and named ViT sizes, else from the transformers config
    of ``tower`` (pretrained MiniLM / SigLIP).
    """
    from .config import VIT_ARCHS

    if m is Modality.GPS:
        return cfg.model.gps.heads, cfg.model.gps.width
    arch = getattr(getattr(cfg.model, m.value, None), "arch", None)
    if arch in VIT_ARCHS and not getattr(getattr(cfg.model, m.value), "init_from", ""):
        width, _, heads = VIT_ARCHS[arch]
        return heads, width
    for sub in tower.modules() if tower is not None else ():
        c = getattr(sub, "config", None)
        if hasattr(c, "num_attention_heads") and hasattr(c, "hidden_size"):
            return int(c.num_attention_heads), int(c.hidden_size)
    return 0, 0


def optimize_graph(
    src: Path, dst: Path, m: Modality, hw: tuple[int, int], types: tuple[str, ...] = ()
) -> tuple[str, dict]:
    """Write the transformer-optimised graph of ``src`` to ``dst``; return (model type, counts).

    Fused SkipLayerNormalization nodes are split back into Add + LayerNormalization: the
    attention fusion needs them to match, but onnxruntime 1.32's CPU SkipLayerNormalization
    kernel ran 4x slower here than Add + Add + LayerNormalization ([32, 16, 192]: 640 vs 170 us).
    ``types`` overrides the optimizer model types tried (default :data:`OPT_MODEL_TYPES`).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    heads, width = hw
    best: tuple[int, str, Any, dict] | None = None
    for mt in types or OPT_MODEL_TYPES[m]:
        logging.disable(logging.INFO)  # the fusion modules log every pattern at INFO
        try:
            opt = optimize_model(str(src), model_type=mt, num_heads=heads, hidden_size=width)
        finally:
            logging.disable(logging.NOTSET)
        counts = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
        n_att = sum(counts.get(k, 0) for k in ATTENTION_OPS)
        if best is None or n_att > best[0]:
            best = (n_att, mt, opt.model, counts)
    assert best is not None
    _, mt, proto, counts = best
    counts["SkipLayerNormalization (split)"] = unfuse_skip_layernorm(proto)
    counts.pop("SkipLayerNormalization", None)
    onnx.save(proto, str(dst))
    return mt, counts


def unfuse_skip_layernorm(proto: onnx.ModelProto) -> int:
    """Replace each com.microsoft SkipLayerNormalization by Add (+ bias Add) + LayerNormalization.

    Returns the number replaced. A node whose mean / inv-std outputs are consumed is kept.
    """
    from onnx import helper

    nodes, n = [], 0
    for node in proto.graph.node:
        outs = list(node.output) + [""] * (4 - len(node.output))
        if node.op_type != "SkipLayerNormalization" or any(outs[1:3]):
            nodes.append(node)
            continue
        ins = list(node.input) + [""] * (5 - len(node.input))
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        total = outs[3] or f"{node.name}_sum"
        nodes.append(helper.make_node("Add", ins[:2], [total if not ins[4] else f"{total}_nb"]))
        if ins[4]:
            nodes.append(helper.make_node("Add", [f"{total}_nb", ins[4]], [total]))
        ln_in = [total, ins[2]] + ([ins[3]] if ins[3] else [])
        nodes.append(helper.make_node("LayerNormalization", ln_in, [outs[0]], axis=-1, epsilon=eps))
        n += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return n


@torch.no_grad()
def export_optimized(
    model: UniGeoCLIP, m: Modality, cfg: TrainConfig, inputs: dict, plain: Path, tol: float
) -> dict[str, Any]:
    """``<m>.opt.onnx`` next to ``plain``, validated against torch like the plain export.

    Returns ``{"model_type", "fused", "max_abs_diff", "kept"}``; a graph over ``tol`` is deleted
    (the bundle then keeps the plain file) and so is one with no fused attention (no gain).
    """
    dst = plain.with_suffix(".opt.onnx")
    mt, fused = optimize_graph(plain, dst, m, heads_width(m, cfg, model.towers[m.value]))
    proto = onnx.load(str(dst))
    set_spec(proto, encoder_spec(m, cfg.model).to_json())  # the optimizer drops metadata_props
    onnx.save(proto, str(dst))
    ref = model.towers[m.value](*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES[m]))
    diff = float(np.abs(run_onnx(dst, inputs) - ref.float().numpy()).max())
    n_att = sum(fused.get(k, 0) for k in ATTENTION_OPS)
    kept = diff <= tol and n_att > 0
    if not kept:
        dst.unlink()
        why = f"max |Δ| {diff:.2e} > {tol:.0e}" if diff > tol else "no attention fused"
        log.warning("%s: optimised graph not kept (%s)", m.value, why)
    return {"model_type": mt, "fused": fused, "max_abs_diff": diff, "kept": kept}


# ---- int8 ----------------------------------------------------------------------------------

INT8_METHODS = ("dynamic", "matmul", "static", "embedding")


class _Calibration:
    """onnxruntime CalibrationDataReader over contract inputs, in chunks of ``rows``."""

    def __init__(self, inputs: dict[str, np.ndarray], rows: int = 16) -> None:
        n = len(next(iter(inputs.values())))
        self._it = iter(
            [{k: v[i : i + rows] for k, v in inputs.items()} for i in range(0, n, rows)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _matmul_ops(proto: onnx.ModelProto) -> list[str]:
    """Op types the "matmul" method quantises in ``proto``.

    Weight MatMuls and fused Attention; also the word-embedding lookup (fused
    EmbedLayerNormalization, or a Gather from a table of >= 1M values): weight-only, it costs no
    speed and keeps MiniLM's 47 MB fp32 table from breaking the 50 MB bundle cap.
    """
    ops = ["MatMul"]
    types = {n.op_type for n in proto.graph.node}
    ops += [t for t in ("Attention", "EmbedLayerNormalization") if t in types]
    sizes = {t.name: int(np.prod(t.dims)) for t in proto.graph.initializer}
    gathers = (n for n in proto.graph.node if n.op_type == "Gather")
    if "EmbedLayerNormalization" not in types and any(
        sizes.get(n.input[0], 0) >= 1 << 20 for n in gathers
    ):
        ops.append("Gather")
    return ops


def quantize_int8(
    src: Path, dst: Path, method: str, calib: dict[str, np.ndarray] | None = None
) -> None:
    """Write the int8 variant of ``src`` with one of :data:`INT8_METHODS`.

    - ``dynamic``: ``quantize_dynamic`` of every supported op (incl. the patch Conv), per tensor.
    - ``matmul``: weight MatMuls, fused Attention and embedding tables (:func:`_matmul_ops`),
      per-channel weights with ``reduce_range`` (7-bit): AVX2 without VNNI multiplies u8 x s8
      into saturating int16, and full-range per-channel weights lost accuracy (aerial min
      cosine 0.9974 vs 0.9999). Conv, LayerNorm, GELU and softmax stay fp32.
    - ``static``: QDQ MatMuls with activation ranges calibrated (MinMax) on ``calib``.
    - ``embedding``: only the word-embedding table (fused EmbedLayerNormalization, or a Gather
      from a table of >= 1M values), per row: weight-only, so no activation is quantised and the
      graph stays independent of the batch; with the other weights stored as fp16
      (:mod:`training.weight_storage`) MiniLM takes 34 MB at a min cosine of 0.999 to fp32,
      where whole-MatMul int8 fell to 0.986 behind the MLP text head.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method not in INT8_METHODS:
        raise ModelContractError(f"unknown int8 method {method!r}; choose one of {INT8_METHODS}")
    if method == "dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    elif method == "matmul":
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
            op_types_to_quantize=_matmul_ops(onnx.load(str(src))),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # com.microsoft outputs
        )  # fmt: skip
    elif method == "embedding":
        ops = [
            o
            for o in _matmul_ops(onnx.load(str(src)))
            if o in ("EmbedLayerNormalization", "Gather")
        ]
        if not ops:
            raise ModelContractError(f"{src.name} has no embedding table to quantise")
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
            op_types_to_quantize=ops,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
    else:
        if calib is None:
            raise ModelContractError("static int8 needs calibration inputs")
        quantize_static(
            str(src), str(dst), _Calibration(calib), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
