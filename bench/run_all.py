"""Run every benchmark in one process and write docs/PERFORMANCE.md and docs/img/perf_*.png.

.venv/bin/python bench/run_all.py            # the full run behind `make bench`
.venv/bin/python bench/run_all.py --quick    # tiny sizes, minutes (smoke)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the bench package from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import embed_e2e, encoders, extra_sections, query_latency, training_throughput
from bench.common import ROOT, fit_power, machine_info, md_table
from bench.misses import explain_misses
from engine.atomic import atomic_path, atomic_write_text
from engine.model.contract import Modality

CHECKPOINT = ROOT / "out" / "default_train" / "checkpoint.pt"
SHIPPED = "lit_cpu"  # the recipe of the shipped bundle (make model); its towers are benchmarked
FULL = dict(enc_repeats=5, scales=[1, 2, 3, 4], e2e_repeats=3,
            sizes=[10_000, 100_000, 300_000, 1_000_000], q_repeats=7, train_steps=5, mem_size=8000)  # fmt: skip
QUICK = dict(enc_repeats=2, scales=[1, 2], e2e_repeats=1, sizes=[10_000, 100_000], q_repeats=2,
             train_steps=2, mem_size=2000)  # fmt: skip


def profile_top(fn: Any, n: int = 12) -> list[dict[str, Any]]:
    """cProfile ``fn()``; the ``n`` functions with the largest own time, as table rows."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    st = pstats.Stats(prof)
    rows = []
    for (file, line, name), (_, ncalls, tottime, cumtime, _) in st.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({name})" if line else name
        rows.append({"function": where, "calls": ncalls, "own_s": tottime, "cum_s": cumtime})
    rows.sort(key=lambda r: -r["own_s"])
    return rows[:n]


def memory_run(size: int, workdir: Path) -> dict[str, Any]:
    """Peak RSS of bench/embed_memory.py at ``size`` px, in its own process (a clean peak)."""
    cmd = [sys.executable, str(ROOT / "bench" / "embed_memory.py"), "--size", str(size),
           "--workdir", str(workdir)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout)


def encoder_section(p: dict[str, Any]) -> dict[str, Any]:
    """lit_cpu towers (the shipped bundle's recipe) plus the small config's ViT-S aerial tower."""
    ck = CHECKPOINT if CHECKPOINT.is_file() else None
    res = encoders.run(SHIPPED, ck, [1, 8, 32], None, 2, p["enc_repeats"])
    small = encoders.run("small", None, [1, 8, 32], ["aerial"], 2, max(2, p["enc_repeats"] - 2))
    res["rows"] += small["rows"]
    res["fused"].update(small["fused"])
    res["weights_small"] = small["weights"]
    res["op_profile"] = _op_profiles()
    return res


def _op_profiles() -> dict[str, dict[str, float]]:
    """ORT per-operator time of the small aerial tower, fp32 and int8, batch 32."""
    import tempfile

    model, cfg = encoders.build_model("small")
    feeds = encoders.make_inputs(Modality.AERIAL, cfg, 32)
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-prof-") as tmp:
        files = encoders.export_plain_and_int8(model, cfg, Modality.AERIAL, Path(tmp))
        return {k: encoders.ort_op_profile(f, feeds, 2, 2) for k, f in files.items()}


def e2e_section(p: dict[str, Any]) -> dict[str, Any]:
    res = embed_e2e.run(p["scales"], repeats=p["e2e_repeats"])
    rows = res["rows"]
    if len(rows) >= 2:
        res["fit_e2e"] = fit_power([r["tiles"] for r in rows], [r["e2e_s"] for r in rows])[0]
        res["fit_infer"] = fit_power([r["tiles"] for r in rows], [r["infer_s"] for r in rows])[0]
    res["profile"] = _e2e_profile()
    res["variants"] = _e2e_variants()
    return res


def _e2e_variants() -> list[dict[str, Any]]:
    """The real scene with 1 or 2 ORT threads and 1 or 2 reader threads (contention evidence)."""
    import tempfile

    from engine.model import UniGeoModel

    rows = []
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-var-") as tmp:
        src = embed_e2e.NAIP
        if not src.is_file():
            src = embed_e2e.mosaic_raster(None, Path(tmp) / "gen.tif", 1)
        for threads, spin in ((2, True), (1, True), (2, False)):
            with _spinning(spin):  # sessions are created at the first call, in bench_raster
                model = UniGeoModel.load(embed_e2e.DEFAULT_BUNDLE, providers="cpu", threads=threads)
                for workers in (2, 1):
                    r = embed_e2e.bench_raster(model, src, Path(tmp), 3, workers=workers)
                    rows.append({"ort_threads": threads, "reader_workers": workers,
                                 "ort_spinning": spin, **r})  # fmt: skip
            model.close()
    return rows


