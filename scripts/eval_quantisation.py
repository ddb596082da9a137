"""Retrieval cost of shipping int8 towers: the same held-out pairs scored with fp32 and int8 ONNX.

    python scripts/eval_quantisation.py --checkpoint out/default_train/checkpoint.pt \
        --bundle out/default_train/bundle --split test

For every ordered pair of modalities that have an int8 variant (or fp32 only), embeds the
held-out samples with onnxruntime twice (fp32 files, then the int8 variants where they exist)
and prints R@1 / R@10 side by side, the numbers the model card quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.model.contract import Modality  # noqa: E402

PAIRS = [(Modality.TEXT, Modality.AERIAL), (Modality.AERIAL, Modality.TEXT),
         (Modality.GPS, Modality.AERIAL), (Modality.AERIAL, Modality.GPS),
         (Modality.TEXT, Modality.GPS)]  # fmt: skip


def embed_all(
    bundle: Path, batch: dict, variant: str, only: list[str] | None = None
) -> dict[Modality, tuple[np.ndarray, np.ndarray]]:
    """{modality: (embeddings of the present rows, row mask)} with ``<m>.onnx`` or ``<m>.int8.onnx``.

    ``only`` limits the variant to those modalities (the others use ``<m>.onnx``).
    """
    from training.export import run_onnx, tower_inputs_np

    out = {}
    for m in Modality:
        use = variant and (only is None or m.value in only)
        path = bundle / f"{m.value}.{variant}.onnx" if use else bundle / f"{m.value}.onnx"
        if not path.is_file():
            path = bundle / f"{m.value}.onnx"
        mask = batch["mask"][m.value].numpy().astype(bool)
        if mask.sum() < 2:
            continue
        feeds = {k: v for k, v in tower_inputs_np(m, batch).items()}
        out[m] = (run_onnx(path, feeds), mask)
    return out


def main() -> int:
    from training.checkpoint import load_model
    from training.evaluate import retrieval
    from training.steps import build_datasets, make_collate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--bundle", required=True, type=Path, help="exported with --int8")
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--int8", nargs="*", default=None,
                    help="modalities embedded with int8 (default: every one with a variant); "
                    "e.g. --int8 text aerial for the shipped bundle")  # fmt: skip
    a = ap.parse_args()
    _, cfg = load_model(a.checkpoint)
    _, held = build_datasets(cfg, held_out=a.split)
    batch = make_collate(cfg)([held[i] for i in range(len(held))])
    lat, lon = batch["lat"].numpy(), batch["lon"].numpy()
    runs = {
        "fp32": embed_all(a.bundle, batch, ""),
        "int8": embed_all(a.bundle, batch, "int8", a.int8),
    }
    report = a.bundle / "export_report.json"
    if report.is_file():  # which int8 method made the variants (export --int8 METHOD)
        method = json.loads(report.read_text()).get("int8_method") or "dynamic"
        towers = ", ".join(a.int8) if a.int8 is not None else "all with a variant"
        print(f"int8 method: {method} ({towers}); fp32 = the plain export, {len(lat)} samples\n")
    print("| query → gallery | n | R@1 fp32 | R@1 int8 | R@10 fp32 | R@10 int8 |")
    print("|---|---|---|---|---|---|")
    for q, g in PAIRS:
        res = {}
        for name, emb in runs.items():
            if q not in emb or g not in emb:
                break
            (eq, mq), (eg, mg) = emb[q], emb[g]
            both = mq & mg
            # run_onnx embedded only the present rows of each modality: index them back.
            iq, ig = np.cumsum(mq)[both] - 1, np.cumsum(mg)[both] - 1
            res[name] = retrieval(eq[iq], eg[ig], lat[both], lon[both])
        if len(res) == 2:
            f, i = res["fp32"], res["int8"]
            print(f"| {q.value} → {g.value} | {f['n']} | {f['R@1']:.3f} | {i['R@1']:.3f} | "
                  f"{f['R@10']:.3f} | {i['R@10']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
