"""Distributed embedding throughput (single process vs a local Dask cluster of 1 and 2 workers)
and a projection of the GPU-hours and wall-hours to embed a whole country.

The same real NAIP scene (``../shared/data``; a generated raster stands in when it is absent),
and a 2x2 mirrored mosaic of it, are embedded with the shipped bundle by ``embed_raster`` (one
process, all cores) and by ``embed_distributed`` on ``local:1`` and ``local:2`` clusters (cores
split between the workers). Each cluster is started once and warmed with one untimed run; the
figures are medians of the timed runs after it.

    .venv/bin/python bench/distributed.py --json out/bench_distributed.json
    .venv/bin/python bench/distributed.py --gpu-tiles-per-s 3000 --gpus 8 --area-km2 357000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if not __package__:
    # Run as a script, this file's folder would come first on sys.path, and this file is named
    # like Dask's `distributed` package: drop the folder (here and in spawned workers).
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

from bench.common import ROOT, machine_info, md_table  # noqa: E402
from engine.embed.job import embed_raster  # noqa: E402
from engine.model import UniGeoModel  # noqa: E402
from engine.model.contract import Modality  # noqa: E402
from engine.raster.gdal_reader import GdalReader  # noqa: E402
from engine.raster.tiling import grid_for_raster  # noqa: E402
from engine.scale.distributed import embed_distributed  # noqa: E402

DEFAULT_BUNDLE = ROOT / "resources" / "models" / "default"
NAIP = ROOT.parent / "shared" / "data" / "naip_north_dakota" / "m_4709963_se_14_1_20190904.tif"
GERMANY_KM2 = 357_000.0


def project_country(
    tiles_per_s_per_device: float,
    tile_px: int,
    gsd_m: float = 1.0,
    area_km2: float = GERMANY_KM2,
    devices: int = 8,
    efficiency: float = 0.9,
) -> dict[str, Any]:
    """Device-hours and wall-hours to embed ``area_km2`` at ``gsd_m`` with ``tile_px`` tiles.

    Args:
        tiles_per_s_per_device: throughput of one device (GPU, or a CPU node) end to end.
        tile_px: the encoder's tile side in pixels; a tile covers ``(tile_px * gsd_m)²``.
        gsd_m: ground sample distance of the imagery and grid, metres.
        area_km2: the area to embed (default: Germany, 357,000 km²).
        devices: how many devices run at once.
        efficiency: the fraction of ``devices x one device`` the cluster reaches (I/O, stragglers,
            scheduling); an assumption, since no multi-GPU run was measured.
    """
    if min(tiles_per_s_per_device, tile_px, gsd_m, area_km2, devices, efficiency) <= 0:
        raise ValueError("every projection parameter must be positive")
    tile_km2 = (tile_px * gsd_m / 1000.0) ** 2
    tiles = area_km2 / tile_km2
    device_h = tiles / (tiles_per_s_per_device * 3600.0)
    return {
        "area_km2": area_km2,
        "gsd_m": gsd_m,
        "tile_px": tile_px,
        "tile_km2": tile_km2,
        "tiles": tiles,
        "tiles_per_s_per_device": tiles_per_s_per_device,
        "devices": devices,
        "efficiency": efficiency,
        "device_hours": device_h,
        "wall_hours": device_h / (devices * efficiency),
        # float16 embeddings: D x 2 bytes a tile (+1 byte validity)
    }


def _km2(grid: Any) -> float:
    x0, y0, x1, y1 = grid.cell_bounds(0, 0)
    return grid.n_tiles * (x1 - x0) * (y1 - y0) / 1e6


def _single(model: UniGeoModel, raster: Path, grid: Any, work: Path, bt: int) -> float:
    out = work / "single.store"
    shutil.rmtree(out, ignore_errors=True)
    with GdalReader(raster) as reader:
        t0 = time.perf_counter()
        embed_raster(model, reader, grid, out, block_tiles=bt, resume=False)
        return time.perf_counter() - t0


def _dask(cluster: Any, raster: Path, grid: Any, work: Path, bt: int, threads: int) -> dict:
    out = work / "dask.zarr"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    store = embed_distributed(DEFAULT_BUNDLE, raster, grid, out, scheduler=cluster.address,
                              security=cluster.security, block_tiles=bt,
                              threads_per_worker=threads, progress=False, resume=False)  # fmt: skip
    return {"wall": time.perf_counter() - t0, "compute": store.meta["compute_s"]}


def bench_scene(raster: Path, work: Path, workers: list[int], repeats: int, bt: int) -> list[dict]:
    """Rows for one raster: single process, then each local cluster size."""
    from engine.scale.cluster import DaskCluster

    cores = os.cpu_count() or 1
    model = UniGeoModel.load(DEFAULT_BUNDLE, threads=cores)
    with GdalReader(raster) as reader:
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
    km2, n = _km2(grid), grid.n_tiles
    _single(model, raster, grid, work, bt)  # warm-up
    t = statistics.median(_single(model, raster, grid, work, bt) for _ in range(repeats))
    rows = [{"raster": raster.name, "tiles": n, "mode": "embed_raster (1 process)",
             "ort_threads": cores, "startup_s": 0.0, "wall_s": t, "tiles_per_s": n / t,
             "km2_per_s": km2 / t, "ratio": 1.0}]  # fmt: skip
    for nw in workers:
        threads = max(1, cores // nw)
        t0 = time.perf_counter()
        # the cluster `--scheduler local:N` starts: TLS with temporary credentials, 127.0.0.1
        with DaskCluster(f"local:{nw}", None) as cluster:
            startup = time.perf_counter() - t0
            _dask(cluster, raster, grid, work, bt, threads)  # warm-up
            runs = [_dask(cluster, raster, grid, work, bt, threads) for _ in range(repeats)]
        wall = statistics.median(r["wall"] for r in runs)
        rows.append({"raster": raster.name, "tiles": n, "mode": f"local:{nw}",
                     "ort_threads": f"{nw}x{threads}", "startup_s": startup, "wall_s": wall,
                     "tiles_per_s": n / wall, "km2_per_s": km2 / wall, "ratio": t / wall,
                     "compute_s": statistics.median(r["compute"] for r in runs)})  # fmt: skip
    return rows


def _scenes(work: Path, mosaic: bool) -> list[Path]:
    from bench.embed_e2e import mosaic_raster

    src = NAIP if NAIP.is_file() else None
    scenes = [mosaic_raster(src, work / "scene.tif", 1)]
    if mosaic:
        scenes.append(mosaic_raster(src, work / "scene_2x2.tif", 2))
    return scenes


def projection_rows(args: argparse.Namespace, cpu_tiles_per_s: float, tile_px: int) -> list:
    """The country projection for the assumed GPU figure and for the measured CPU figure."""
    rows = []
    for label, rate, devices in (
        (
            f"GPU (ASSUMED {args.gpu_tiles_per_s:g} tiles/s per GPU)",
            args.gpu_tiles_per_s,
            args.gpus,
        ),
        ("CPU node (MEASURED here, best local row)", cpu_tiles_per_s, args.gpus),
    ):
        p = project_country(rate, tile_px, args.gsd_m, args.area_km2, devices, args.efficiency)
        rows.append({"device": label, **p})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block-tiles", type=int, default=8, help="small: a scene is ~200 tiles")
    ap.add_argument("--no-mosaic", action="store_true", help="skip the 2x2 mosaic")
    ap.add_argument("--area-km2", type=float, default=GERMANY_KM2)
    ap.add_argument("--gsd-m", type=float, default=1.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--efficiency", type=float, default=0.9, help="ASSUMED scaling efficiency")
    ap.add_argument("--gpu-tiles-per-s", type=float, default=3000.0,
                    help="ASSUMED end-to-end tiles/s of one GPU (none was measured)")  # fmt: skip
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="unigeo_bench_dist_"))
    try:
        rows: list[dict] = []
        for scene in _scenes(work, not args.no_mosaic):
            rows += bench_scene(scene, work, args.workers, args.repeats, args.block_tiles)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tile_px = UniGeoModel.load(DEFAULT_BUNDLE).spec(Modality.AERIAL).preprocess.size
    best_cpu = max(r["tiles_per_s"] for r in rows)
    proj = projection_rows(args, best_cpu, tile_px)
    print("## Distributed embedding throughput (this machine)\n")
    print(md_table(rows, ["raster", "tiles", "mode", "ort_threads", "startup_s", "wall_s",
                          "tiles_per_s", "km2_per_s", "ratio"]))  # fmt: skip
    print("## Country projection (every column is an input or follows from them)\n")
    print(md_table(proj))
    print("Assumptions: tiles do not overlap (stride = tile); the imagery is resampled to "
          f"{args.gsd_m:g} m; every device sustains the per-device rate end to end (reading "
          "included); wall-hours = device-hours / (devices x efficiency); cluster start-up "
          "and input staging are not included.")  # fmt: skip
    result = {"machine": machine_info(), "rows": rows, "projection": proj, "args": vars(args)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
