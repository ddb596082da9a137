"""``python -m training.targets_run``: score bundles side by side on held-out data.

    python -m training.targets_run --bundle out/lit/bundle --bundle resources/models/default \\
        --dataset data-cache/dataset_v2 --holdout havel_s2 sfbay_l7 --out docs/model/targets

writes ``targets.json`` and ``targets.md``: per held-out area (never trained on) zero-shot and
few-shot land use, text-to-map top-20 precision, aerial<->GPS/text retrieval and the spread of
the embeddings; same place across dates on the test split (places never trained on); the GPS
probes against GeoCLIP; bundle size and aerial encoding speed, timed interleaved.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.atomic import atomic_write_text
from engine.model import UniGeoModel
from engine.model.contract import Modality

from .band_match import dataset_bands
from .heldout import load_scene
from .targets import (
    cross_date,
    embed_aerial,
    few_shot_groups,
    lite0_embedder,
    reference_few_shot,
    scene_measures,
    stats_embedder,
)

log = logging.getLogger(__name__)


def class_names(root: Path) -> list[str]:
    return list(json.loads((root / "dataset.json").read_text())["class_names"])


def bundle_mb(folder: Path) -> float | None:
    """Megabytes of the files the bundle uses (bundle.json, encoders, tokenizer); None for a
    checkpoint."""
    if not (folder / "bundle.json").is_file():
        return None
    b = json.loads((folder / "bundle.json").read_text())
    files = ["bundle.json", b.get("tokenizer", "tokenizer.json"), *b["encoders"].values()]
    return sum((folder / f).stat().st_size for f in files if (folder / f).is_file()) / 1e6


def open_model(path: Path, names: list[str], threads: int | None = None) -> Any:
    """A bundle folder through the engine, or a checkpoint (.pt) through :class:`TorchModel`."""
    if Path(path).suffix == ".pt":
        from .torch_engine import TorchModel

        return TorchModel(path, names)
    return UniGeoModel.load(path, threads=threads)


class _GpsAdapter(torch.nn.Module):
    """Lets :mod:`training.gps_probes` score a bundle's GPS tower through the engine."""

    def __init__(self, model: UniGeoModel) -> None:
        super().__init__()
        self.m = model
        self.towers = {"gps": None}

    def encode(self, modality: Modality, ll: torch.Tensor) -> torch.Tensor:
        x = ll.numpy()
        return torch.from_numpy(self.m.encode_gps(x[:, 0], x[:, 1]))


def gps_probes(models: dict[str, UniGeoModel], n: int, seed: int) -> dict[str, Any]:
    """Land/sea and population probes of every bundle's GPS tower and GeoCLIP, same points."""
    from .geoclip_baseline import default_cache, load_geoclip_location_encoder
    from .gps_probes import build_tasks, feature_sets, run_task

    cache = default_cache()
    geoclip = load_geoclip_location_encoder(cache)
    out: dict[str, Any] = {}
    for task in build_tasks(n, seed, cache):
        res: dict[str, Any] = {}
        for name, m in models.items():
            feats = feature_sets(_GpsAdapter(m), geoclip, task.lat, task.lon)
            r = run_task(task, feats, seed)
            res[name] = r["results"]["ours"]
            res["geoclip"], res["majority"] = r["results"]["geoclip"], r["majority"]
        out[task.name] = res
    return out


