"""The data report: a world map of the areas, a contact sheet per area and a Markdown summary.

``python -m training.data report DATASET --out docs/data`` writes ``README.md`` (per area:
place, continent, sensor, GSD, dates, samples per split, modality provenance, labels, licence),
``world_map.png`` (each area on NASA Blue Marble when the registry copy is cached) and
``areas/<area>.png`` (a few samples of the area: every view date, DSM, text).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic import atomic_write_text
from engine.model.contract import Modality
from engine.raster.sensors import TABLE_PATH

from .format import DatasetInfo, read_manifest
from .pictures import render_rgb, save_png
from .reader import ChipStore, row_to_sample

KIND_COLOUR = {"sentinel2": "#1f77b4", "landsat": "#2ca02c", "display8": "#ff7f0e",
               "worldview2": "#9467bd", "dsm": "#8c564b", "photo": "#e377c2"}  # fmt: skip


def _colour(sensor: str | None, has_dsm: bool) -> str:
    if not sensor:
        return KIND_COLOUR["dsm"] if has_dsm else KIND_COLOUR["photo"]
    for key, c in KIND_COLOUR.items():
        if sensor.startswith(key):
            return c
    return KIND_COLOUR["landsat"] if "landsat" in sensor else "#7f7f7f"


def _blue_marble(cache: Path | None) -> np.ndarray | None:
    if cache is None:
        return None
    from .global_chips import load_blue_marble
    from .sources import InputError

    try:
        return load_blue_marble(cache)[:, ::6, ::6].transpose(1, 2, 0)
    except InputError:
        return None


def map_places(info: DatasetInfo) -> list[dict]:
    """One entry per place (areas sharing a place merge), numbered west to east."""
    places: dict[str, dict] = {}
    for area, a in sorted(info.area_info.items()):
        w, s, e, n = a["bbox"]
        if e - w > 60:
            continue  # the worldwide Blue Marble samples
        p = places.setdefault(
            a.get("place") or area,
            {"areas": [], "lon": [], "lat": [], "holdout": False, "sensors": set()},
        )
        p["areas"].append(area)
        p["lon"].append((w + e) / 2)
        p["lat"].append((s + n) / 2)
        p["holdout"] |= bool(a.get("holdout"))
        dsm = any(k.startswith("dsm:") for k in a.get("modalities", {}))
        p["sensors"].add(a.get("sensor") or ("dsm" if dsm else "photo"))
    out = [{"place": k, "lon": float(np.mean(v["lon"])), "lat": float(np.mean(v["lat"])),
            "holdout": v["holdout"], "sensors": sorted(v["sensors"]), "areas": v["areas"]}
           for k, v in places.items()]  # fmt: skip
    out.sort(key=lambda p: (p["lon"], p["lat"]))
    for i, p in enumerate(out, 1):
        p["n"] = i
    return out


def world_map(info: DatasetInfo, out_png: Path, cache: Path | None = None) -> Path:
    """Every place as a numbered marker at its centre, coloured by sensor, and a key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, key) = plt.subplots(1, 2, figsize=(12, 5.2), width_ratios=(3.3, 1))
    bm = _blue_marble(cache)
    if bm is not None:
        ax.imshow(bm, extent=(-180, 180, -90, 90), alpha=0.8)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 80)
    places = map_places(info)
    lines = []
    for p in places:
        c = _colour(p["sensors"][0] if p["sensors"][0] not in ("dsm", "photo") else None,
                    p["sensors"][0] == "dsm")  # fmt: skip
        ax.scatter([p["lon"]], [p["lat"]], s=150 if p["holdout"] else 45, c=c,
                   marker="*" if p["holdout"] else "o", edgecolors="red" if p["holdout"]
                   else "white", linewidths=1.0, zorder=3)  # fmt: skip
        ax.annotate(
            str(p["n"]),
            (p["lon"], p["lat"]),
            xytext=(4, 2 + 7 * (p["n"] % 2)),
            textcoords="offset points",
            fontsize=7,
            color="white",
            fontweight="bold",
        )
        hold = " (held out)" if p["holdout"] else ""
        lines.append(f"{p['n']:>2}  {p['place']}{hold}: {', '.join(p['sensors'])}")
    for name, c in KIND_COLOUR.items():
        ax.scatter([], [], c=c, label=name)
    ax.scatter([], [], c="white", marker="*", edgecolors="red", label="held out")
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    ax.set_title(f"{info.name}: {len(places)} places ({info.n_samples} samples; "
                 "Blue Marble chips worldwide not shown)", fontsize=9)  # fmt: skip
    key.axis("off")
    key.text(0, 1, "\n".join(lines), fontsize=6.5, va="top", family="monospace")
    fig.tight_layout()
    save_png(fig, out_png, 80)
    plt.close(fig)
    return out_png


