"""Dataset statistics (samples per area, modality, provenance, split) and a contact sheet."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic import atomic_write_text
from engine.model.contract import Modality

from .format import DatasetInfo, read_manifest
from .reader import ChipStore, row_to_sample

CHIP_KEYS = ("aerial", "dsm", "streetview")


def dataset_stats(root: str | Path) -> dict[str, Any]:
    """Count samples per area, split, modality and provenance, and views/phrasings per sample."""
    info = DatasetInfo.read(root)
    rows = read_manifest(root).to_pylist()
    per_area: dict[str, Counter] = defaultdict(Counter)
    prov: dict[str, Counter] = defaultdict(Counter)
    splits: Counter = Counter()
    views: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        splits[str(r["split"])] += 1
        per_area[r["area_id"]]["samples"] += 1
        for m in Modality:
            p = r[f"{m.value}_provenance"]
            if p is not None:
                per_area[r["area_id"]][m.value] += 1
                prov[m.value][p] += 1
        for key in ("aerial", "streetview", "text"):
            if r[key]:
                views[key].append(len(r[key]))
    labels = Counter(r["landuse"] for r in rows if r["landuse"] >= 0)
    names = info.class_names
    return {
        "name": info.name,
        "n_samples": len(rows),
        "splits": dict(splits),
        "per_area": {a: dict(c) for a, c in sorted(per_area.items())},
        "provenance": {m: dict(c) for m, c in prov.items()},
        "views_per_sample": {k: round(float(np.mean(v)), 2) for k, v in views.items()},
        "landuse": {names[k] if k < len(names) else str(k): n for k, n in sorted(labels.items())},
        "chip_sizes": info.chip_sizes,
        "gsd_m": info.gsd_m,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of :func:`dataset_stats`."""
    mods = [m.value for m in Modality]
    lines = [f"dataset {stats['name']}: {stats['n_samples']} samples, splits {stats['splits']}"]
    lines.append(f"{'area':<28}{'samples':>8}" + "".join(f"{m:>11}" for m in mods))
    for area, c in stats["per_area"].items():
        lines.append(f"{area:<28}{c['samples']:>8}" + "".join(f"{c.get(m, 0):>11}" for m in mods))
    lines.append("provenance: " + json.dumps(stats["provenance"]))
    lines.append("views per sample: " + json.dumps(stats["views_per_sample"]))
    lines.append("land-use labels: " + json.dumps(stats["landuse"]))
    return "\n".join(lines) + "\n"


def _rgb(chip: np.ndarray, bands: list[str] | None = None) -> np.ndarray:
    """An H×W×3 image of a chip (true colour, else false colour), contrast-stretched."""
    from .pictures import render_rgb

    if bands and len(bands) == chip.shape[0]:
        return render_rgb(chip, bands)
    x = np.asarray(chip[:3], dtype=np.float32)
    if x.shape[0] < 3:
        x = np.repeat(x[:1], 3, axis=0)
    lo, hi = np.nanpercentile(x, 2), np.nanpercentile(x, 98)
    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.nan_to_num(x).transpose(1, 2, 0)


def _pick_rows(rows: list[dict], n: int) -> list[dict]:
    """Spread picks over areas, preferring samples that carry many modalities."""
    by_area: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_area[r["area_id"]].append(r)
    for lst in by_area.values():
        lst.sort(key=lambda r: -sum(bool(r[k]) for k in ("aerial", "dsm", "streetview", "text")))
    picks: list[dict] = []
    while len(picks) < n and any(by_area.values()):
        for lst in by_area.values():
            if lst and len(picks) < n:
                picks.append(lst.pop(0))
    return picks


def contact_sheet(root: str | Path, out_png: str | Path, n: int = 8) -> Path:
    """Draw ``n`` samples, one per row: aerial, DSM, street view and text side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    rows = _pick_rows(read_manifest(root).to_pylist(), n)
    store = ChipStore(root)
    bands = DatasetInfo.read(root).bands.get("aerial")
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 2.6 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows, strict=True):
        s = row_to_sample(r, store, tuple(Modality), None, bands=bands)
        for ax, key in zip(ax_row[:3], CHIP_KEYS, strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            if key not in s:
                ax.text(0.5, 0.5, f"no {key}", ha="center", va="center", color="grey")
                continue
            if key == "dsm":
                im = ax.imshow(s["dsm"][0], cmap="terrain")
                fig.colorbar(im, ax=ax, fraction=0.046, label="m")
            else:
                ax.imshow(_rgb(s[key], bands if key == "aerial" else None))
            ax.set_title(f"{key} ({r[key + '_provenance']})", fontsize=8)
        ax_row[0].set_ylabel(f"{r['area_id']}\n{r['lat']:.4f}, {r['lon']:.4f}", fontsize=7)
        ax_row[3].axis("off")
        text = "\n".join((r["text"] or ["(no text)"])[:3])
        ax_row[3].text(0, 0.5, text, fontsize=7, va="center", wrap=True)
    fig.tight_layout()
    from .pictures import save_png

    out_png = save_png(fig, Path(out_png), 80)  # a 256-colour PNG: a third of the size
    plt.close(fig)
    return out_png


def write_report(root: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write ``stats.json``, ``stats.txt`` and ``contact_sheet.png`` (default: in ``root``)."""
    out = Path(out_dir or root)
    stats = dataset_stats(root)
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    atomic_write_text(out / "stats.txt", format_stats(stats))
    contact_sheet(root, out / "contact_sheet.png")
    return stats
