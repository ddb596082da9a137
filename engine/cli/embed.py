"""The ``info`` and ``embed`` CLI commands: bundle check, and raster embedding (local or Dask)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .. import pipeline
from ..errors import InputError
from ..model.contract import Modality
from ..raster.sensors import sensor_names
from .common import add_command, add_model_args, floats, ints, load_model, progress_bar


# -- info ---------------------------------------------------------------------------------------
def add_info_parser(sub: Any) -> None:
    """Register ``info MODEL``: validate a bundle and show its encoders and provider."""
    p = add_command(sub, "info", "validate a bundle and show its encoders and provider")
    p.add_argument("model", help="model bundle folder")
    p.add_argument("--provider", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    """Load every encoder of the bundle and print what it holds; returns the exit code."""

    model = load_model(args)
    b = model.bundle
    print(f"bundle   {model.folder}")
    print(f"model    {b.name} {b.version}  D={b.dim}  hash {model.model_hash[:16]}")
    for m in Modality:
        if not model.has(m):
            print(f"  {m.value:<10} (absent)")
            continue
        s = model.spec(m)
        model.encoder_session(m)  # really load it: info validates every encoder
        shapes = ", ".join(f"{k}{v}" for k, v in s.inputs.items())
        prov = b.provenance.get(m.value, "?")
        print(
            f"  {m.value:<10} ok   inputs {shapes}  gsd {s.preprocess.gsd_m or '-'} m  data: {prov}"
        )
    rep = model.provider_report()
    print(f"provider {rep.active}  threads {rep.threads}  device {rep.device}")
    if rep.fallback_reason:
        print(f"fallback {rep.fallback_reason}")
    dom = b.training_domain
    print(f"domain   {len(dom.bboxes)} box(es), GSD {dom.gsd_range_m[0]}–{dom.gsd_range_m[1]} m")
    if b.class_prompts:
        print(f"classes  {', '.join(b.class_prompts)}")
    return 0


# -- embed --------------------------------------------------------------------------------------
def add_embed_parser(sub: Any) -> None:
    """Register ``embed RASTER... --model M --out STORE`` and its tiling/runtime options."""
    p = add_command(sub, "embed", "embed a raster into a store (resumable)")
    p.add_argument("raster", nargs="+", help="raster(s), a .vrt, or one STAC-like JSON collection")
    add_model_args(p, store=False)
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--modality", default="aerial", choices=["aerial", "dsm"])
    p.add_argument(
        "--bands",
        default=None,
        help="1-based band indices in model order, e.g. 1,2,3,4; 0 for a band the raster lacks "
        "(masked by an encoder with a band mask), e.g. 1,2,3,0,4,0 for RGB + SWIR1",
    )
    p.add_argument(
        "--scale",
        default=None,
        help="dtype (uint8/255), percentile, sensor:NAME, or a number (default: dtype for "
        "aerial; for dsm 1, i.e. heights in metres as the DSM encoder was trained)",
    )
    p.add_argument(
        "--sensor",
        default=None,
        choices=sensor_names(),
        help="scale raw pixels by this sensor's rule from engine/sensors.json, as the model's "
        "training chips were (e.g. sentinel2_l2a for a stack of Sentinel-2 L2A bands); "
        "same as --scale sensor:NAME",
    )
    p.add_argument("--stride", type=int, default=None, help="tile stride in pixels (default: tile)")
    p.add_argument("--extent", default=None, help="minx,miny,maxx,maxy (default: whole raster)")
    p.add_argument("--extent-crs", default=None, help="CRS of --extent (default: the grid's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-tiles", type=int, default=5_000_000)
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    p.add_argument("--block-tiles", type=int, default=32, help="resume block (and Zarr chunk) side")
    p.add_argument("--grid-crs", default=None, help="grid CRS (default: from the first raster)")
    p.add_argument("--asset", default=None, help="asset key of a JSON collection (default: image)")
    _add_scheduler_args(p)
    p.set_defaults(func=cmd_embed)


def _add_scheduler_args(p: argparse.ArgumentParser) -> None:
    """``--scheduler`` and how to reach it: TLS credentials, ``--insecure``, the dashboard."""
    p.add_argument(
        "--scheduler",
        default=None,
        help="embed on Dask into Zarr: local:N (N worker processes on 127.0.0.1), "
        "tls://HOST:PORT, or tcp://127.0.0.1:PORT",
    )
    p.add_argument(
        "--tls-ca-file",
        default=None,
        metavar="PEM",
        help="CA of a tls:// scheduler (default: distributed.comm.tls.ca-file)",
    )
    p.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="client certificate (default: distributed.comm.tls.client.cert)",
    )
    p.add_argument(
        "--tls-key",
        default=None,
        metavar="PEM",
        help="client key (default: distributed.comm.tls.client.key)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain tcp:// to another host: unencrypted, unauthenticated",
    )
    p.add_argument("--no-dashboard", action="store_true", help="local:N without a dashboard")


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed the raster(s) on a tile grid into ``--out``; returns the exit code.

    Raises:
        InputError: The model has no encoder for ``--modality``, or an option is malformed.
    """
    from ..raster.mosaic import source_spec

    dask_args = _scheduler_options(args)  # a refused address fails before anything runs
    model = load_model(args)
    modality = Modality(args.modality)
    if not model.has(modality):
        raise InputError(f"the model has no {modality.value} encoder")
    bands = ints(args.bands, "--bands") if args.bands else None
    dsm = modality is Modality.DSM
    # A DSM is read in metres with area-average resampling, as its encoder was trained (and as
    # Processing reads it); imagery is scaled to [0, 1] and resampled bilinearly.
    if args.sensor and args.scale is not None:
        raise InputError("give --sensor or --scale, not both")
    scale = _scale(args.scale) if args.scale is not None else (1.0 if dsm else "dtype")
    if args.sensor:
        scale = f"sensor:{args.sensor}"
    src = source_spec(args.raster, args.asset, bands, scale,
                      resampling="average" if dsm else "bilinear")  # fmt: skip
    extent = floats(args.extent, 4, "--extent") if args.extent else None
    with src.open() as reader:
        grid = _embed_grid(args, model.spec(modality).preprocess, reader, extent)
        print(
            f"grid     {grid.rows}×{grid.cols} tiles at {grid.gsd:g} m, CRS {_crs_name(grid.crs)}"
        )
        _print_plan(args, model, reader, grid, modality)
        t0 = time.perf_counter()
        if args.scheduler:
            store = _embed_dask(args, model, src, grid, modality, dask_args)
            where = args.scheduler
        else:
            store, where = _embed_local(args, model, reader, grid, modality)
    dt = time.perf_counter() - t0
    n_valid = int(store.valid.sum())
    print(
        f"store    {args.out}  ({n_valid}/{grid.n_tiles} valid tiles, {dt:.1f} s, "
        f"{grid.n_tiles / max(dt, 1e-9):.1f} tiles/s, {where})"
    )
    return 0