def speed(models: dict[str, UniGeoModel], chips: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """Aerial chips per second through ``encode_tiles``, rounds interleaved between bundles."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        embed_aerial(m, chips[:64])  # warm up (session creation)
    for _ in range(rounds):
        for k, m in models.items():
            t0 = time.perf_counter()
            embed_aerial(m, chips)
            times[k].append(time.perf_counter() - t0)
    return {k: len(chips) / float(np.median(v)) for k, v in times.items()}


LANDSAT7 = {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 7}
"""The demo scene's band numbers (localtileserver's landsat.tif: Landsat 7 ETM+ B1-B7)."""


def e2e_speed(models: dict[str, Any], raster: Path, numbers: dict[str, int], repeats: int = 3,
              threads: int | None = None) -> dict[str, float]:  # fmt: skip
    """End-to-end tiles/s (read, resample, preprocess, infer, store) of each bundle on ``raster``,
    repeats interleaved between bundles so both face the same machine load."""
    import shutil
    import tempfile

    from engine.embed.job import embed_raster
    from engine.raster.gdal_reader import GdalReader
    from engine.raster.tiling import grid_for_raster

    times: dict[str, list[float]] = {k: [] for k in models}
    n_tiles: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats + 1):  # the first round warms up (sessions, file cache)
            for k, m in models.items():
                spec = m.spec(Modality.AERIAL).preprocess
                reader = GdalReader(raster, bands=[numbers[b] for b in spec.bands])
                grid = grid_for_raster(reader, spec)
                store = Path(tmp) / "store"
                shutil.rmtree(store, ignore_errors=True)
                t0 = time.perf_counter()
                embed_raster(m, reader, grid, store, resume=False)
                if r:
                    times[k].append(time.perf_counter() - t0)
                n_tiles[k] = grid.n_tiles
                reader.close()
    return {k: n_tiles[k] / float(np.median(v)) for k, v in times.items()}


def cross_date_baselines(dates: Any) -> dict[str, Any]:
    """Cross-date R@1 of the references on the same chips: pixel statistics, and the frozen
    backbone's pooled ImageNet feature (what the aerial tower's heads start from)."""
    return {"pixel statistics": cross_date(None, dates, stats_embedder(dates)),
            "frozen Lite0": cross_date(None, dates, lite0_embedder())}  # fmt: skip


def run(bundles: list[Path], root: Path, holdout: list[str], out: Path, gps_n: int = 2000,
        seed: int = 0, threads: int | None = None, timing: bool = True,
        e2e_raster: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Every measure, for every bundle, on the same held-out chips."""
    names = class_names(root)
    src = dataset_bands(root) or ("red", "green", "blue", "nir")
    scenes = [load_scene(root, a, lambda r, a=a: r["area_id"] == a, dataset_bands=src)
              for a in holdout]  # fmt: skip
    # places never trained on inside the training areas (spatial test blocks), all areas pooled
    scenes.append(load_scene(
        root, "test split (places never trained on)",
        lambda r: r["split"] == "test" and r["area_id"] not in holdout
        and r["area_id"] != "global_bluemarble", dataset_bands=src))  # fmt: skip
    dates = load_scene(
        root,
        "test split, multi-date",
        lambda r: r["split"] == "test" and r["area_id"] not in holdout and len(r["aerial"]) > 1,
        dataset_bands=src,
    )
    lite0 = lite0_embedder()
    refs = {s.name: reference_few_shot(s, {"frozen_lite0": lite0(s.first())}) for s in scenes
            if few_shot_groups(s) is not None}  # fmt: skip
    models = {str(b): open_model(b, names, threads) for b in bundles}
    res: dict[str, Any] = {"dataset": str(root), "holdout": holdout, "bundles": {},
                           "cross_date_baselines": cross_date_baselines(dates)}  # fmt: skip
    for key, m in models.items():
        r: dict[str, Any] = {"size_mb": bundle_mb(Path(key)), "version": m.bundle.version,
                             "scenes": {s.name: scene_measures(m, s, names, refs.get(s.name))
                                        for s in scenes},
                             "cross_date": cross_date(m, dates)}  # fmt: skip
        res["bundles"][key] = r
        log.info("scored %s", key)
    if timing:
        res["speed_chips_per_s"] = speed(models, scenes[0].first()[:256])
        if e2e_raster is not None:
            res["e2e_tiles_per_s"] = e2e_speed(models, e2e_raster, LANDSAT7)
    if gps_n:
        res["gps_probes"] = gps_probes(models, gps_n, seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "targets.json", json.dumps(res, indent=1, default=float) + "\n")
    from .targets_report import markdown

    atomic_write_text(out / "targets.md", markdown(res))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score bundles on held-out data (issue 18 targets).")
    ap.add_argument(
        "--bundle",
        action="append",
        required=True,
        type=Path,
        help="bundle folder, or a checkpoint .pt (scored in torch, see torch_engine)",
    )
    ap.add_argument("--dataset", required=True, type=Path, help="dataset folder")
    ap.add_argument("--holdout", nargs="+", required=True, help="area_ids never trained on")
    ap.add_argument("--out", required=True, type=Path, help="report folder")
    ap.add_argument("--gps-n", type=int, default=2000, help="points per GPS probe (0 = skip)")
    ap.add_argument("--no-speed", action="store_true", help="skip the encoding speed timing")
    ap.add_argument(
        "--e2e-raster",
        type=Path,
        default=None,
        help="also time end-to-end embedding of this Landsat 7 scene (the demo's)",
    )
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(
        a.bundle,
        a.dataset,
        a.holdout,
        a.out,
        a.gps_n,
        threads=a.threads,
        timing=not a.no_speed,
        e2e_raster=a.e2e_raster,
    )
    print((a.out / "targets.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