def _pick(rows: list[dict], n: int) -> list[dict]:
    """Up to ``n`` rows spread over the area, labelled and many-view samples first."""
    rows = sorted(rows, key=lambda r: (-(r["landuse"] >= 0), -len(r["aerial"] or []),
                                       r["sample_id"]))  # fmt: skip
    if len(rows) <= n:
        return rows
    idx = np.linspace(0, len(rows) - 1, n).round().astype(int)
    return [rows[i] for i in idx]


def area_sheet(root: Path, area: str, rows: list[dict], out_png: Path, n: int = 4) -> Path:
    """A few samples of one area: up to 3 aerial views (dates), the DSM and the text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = DatasetInfo.read(root)
    bands = info.bands.get("aerial", [])
    store = ChipStore(root)
    picks = _pick(rows, n)
    fig, axes = plt.subplots(len(picks), 5, figsize=(14, 2.5 * len(picks)), squeeze=False)
    for ax_row, r in zip(axes, picks, strict=True):
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        views = (r["aerial"] or [])[:3]
        dates = r.get("aerial_dates") or [""] * len(views)
        for k in range(3):
            if k < len(views):
                row = {**r, "aerial": [views[k]]}
                s = row_to_sample(row, store, (Modality.AERIAL,), None, bands=bands)
                ax_row[k].imshow(render_rgb(s["aerial"], bands))
                ax_row[k].set_title(
                    f"view {k + 1} {dates[k] if k < len(dates) else ''}", fontsize=7
                )
            else:
                ax_row[k].axis("off")
        if r["dsm"]:
            d = np.asarray(store.load(r["dsm"]), np.float32)[0]
            im = ax_row[3].imshow(d, cmap="terrain")
            fig.colorbar(im, ax=ax_row[3], fraction=0.046)
            ax_row[3].set_title(f"DSM ({r['dsm_provenance']})", fontsize=7)
        else:
            ax_row[3].axis("off")
        lab = info.class_names[r["landuse"]] if r["landuse"] >= 0 else "-"
        ax_row[0].set_ylabel(f"{r['lat']:.4f}, {r['lon']:.4f}\n{r['split']} | {lab}", fontsize=7)
        ax_row[4].axis("off")
        ax_row[4].text(0, 0.5, "\n".join((r["text"] or ["(no text)"])[:3]), fontsize=6.5,
                       va="center", wrap=True)  # fmt: skip
    fig.suptitle(f"{area}: {info.area_info.get(area, {}).get('place', area)}", fontsize=10)
    fig.tight_layout()
    save_png(fig, out_png, 48)
    plt.close(fig)
    return out_png


def _fmt_splits(d: dict[str, int]) -> str:
    order = ("train", "val", "test", "holdout", "None")
    return " / ".join(f"{d.get(k, 0)}" for k in order)


def _fmt_modalities(m: dict[str, int]) -> str:
    """'A 36 real · D - · S - · T 36 derived · G 36 real' (aerial, DSM, street, text, GPS)."""
    out = []
    for mod in ("aerial", "dsm", "streetview", "text", "gps"):
        parts = [f"{n} {k.split(':')[1]}" for k, n in sorted(m.items()) if k.startswith(mod + ":")]
        out.append(f"{mod[0].upper()} {', '.join(parts) or '-'}")
    return " · ".join(out)


def _sensor_rows() -> list[str]:
    table = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    rows = ["| sensor | kind | raw -> value | bands (model: sensor) |", "|---|---|---|---|"]
    for name, s in table["sensors"].items():
        rule = f"x {s['scale']:g} {s['offset']:+g}" if s.get("offset") else f"x {s['scale']:g}"
        bands = ", ".join(f"{k}: {v}" for k, v in s["bands"].items()) or "named per file"
        rows.append(f"| `{name}` | {s['kind']} | {rule} | {bands} |")
    rmax = ", ".join(f"{k} {v:g}" for k, v in table["reflectance_max"].items())
    rows.append("")
    rows.append(f"Reflectance products: model value = reflectance / reflectance_max ({rmax}), "
                "clipped to [0, 1]; display and linear products: raw x scale.")  # fmt: skip
    return rows


def report_markdown(info: DatasetInfo, stats: dict[str, Any], extra: str = "") -> str:
    """The Markdown data report of a dataset."""
    ai = info.area_info
    local = {a: v for a, v in ai.items() if v["bbox"][2] - v["bbox"][0] <= 60}
    aerial_places = {v["place"] for v in local.values()
                     if any(k.startswith("aerial:real") for k in v["modalities"])
                     and (v.get("gsd_m") or 1e9) <= 30}  # fmt: skip
    continents = {v["continent"] for v in local.values() if v["place"] in aerial_places}
    lines = [
        f"# Data report: {info.name}",
        "",
        f"{info.n_samples} samples; splits {dict(sorted(info.splits.items()))}; aerial bands "
        f"{info.bands.get('aerial')}; {len(aerial_places)} distinct places with real aerial "
        f"imagery at <= 30 m on {len(continents - {None})} continents "
        f"({', '.join(sorted(c for c in continents if c))}).",
        "",
        "![world map](world_map.png)",
        "",
        "Samples per split are train / val / test / holdout / dropped (null: the split buffer "
        "or a chip of another split nearby). Modalities: A aerial, D DSM, S street level, "
        "T text, G GPS, with provenance (real, derived, synthetic).",
        "",
        "| area | place | continent | sensor | GSD m | dates | samples | modalities | labels "
        "| views/sample | licence | sheet |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = info.class_names
    for a, v in sorted(ai.items()):
        dates = v.get("dates") or []
        d = (f"{dates[0]} .. {dates[-1]} ({len(dates)})" if len(dates) > 2
             else ", ".join(dates) or "not stated")  # fmt: skip
        labs = Counter({names[int(k)]: n for k, n in v.get("labels", {}).items()})
        lab = ", ".join(f"{k} {n}" for k, n in labs.most_common()) or "-"
        lines.append(
            f"| {a} | {v['place']} | {v.get('continent') or 'worldwide'} | {v.get('sensor') or '-'} "
            f"| {v.get('gsd_m') or '-'} | {d} | {_fmt_splits(v['splits'])} "
            f"| {_fmt_modalities(v['modalities'])} | {lab} | {v.get('views_per_sample', 0)} "
            f"| {v.get('licence', '')} | [png](areas/{a}.png) |"
        )
    lines += ["", "## Per-sensor scaling (engine/sensors.json)", "", *_sensor_rows(), ""]
    lines += ["## Sources", "", "| source | what | licence |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s.get('what', '')} | {s.get('licence', '')} |"
              for s in info.sources]  # fmt: skip
    lines += ["", "## Totals", "", "```", json.dumps(stats["provenance"], indent=1), "```"]
    return "\n".join(lines) + "\n" + (f"\n{extra.strip()}\n" if extra.strip() else "")


def write_data_report(
    root: str | Path, out_dir: str | Path, cache: Path | None = None, extra: str = ""
) -> Path:
    """Write README.md, world_map.png and areas/<area>.png for the dataset at ``root``."""
    from .report import dataset_stats

    root, out = Path(root), Path(out_dir)
    info = DatasetInfo.read(root)
    rows = read_manifest(root).to_pylist()
    by_area: dict[str, list[dict]] = {}
    for r in rows:
        by_area.setdefault(r["area_id"], []).append(r)
    world_map(info, out / "world_map.png", cache)
    for area, rs in sorted(by_area.items()):
        area_sheet(root, area, rs, out / "areas" / f"{area}.png")
    md = out / "README.md"
    atomic_write_text(md, report_markdown(info, dataset_stats(root), extra))
    return md
