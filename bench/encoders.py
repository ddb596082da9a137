"""Encoder throughput per tower: onnxruntime fp32 / int8 vs PyTorch eager, same weights, same run.

Towers come from a training config (``default_cpu`` builds the shipped bundle; ``small`` has the
ViT-S/16 aerial tower at 128 px), with the checkpoint's weights when one is given, else random
init (speed does not depend on the weights). Each tower is exported into a temporary folder
with ``training.export`` in four forms, all timed side by side with the same threads:
``ort_fp32`` the plain export, ``ort_int8`` its whole-graph dynamic int8 (the old bundle method),
``ort_opt`` the transformer-optimised graph (``export_optimized``: fused attention / FastGelu)
and ``ort_opt_int8`` its MatMul-only per-channel int8 (``quantize_int8(..., "matmul")``, the
shipped aerial method).

    .venv/bin/python bench/encoders.py --config default_cpu --batches 1 8 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    from .common import ROOT, time_blocks
except ImportError:  # run as a script
    from common import ROOT, time_blocks  # type: ignore[no-redef]

from engine.model.contract import INPUT_DTYPES, Modality

# Fused-operator counts reported per tower (fixed keys, so the table has one column set).
FUSED_OPS = ("Attention", "MultiHeadAttention", "FastGelu", "Gelu", "BiasGelu",
             "LayerNormalization", "SkipLayerNormalization (split)", "EmbedLayerNormalization")  # fmt: skip


def build_model(config: str, checkpoint: Path | None = None) -> tuple[Any, Any]:
    """``(UniGeoCLIP, TrainConfig)`` from a checkpoint if it exists, else the config, random init."""
    import torch

    from training.checkpoint import load_model
    from training.config import load_config
    from training.models.model import UniGeoCLIP

    if checkpoint is not None and Path(checkpoint).is_file():
        model, cfg = load_model(checkpoint)
        return model.eval(), cfg
    torch.manual_seed(0)
    cfg = load_config(config)
    return UniGeoCLIP(cfg.model).eval(), cfg


def make_inputs(modality: Modality, cfg: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible contract inputs for ``modality`` at ``batch`` rows (values do not affect speed)."""
    from training.specs import input_shapes

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in input_shapes(modality, cfg.model).items():
        dims = (batch, *shape[1:])
        if name == "input_ids":
            ids = rng.integers(1000, 2000, dims)
            ids[:, 0] = 101  # [CLS], so a BERT-style tower sees a normal sequence start
            out[name] = ids
        elif name == "attention_mask":
            out[name] = np.ones(dims)
        elif name == "latlon":
            out[name] = np.stack([rng.uniform(-60, 60, batch), rng.uniform(-180, 180, batch)], 1)
        else:
            out[name] = rng.normal(0.0, 1.0, dims)
        out[name] = out[name].astype(INPUT_DTYPES[name])
    return out


def export_plain_and_int8(model: Any, cfg: Any, m: Modality, folder: Path) -> dict[str, Path]:
    """Export one tower (validated against torch), its int8 and optimised forms.

    Returns ``{"fp32", "int8", "opt", "opt_int8"}`` paths; the last two are missing when the
    optimizer fused no attention in this tower (the export then keeps no optimised graph).
    """
    from training.export import export_optimized, export_tower, quantize_int8

    fp32 = folder / f"{m.value}.onnx"
    feeds = make_inputs(m, cfg, 3, seed=1)
    export_tower(model, m, cfg, feeds, fp32, tol=1e-3)
    files = {"fp32": fp32, "int8": folder / f"{m.value}.int8.onnx"}
    quantize_int8(fp32, files["int8"], "dynamic")
    if export_optimized(model, m, cfg, feeds, fp32, tol=1e-3)["kept"]:
        files["opt"] = fp32.with_suffix(".opt.onnx")
        files["opt_int8"] = folder / f"{m.value}.opt.int8.onnx"
        quantize_int8(files["opt"], files["opt_int8"], "matmul")
    return files


