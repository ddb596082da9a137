"""fp32 encoders with their weights *stored* as fp16: half the file, fp32 arithmetic.

Each large fp32 initializer is replaced by an fp16 copy and a ``Cast`` back to fp32; onnxruntime
folds those casts when it loads the session, so the graph computes in fp32 exactly as before (up
to the weights' fp16 rounding). Unlike dynamic int8, nothing depends on the batch: the shipped
aerial tower uses this to fit the bundle's size cap while keeping "same tile, same embedding".

    python -m training.weight_storage --bundle out/default_train/bundle --tower aerial
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.atomic import atomic_path, atomic_write_text
from engine.errors import ModelContractError
from engine.model.contract import OUTPUT_NAME

from .optimize import run_onnx

log = logging.getLogger(__name__)
MIN_VALUES = 4096  # smaller tensors (biases, norms) stay fp32: nothing to gain
FP16_MAX = 6.0e4  # beyond this a weight would overflow fp16; such tensors stay fp32
MIN_COSINE = 0.9999  # per-sample cosine to the fp32 file the rewrite must keep
MAX_BATCH_DEPENDENCE = 1e-6  # max |alone - in batch| the rewrite must keep


def store_weights_fp16(src: Path, dst: Path) -> int:
    """Write ``src`` to ``dst`` with large fp32 weights stored as fp16; returns how many."""
    proto = onnx.load(str(src))
    keep, casts = [], []
    for t in proto.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32 or a.size < MIN_VALUES or np.abs(a).max() > FP16_MAX:
            keep.append(t)
            continue
        keep.append(numpy_helper.from_array(a.astype(np.float16), t.name + "__f16"))
        casts.append(helper.make_node("Cast", [t.name + "__f16"], [t.name], to=TensorProto.FLOAT))
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)  # casts first: the graph stays topologically sorted
    onnx.checker.check_model(proto)
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))
    return len(casts)


def check_rewrite(src: Path, dst: Path, inputs: dict[str, np.ndarray]) -> tuple[float, float]:
    """(min per-sample cosine to ``src``, max |alone - in batch|) of ``dst`` on ``inputs``.

    Raises:
        ModelContractError: the rewrite changed the tower beyond :data:`MIN_COSINE` or made it
            depend on the batch beyond :data:`MAX_BATCH_DEPENDENCE`.
    """
    import onnxruntime as ort

    ref, got = run_onnx(src, inputs), run_onnx(dst, inputs)  # both checked against the contract
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])  # one, reused
    n = len(next(iter(inputs.values())))
    alone = np.concatenate([sess.run([OUTPUT_NAME], {k: v[i : i + 1] for k, v in inputs.items()})[0]
                            for i in range(n)])  # fmt: skip
    cos = float((ref * got).sum(1).min())  # embeddings are L2-normalised
    dep = float(np.abs(alone - got).max())
    if cos < MIN_COSINE or dep > MAX_BATCH_DEPENDENCE:
        raise ModelContractError(
            f"{dst.name}: min cosine {cos:.6f} (need >= {MIN_COSINE}), batch dependence "
            f"{dep:.1e} (need <= {MAX_BATCH_DEPENDENCE:g}): keep the fp32 file"
        )
    return cos, dep


def image_inputs(path: Path, n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of a tower: chips shaped like ``pixels`` (normalised scale), a ``band_mask``
    (aerial towers of contract version 2) with some bands absent, or texts of random words."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    out = {}
    for inp in sess.get_inputs():
        shape = [n, *(int(d) for d in inp.shape[1:])]
        if inp.name == "band_mask":  # aerial, contract v2: every band present but the last
            out[inp.name] = np.ones(shape, np.float32)
            out[inp.name][: n // 2, -1] = 0.0
        elif inp.name == "input_ids":  # text: random word ids (1000..19999 are real words)
            out[inp.name] = rng.integers(1000, 20000, size=shape).astype(np.int64)
        elif inp.name == "attention_mask":  # texts of 4..L tokens
            lengths = rng.integers(4, shape[1] + 1, size=shape[0])
            out[inp.name] = (np.arange(shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        elif inp.name == "latlon":
            out[inp.name] = np.stack([rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)], 1)
            out[inp.name] = out[inp.name].astype(np.float32)
        else:
            out[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def rewrite_bundle_tower(bundle: Path, tower: str) -> Path:
    """Store ``tower``'s weights as fp16 in ``bundle``, check it, point bundle.json at it."""
    spec = json.loads((bundle / "bundle.json").read_text())
    src = bundle / spec["encoders"][tower]
    dst = src.with_name(src.name.removesuffix(".onnx") + ".w16.onnx")
    count = store_weights_fp16(src, dst)
    cos, dep = check_rewrite(src, dst, image_inputs(src))
    log.info("%s: %d weights stored as fp16, %.1f MB, min cosine %.7f, batch dependence %.1e",
             dst.name, count, dst.stat().st_size / 1e6, cos, dep)  # fmt: skip
    spec["encoders"][tower] = dst.name
    atomic_write_text(bundle / "bundle.json", json.dumps(spec, indent=2) + "\n")
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, type=Path, help="exported bundle folder")
    ap.add_argument("--tower", default="aerial", help="an image tower of the bundle")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(rewrite_bundle_tower(a.bundle, a.tower))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
