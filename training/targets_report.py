"""The Markdown report of :mod:`training.targets_run`: one row per measure, one column per bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(v: Any, nd: int = 3) -> str:
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _scene_rows(res: dict[str, Any], scene: str, keys: list[str]) -> list[str]:
    b = res["bundles"]
    rows = []

    def row(label: str, *path: str, nd: int = 3, extra: str = "") -> None:
        vals = [_f(_get(b[k], "scenes", scene, *path), nd) for k in keys]
        rows.append(f"| {label} | " + " | ".join(vals) + f" | {extra} |")

    zs = _get(b[keys[0]], "scenes", scene, "zero_shot")
    if zs:
        base = f"chance {zs['chance']:.3f}, majority ({zs['majority_class']}) {zs['majority']:.3f}"
        row(f"zero-shot land use, {zs['n']} labelled chips", "zero_shot", "accuracy", extra=base)
        c = zs.get("coarse")
        if c:
            row(f"zero-shot, coarse groups ({c['n']} chips)", "zero_shot", "coarse", "accuracy",
                extra=f"majority {c['majority']:.3f}")  # fmt: skip
    for key, label in (("few_shot", "few-shot (10 polygons/class, logreg C 1), embeddings"),
                       ("few_shot_tuned", "few-shot, C chosen by grouped CV on the training "
                                          "polygons")):  # fmt: skip
        fs = _get(b[keys[0]], "scenes", scene, key)
        if fs:
            ref = (
                f"pixel statistics {fs['pixel_stats']['mean']:.3f} ± {fs['pixel_stats']['std']:.3f}"
            )
            if "frozen_lite0" in fs:
                ref += f"; frozen Lite0 {fs['frozen_lite0']['mean']:.3f}"
            row(label, key, "embedding", "mean", extra=ref)
    for m, label in (("prototype", "nearest class prototype"), ("logreg", "logistic regression")):
        if _get(b[keys[0]], "scenes", scene, "few_shot_tuned", f"engine_{m}"):
            row(f"few-shot with UniGeo's classifier, {label} (same draws)", "few_shot_tuned",
                f"engine_{m}", "mean")  # fmt: skip
    for q in ("open water", "forest", "buildings", "cropland"):
        t = _get(b[keys[0]], "scenes", scene, "text_to_map", q)
        if t and t.get("scored"):
            row(f'text → map top-20 "{q}"', "text_to_map", q, "precision",
                extra=f"base rate {t['base_rate']:.3f}")  # fmt: skip
        elif t:
            rows.append(f'| text → map "{q}" | ' + " | ".join("not scored" for _ in keys)
                        + f" | only {t['hits_available']} true chips |")  # fmt: skip
    n = _get(b[keys[0]], "scenes", scene, "n")
    for pair in ("aerial->gps", "gps->aerial", "aerial->text", "text->aerial"):
        r = _get(b[keys[0]], "scenes", scene, "retrieval", pair)
        row(f"{pair} R@10", "retrieval", pair, "R@10",
            extra=f"chance@10 {r['chance@10']:.3f} (n {n})" if r else "")  # fmt: skip
    row("mean pairwise cosine (target ≤ 0.5)", "collapse", "mean_pairwise_cosine")
    row("effective rank (target ≥ 10)", "collapse", "effective_rank", nd=1)
    return rows


def _label(key: str, version: Any = None, parts: int = 1) -> str:
    """Column name: the bundle folder with its version (``ship (0.3.0)``), or the run folder of a
    checkpoint (whose version is only the config's); ``parts`` trailing path parts."""
    p = Path(key)
    if p.suffix == ".pt":
        return "/".join(p.parent.parts[-parts:])
    name = "/".join(p.parts[-parts:]) or key
    return f"{name} ({version})" if version and str(version) not in name else name


def _labels(res: dict[str, Any], keys: list[str]) -> list[str]:
    """One column name per bundle, with more of its path where two would read the same."""
    version = {k: res["bundles"][k].get("version") for k in keys}
    labels = [_label(k, version[k]) for k in keys]
    for parts in (2, 3, 8):
        if len(set(labels)) == len(labels):
            break
        labels = [_label(k, version[k], parts) if labels.count(lab) > 1 else lab
                  for k, lab in zip(keys, labels, strict=True)]  # fmt: skip
    return labels


def markdown(res: dict[str, Any]) -> str:
    keys = list(res["bundles"])
    labels = _labels(res, keys)
    head = "| measure | " + " | ".join(labels) + " | reference |"
    sep = "|---" * (len(keys) + 2) + "|"
    lines = ["# Held-out targets (issue 18)", "", f"Dataset `{res['dataset']}`; areas never "
             f"trained on: {', '.join(res['holdout'])}. Bundles: " +
             ", ".join(f"`{k}`" for k in keys) + ".", ""]  # fmt: skip
    scenes = list(res["bundles"][keys[0]]["scenes"])
    for s in scenes:
        lines += [f"## {s}", "", head, sep, *_scene_rows(res, s, keys), ""]
    lines += ["## Same place across dates (test split: places never trained on)", "", head, sep]
    cd = [res["bundles"][k]["cross_date"] for k in keys]
    base = "".join(f"{k} {_f(v.get('R@1'))}, "
                   for k, v in res.get("cross_date_baselines", {}).items())  # fmt: skip
    lines.append("| R@1 | " + " | ".join(_f(c.get("R@1")) for c in cd)
                 + f" | {base}chance {_f(cd[0].get('chance@1'))}, n {cd[0].get('n')} |")  # fmt: skip
    lines += ["", "## Bundle", "", head, sep,
              "| size (MB) | " + " | ".join(_f(res["bundles"][k]["size_mb"], 1) for k in keys)
              + " | ≤ 60 |"]  # fmt: skip
    if "e2e_tiles_per_s" in res:
        lines.append("| end-to-end tiles/s, demo scene (embed_raster, interleaved) | "
                     + " | ".join(_f(res["e2e_tiles_per_s"][k], 0) for k in keys) + " | |")  # fmt: skip
    if "speed_chips_per_s" in res:
        lines.append("| aerial chips/s (encode_tiles, interleaved) | "
                     + " | ".join(_f(res["speed_chips_per_s"][k], 0) for k in keys) + " | |")  # fmt: skip
    lines.append("")
    gp = res.get("gps_probes")
    if gp:
        lines += ["## GPS probes (linear / kNN-5, spatially blocked)", "", head, sep]
        for task, r in gp.items():
            vals = [f"{r[k]['linear']:.3f} / {r[k]['knn5']:.3f}" for k in keys]
            g = r["geoclip"]
            lines.append(f"| {task} | " + " | ".join(vals)
                         + f" | GeoCLIP {g['linear']:.3f} / {g['knn5']:.3f}; majority "
                         f"{r['majority']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