def _print_plan(
    args: argparse.Namespace, model: Any, reader: Any, grid: Any, modality: Any
) -> None:
    """The estimate line, and the pixel-size or job-size warning (:mod:`engine.embed.plan`)."""
    out = Path(args.out)
    # rates recorded by earlier stores of this model beside the output (and a store it replaces)
    plan = pipeline.plan(model, reader, grid, [out, out.parent], modality)
    print(f"estimate {plan.summary()}")
    if (warning := plan.warning()) is not None:
        print(f"warning  {warning}")


def _embed_grid(
    args: argparse.Namespace, preprocess: Any, reader: Any, extent: list[float] | None
) -> Any:
    """The tile grid over the source(s), from ``--extent``/``--stride``/``--grid-crs``."""
    from ..raster.mosaic import grid_for_sources

    return grid_for_sources(
        reader,
        preprocess,
        grid_crs=args.grid_crs,
        stride_px=args.stride,
        extent=extent,
        extent_crs=args.extent_crs,
        max_tiles=args.max_tiles,
    )


def _scale(text: str) -> float | str:
    """``--scale``: a number, else a named scaling mode passed through (``dtype``, ...)."""
    try:
        return float(text)
    except ValueError:
        return text


def _embed_local(
    args: argparse.Namespace, model: Any, reader: Any, grid: Any, modality: Any
) -> tuple[Any, str]:
    """Embed in this process with a progress bar; returns ``(store, where it ran)``."""
    bar, update = progress_bar("embed")
    try:
        store = pipeline.embed(
            model,
            reader,
            grid,
            args.out,
            modality,
            block_tiles=args.block_tiles,
            batch_size=args.batch_size,
            progress=update,
            resume=not args.no_resume,
        )
    finally:
        bar.close()
    return store, f"provider {model.provider_report().active}"


def _scheduler_options(args: argparse.Namespace) -> dict[str, Any]:
    """``embed_distributed``'s connection arguments, checked before any model or connection.

    Raises:
        InputError: a refused address, TLS options without a ``tls://`` scheduler, or TLS
            credentials that are missing or do not load.
    """
    tls = (args.tls_ca_file, args.tls_cert, args.tls_key)
    if not args.scheduler:
        if any(tls) or args.insecure or args.no_dashboard:
            raise InputError("--tls-*, --insecure and --no-dashboard need --scheduler")
        return {}
    from ..scale.security import check_address, tls_security

    secure = args.scheduler.startswith("tls://")
    local = check_address(args.scheduler, args.insecure)
    if any(tls) and not secure:
        raise InputError(
            "--tls-ca-file/--tls-cert/--tls-key are for a tls:// --scheduler"
            + (" (local:N makes temporary credentials of its own)" if local else "")
        )
    return {
        "security": tls_security(*tls) if secure else None,
        "insecure": args.insecure,
        "dashboard_address": None if args.no_dashboard else ":0",
    }


def _embed_dask(
    args: argparse.Namespace, model: Any, src: Any, grid: Any, modality: Any, dask_args: dict
) -> Any:
    """Embed on the Dask scheduler ``--scheduler`` into a Zarr store; returns the store."""
    import shutil

    from ..scale.distributed import embed_distributed
    from ..store.base import partial_path

    if args.no_resume:
        shutil.rmtree(partial_path(args.out), ignore_errors=True)
    model.close()  # the workers load their own sessions
    return embed_distributed(
        args.model,
        src,
        grid,
        args.out,
        scheduler=args.scheduler,
        modality=modality,
        batch_size=args.batch_size,
        block_tiles=args.block_tiles,
        provider=args.provider,
        threads_per_worker=args.threads or 1,
        progress=True,
        **dask_args,
    )


def _crs_name(crs: str) -> str:
    """A short display name for a CRS (``EPSG:n`` when it has one)."""
    from ..errors import EngineError
    from ..geo import crs as C

    try:
        epsg = C.epsg_code(crs)
        return f"EPSG:{epsg}" if epsg else str(C.srs(crs).GetName() or crs[:40])
    except EngineError:  # only for display
        return crs[:40]
