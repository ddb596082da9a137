"""Checks on a built dataset: how many real places it covers, and that held-out areas stay out.

* :func:`aerial_coverage`: distinct places with real aerial imagery at or below a GSD, and the
  continents they lie on (from ``dataset.json``'s ``area_info``).
* :func:`holdout_intrusions`: samples of any other split whose chip footprint meets a held-out
  area (or any reserved box, such as the demo scene).
* :func:`holdout_classes`: the land-use classes of the held-out samples.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .format import DatasetInfo, read_manifest, resolve_ref
from .splits import chip_footprint


def aerial_coverage(root: str | Path, max_gsd_m: float = 30.0, training_only: bool = False):
    """(places, continents) with real aerial samples at <= ``max_gsd_m``.

    Args:
        root: the dataset folder.
        max_gsd_m: the coarsest GSD that counts.
        training_only: count only areas with samples in the train split.
    """
    info = DatasetInfo.read(root)
    places, continents = set(), set()
    for a in info.area_info.values():
        real = sum(n for k, n in a.get("modalities", {}).items() if k == "aerial:real")
        gsd = a.get("gsd_m") or float("inf")
        if not real or gsd > max_gsd_m or (training_only and not a["splits"].get("train")):
            continue
        places.add(a["place"])
        if a.get("continent"):
            continents.add(a["continent"])
    return places, continents


def chip_sides(root: str | Path, table: dict) -> np.ndarray:
    """Each row's chip side in metres: GSD x width of its first aerial or DSM chip (0: none)."""
    root = Path(root)
    shapes: dict[str, int] = {}
    out = []
    for gsd, aerial, dsm in zip(table["gsd_m"], table["aerial"], table["dsm"], strict=True):
        ref = aerial[0] if aerial else dsm
        if ref is None:
            out.append(0.0)
            continue
        path, _ = resolve_ref(root, ref)
        if str(path) not in shapes:
            shapes[str(path)] = int(np.load(path, mmap_mode="r").shape[-1])
        out.append(float(gsd) * shapes[str(path)])
    return np.array(out)


def holdout_boxes(root: str | Path) -> dict[str, list[float]]:
    """WGS84 boxes kept out of the other splits: held-out areas' extents and reserved boxes."""
    info = DatasetInfo.read(root)
    out = dict(info.reserved)
    for a, v in info.area_info.items():
        if v.get("holdout"):
            out[a] = v.get("extent") or v["bbox"]
    return out


def holdout_intrusions(
    root: str | Path, boxes: dict[str, list[float]] | None = None
) -> list[tuple[str, str, str]]:
    """(sample id, split, box name) of every non-held-out sample whose footprint meets a box.

    Args:
        root: the dataset folder.
        boxes: name -> (west, south, east, north); default :func:`holdout_boxes`.
    """
    boxes = holdout_boxes(root) if boxes is None else boxes
    t = read_manifest(root, columns=["sample_id", "lat", "lon", "split", "gsd_m", "aerial", "dsm"])
    t = t.to_pydict()
    keep = [i for i, s in enumerate(t["split"]) if s is not None and s != "holdout"]
    sub = {k: [v[i] for i in keep] for k, v in t.items()}
    fp = chip_footprint(sub["lat"], sub["lon"], chip_sides(root, sub), np.ones(len(keep)))
    out = []
    for name, (w, s, e, n) in boxes.items():
        hit = (fp[:, 0] <= e) & (fp[:, 2] >= w) & (fp[:, 1] <= n) & (fp[:, 3] >= s)
        out += [(sub["sample_id"][i], sub["split"][i], name) for i in np.flatnonzero(hit)]
    return out


def holdout_classes(root: str | Path) -> Counter:
    """Land-use class name -> count over the held-out samples."""
    info = DatasetInfo.read(root)
    t = read_manifest(root, columns=["sample_id", "split", "landuse"]).to_pydict()
    return Counter(
        info.class_names[lab]
        for s, lab in zip(t["split"], t["landuse"], strict=True)
        if s == "holdout" and lab >= 0
    )