def _spinning(on: bool) -> Any:
    """Context in which engine sessions get ``session.intra_op.allow_spinning`` = ``on``.

    Patches engine.model.sessions._session_options for the experiment only: it measures the
    proposed engine fix without changing the engine.
    """
    import contextlib
    from unittest import mock

    from engine.model import sessions

    if on:
        return contextlib.nullcontext()
    original = sessions._session_options

    def no_spin(threads: int) -> Any:
        so = original(threads)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return so

    return mock.patch.object(sessions, "_session_options", no_spin)


def _e2e_profile() -> list[dict[str, Any]]:
    """cProfile of one embed_raster run on the real scene (scale 1)."""
    import shutil
    import tempfile

    from engine.embed.job import embed_raster
    from engine.model import UniGeoModel
    from engine.raster.gdal_reader import GdalReader
    from engine.raster.tiling import grid_for_raster

    model = UniGeoModel.load(embed_e2e.DEFAULT_BUNDLE, providers="cpu", threads=2)
    src = embed_e2e.NAIP
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-prof-") as tmp:
        if not src.is_file():
            src = embed_e2e.mosaic_raster(None, Path(tmp) / "gen.tif", 1)
        with GdalReader(src) as reader:
            grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
            store = Path(tmp) / "store"
            embed_raster(model, reader, grid, store, resume=False)  # warm-up
            shutil.rmtree(store)
            return profile_top(lambda: embed_raster(model, reader, grid, store, resume=False))


def query_section(p: dict[str, Any]) -> dict[str, Any]:
    res = query_latency.run(p["sizes"], repeats=p["q_repeats"])
    rows = res["rows"]
    res["fit_heatmap"] = fit_power([r["tiles"] for r in rows], [r["heatmap_ms"] for r in rows])[0]
    res["profile"] = _query_profile(max(p["sizes"]))
    return res


def _query_profile(n: int) -> list[dict[str, Any]]:
    import tempfile

    import numpy as np

    from engine.search.calibration import calibrate
    from engine.search.similarity import similarity

    with tempfile.TemporaryDirectory(prefix="unigeo-bench-prof-") as tmp:
        store = query_latency.make_store(Path(tmp) / "s", n)
        q = np.ones(store.dim, np.float32)
        calibrate(similarity(store, q))
        rows = profile_top(lambda: [calibrate(similarity(store, q)) for _ in range(3)], 8)
        store.close()
        return rows