def fused_ops(model: Any, cfg: Any, m: Modality, path: Path) -> dict[str, dict[str, int]]:
    """Fused-operator counts of the plain export per optimizer model type tried for the tower.

    Only "clip" recognises the SigLIP attention ("vit" fuses LayerNorm and GELU, no attention);
    the export keeps the type with most fused attention (``training.export.optimize_graph``).
    """
    import tempfile

    from training.export import OPT_MODEL_TYPES, heads_width, optimize_graph

    hw = heads_width(m, cfg, model.towers[m.value])
    out = {}
    with tempfile.TemporaryDirectory(prefix="unigeo-fused-") as tmp:
        for mt in OPT_MODEL_TYPES[m]:
            _, counts = optimize_graph(path, Path(tmp) / "opt.onnx", m, hw, (mt,))
            out[mt] = {k: counts.get(k, 0) for k in FUSED_OPS}
    return out


def ort_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    """A CPU session with ``threads`` intra-op threads (as torch gets) and full optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def bench_tower(
    model: Any, cfg: Any, m: Modality, files: dict[str, Path], batches: list[int], threads: int,
    repeats: int = 5, tag: str = "",
) -> list[dict[str, Any]]:  # fmt: skip
    """items/s of torch eager and each ORT file per batch size, in one run, and their ratios."""
    import torch

    torch.set_num_threads(threads)
    tower = model.towers[m.value].eval()
    sessions = {k: ort_session(p, threads) for k, p in files.items()}
    rows = []
    for b in batches:
        feeds = make_inputs(m, cfg, b)
        tensors = [torch.from_numpy(v) for v in feeds.values()]

        def run_torch(tensors: list = tensors) -> None:
            with torch.inference_mode():
                tower(*tensors)

        row: dict[str, Any] = {"config": tag or cfg.name, "tower": m.value, "batch": b}
        fns = {"torch_eager": run_torch}
        fns |= {
            f"ort_{k}": (lambda s=sess, f=feeds: s.run(None, f)) for k, sess in sessions.items()
        }
        for k, t in time_blocks(fns, 1, repeats, rounds=2).items():
            row[k] = t.rate(b)
        rows.append(_ratios(row))
    return rows


def _ratios(row: dict[str, Any]) -> dict[str, Any]:
    """Speed ratios of a row; the optimised columns are absent when no attention was fused."""
    fp32, opt = row["ort_fp32"], row.get("ort_opt")
    row["ort/torch"] = fp32 / row["torch_eager"]
    row["int8/fp32"] = row["ort_int8"] / fp32
    if opt is not None:
        row["opt/torch"] = opt / row["torch_eager"]
        row["opt_int8/fp32"] = row["ort_opt_int8"] / fp32
        row["opt_int8/opt"] = row["ort_opt_int8"] / opt
    return row


def run(
    config: str = "default_cpu", checkpoint: Path | None = None, batches: list[int] | None = None,
    towers: list[str] | None = None, threads: int = 2, repeats: int = 5,
    workdir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Benchmark the towers of one config; returns ``{"rows": [...], "fused": {...}}``."""
    batches = batches or [1, 8, 32]
    model, cfg = build_model(config, checkpoint)
    mods = [Modality(t) for t in towers] if towers else model.modalities
    rows: list[dict[str, Any]] = []
    fused: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-enc-", dir=workdir) as tmp:
        for m in mods:
            files = export_plain_and_int8(model, cfg, m, Path(tmp))
            for mt, counts in fused_ops(model, cfg, m, files["fp32"]).items():
                fused[f"{config}/{m.value} ({mt})"] = counts
            rows += bench_tower(model, cfg, m, files, batches, threads, repeats, config)
    return {"rows": rows, "fused": fused, "weights": _weights_note(checkpoint)}


def _weights_note(checkpoint: Path | None) -> str:
    if checkpoint is None or not Path(checkpoint).is_file():
        return "random init"
    p = Path(checkpoint).resolve()
    return f"checkpoint {p.relative_to(ROOT) if ROOT in p.parents else p.name}"


def ort_op_profile(path: Path, feeds: dict[str, np.ndarray], threads: int, runs: int = 3) -> dict:
    """Share of onnxruntime node time per operator type (its built-in profiler), largest first."""
    import os

    with tempfile.TemporaryDirectory(prefix="unigeo-ortprof-") as tmp:
        sess = ort_session(path, threads, profile_prefix=os.path.join(tmp, "p"))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(e.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default_cpu")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--towers", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    res = run(a.config, a.checkpoint, a.batches, a.towers, a.threads, a.repeats)
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