def _save_plot(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_curves(res: dict[str, Any], img: Path) -> dict[str, str]:
    """Log-log scaling curves of embedding and query cost; returns {name: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    out = {}
    series = {
        "embed": (res["e2e"]["rows"], "tiles", [("e2e_s", "embed_raster (e2e)"),
                  ("infer_s", "encode_tiles only"), ("read_s", "reading only")], "seconds"),
        "query": (res["query"]["rows"], "tiles", [("heatmap_ms", "similarity + calibrate"),
                  ("similarity_ms", "similarity"), ("calibrate_ms", "calibrate"),
                  ("top20_ms", "top_k (k=20)")], "milliseconds"),
    }  # fmt: skip
    for name, (rows, xkey, ys, unit) in series.items():
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        xs = [r[xkey] for r in rows]
        for key, label in ys:
            vals = [r[key] for r in rows]
            b = fit_power(xs, vals)[0] if len(xs) > 1 else float("nan")
            ax.loglog(xs, vals, "o-", label=f"{label} (exponent {b:.2f})")
        ax.set_xlabel("tiles")
        ax.set_ylabel(unit)
        ax.set_title(f"{name} cost vs size (log-log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        out[name] = f"perf_{name}_scaling.png"
        _save_plot(fig, img / out[name])
        plt.close(fig)
    return out


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it was met."""
    enc = {(r["config"], r["tower"], r["batch"]): r for r in res["encoders"]["rows"]}
    t = []
    for cfg in (SHIPPED, "small"):
        r = enc.get((cfg, "aerial", 32))
        if r:
            # The shipped forms: the optimised fp32 graph and the MatMul-only int8 made from it,
            # against torch eager and the plain fp32 export (plain columns when none was kept).
            opt, opt_q = r.get("opt/torch", r["ort/torch"]), r.get("opt_int8/fp32", r["int8/fp32"])
            at = f"aerial batch 32, {cfg}"
            t.append((f"ORT fp32 / torch eager (optimised graph), {at}", opt, 1.5))
            if cfg != SHIPPED:  # the shipped aerial tower is a CNN stored fp16, run in fp32
                t.append((f"ORT int8 / ORT fp32 (opt int8 vs plain), {at}", opt_q, 1.8))
    e2e = res["e2e"]["rows"]
    t.append(("e2e / pure inference, real scene (scale 1)", e2e[0]["e2e/infer"], 0.8))
    t.append(("e2e / pure inference, largest mosaic", e2e[-1]["e2e/infer"], 0.8))
    big = res["query"]["rows"][-1]
    t.append((f"heatmap ms at {big['tiles']:,} tiles (≤)", big["heatmap_ms"], 150.0))
    t += extra_sections.targets(res)
    rows = []
    for name, val, goal in t:
        ok = val <= goal if "(≤)" in name else val >= goal
        rows.append(
            {"target": name, "goal": goal, "measured": val, "met": "yes" if ok else "**no**"}
        )
    return rows


def _fused_rows(fused: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [{"tower": k, **v} for k, v in fused.items()]


def _op_rows(prof: dict[str, dict[str, float]], n: int = 8) -> list[dict[str, Any]]:
    out = []
    for kind, ops in prof.items():
        top = list(ops.items())[:n]
        out.append({"variant": kind, "top operators (% of node time)":
                    ", ".join(f"{k} {v}" for k, v in top)})  # fmt: skip
    return out


ENC_COLS = ["config", "tower", "batch", "torch_eager", "ort_fp32", "ort_int8", "ort_opt",
            "ort_opt_int8", "ort/torch", "int8/fp32", "opt/torch", "opt_int8/fp32",
            "opt_int8/opt"]  # fmt: skip
E2E_COLS = ["scale", "raster_px", "tiles", "encoded", "km2", "workers", "e2e_s", "infer_s",
            "read_s", "e2e_km2_per_s", "infer_km2_per_s", "e2e/infer", "e2e_old_s",
            "old/infer"]  # fmt: skip
VAR_COLS = [
    "ort_threads",
    "reader_workers",
    "ort_spinning",
    "e2e_s",
    "infer_s",
    "read_s",
    "e2e/infer",
]


def render(res: dict[str, Any], imgs: dict[str, str], quick: bool) -> str:
    """The Markdown of docs/PERFORMANCE.md: machine, targets, one table per benchmark, misses."""
    m, enc, e2e, q, tr = (res[k] for k in ("machine", "encoders", "e2e", "query", "training"))
    tg = targets(res)
    parts = [
        "# Performance\n",
        "Generated by `bench/run_all.py` (`make bench`); do not edit by hand."
        + (" **Quick run (tiny sizes): not the reference figures.**" if quick else "")
        + "\n",
        "Reproduce: `make bench` (or `.venv/bin/python bench/run_all.py`); one benchmark alone: "
        "`.venv/bin/python bench/<name>.py --help`. Every figure is the median of repeated calls "
        "after a warm-up; all compared variants ran side by side in this one run. The machine "
        "is shared (2 cores, other jobs running), so absolute times are noisy: read the ratios.\n",
        "## Machine\n",
        md_table([{"key": k, "value": v} for k, v in m.items()]),
        f"Total run time: {res['total_s']:.0f} s.\n",
        "## Targets\n",
        md_table(tg),
        "## 1. Encoder throughput (items/s, 2 threads for torch and onnxruntime)\n",
        f"Towers of `{SHIPPED}` ({enc['weights']}; the shipped bundle's recipe: EfficientNet-"
        "Lite0 + spectral stream aerial, Lite0 street level, MiniLM text) and the `small` "
        f"config's ViT-S/16 aerial tower at 128 px ({enc['weights_small']}), exported with "
        "`training.export.export_tower`; `ort_int8` is whole-graph `quantize_dynamic` of the "
        "plain export, `ort_opt` the transformer-optimised fp32 graph (kept only where "
        "attention was fused) and `ort_opt_int8` its MatMul/Attention-only per-channel int8 "
        "(`training.export --optimize --int8 matmul`). The bundle ships the aerial and street "
        "towers in fp32 with fp16-stored weights (whole-graph dynamic int8 of the CNN is slower, "
        "column `int8/fp32`, and not batch-independent) and the text tower optimised with an "
        "int8 word-embedding table.\n",
        md_table(enc["rows"], ENC_COLS),
        "`ort_opt` is the fp32 export after `onnxruntime.transformers.optimizer.optimize_model` "
        "(heads and width given; the model type with most fused attention kept). Fused "
        "operators per model type (`vit` and `clip` for image/DSM towers, `bert` for text and "
        "GPS):\n",
        md_table(_fused_rows(enc["fused"])),
        "onnxruntime profiler, `small` aerial tower, batch 32 (share of node time per operator):\n",
        md_table(_op_rows(enc["op_profile"])),
        "## 2. End-to-end raster embedding vs pure inference\n",
        f"`embed_raster` with the shipped bundle `{e2e['bundle']}` ({e2e['provider']}) on "
        f"{e2e['source']} and mirrored mosaics of it (scale k = k x k scenes); `infer_s` is "
        "`model.encode_tiles` on the same usable tiles, pre-loaded; `read_s` is reading those "
        "tiles alone, single-threaded. km² at the model's GSD.\n",
        md_table(e2e["rows"], E2E_COLS),
        f"Growth with size: e2e time ~ tiles^{e2e.get('fit_e2e', float('nan')):.2f}, "
        f"inference ~ tiles^{e2e.get('fit_infer', float('nan')):.2f}.\n",
        f"![embedding cost vs raster size](img/{imgs['embed']})\n",
        "Contention check on the real scene (onnxruntime threads x reader threads; "
        "`ort_spinning` False = engine sessions patched with "
        "`session.intra_op.allow_spinning=0`, the proposed fix):\n",
        md_table(e2e["variants"], VAR_COLS),
        "cProfile of one `embed_raster` run on the real scene (largest own time first):\n",
        md_table(e2e["profile"]),
        "## 3. Query latency (cached float16 store, D = 128)\n",
        md_table(q["rows"]),
        f"Heatmap latency ~ tiles^{q['fit_heatmap']:.2f}.\n",
        f"![query cost vs store size](img/{imgs['query']})\n",
        "cProfile of three heatmaps at the largest size:\n",
        md_table(q["profile"]),
        "## 4. Training throughput (CPU)\n",
        md_table(tr["rows"]),
        (
            f"GPU: {tr['gpu']}.\n"
            if tr["gpu"]
            else "GPU: none in this session, so no GPU figures; "
            "`scripts/train_gpu.sh` is the prepared script (bf16, `small` config).\n"
        ),
        "## 5. Peak memory (`bench/embed_memory.py`, analytic encoder, sparse GeoTIFF)\n",
        md_table([{"key": k, "value": v} for k, v in res["memory"].items()]),
        *extra_sections.render_plugin(res["plugin"]),
        *extra_sections.render_distributed(res["distributed"]),
        *extra_sections.render_ann(res["ann"]),
        "## Misses: causes and what is left\n",
        explain_misses(res, tg),
    ]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    a = ap.parse_args()
    p = QUICK if a.quick else FULL
    t0 = time.perf_counter()
    res: dict[str, Any] = {"machine": machine_info(), "params": p}
    for name, fn in (("encoders", encoder_section), ("e2e", e2e_section),
                     ("query", query_section)):  # fmt: skip
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        res[name] = fn(p)
    print("[bench] training ...", file=sys.stderr, flush=True)
    res["training"] = training_throughput.run(steps=p["train_steps"])
    print("[bench] memory ...", file=sys.stderr, flush=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="unigeo-bench-mem-") as tmp:
        res["memory"] = memory_run(p["mem_size"], Path(tmp))
    for name in ("plugin", "distributed", "ann"):  # own processes: QGIS, Dask, FAISS
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        res[name] = extra_sections.run_one(name, a.quick)
    res["total_s"] = time.perf_counter() - t0
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str))
    imgs = plot_curves(res, a.img)
    atomic_write_text(a.out, render(res, imgs, a.quick))
    print(f"[bench] wrote {a.out} in {res['total_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
