"""The command-line interface: ``python -m engine info|embed|heatmap|hits|classify``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .errors import EngineError, InputError, StoreError

log = logging.getLogger("unigeo")

EPILOG = """examples:
  python -m engine info resources/models/default
  python -m engine embed scene.tif --model resources/models/default --out out/scene.store
  python -m engine embed a.tif b.tif --model M --scheduler local:4 --out out/ab.zarr
  python -m engine heatmap out/scene.store --model resources/models/default \\
      --text "wetlands next to cropland" --out out/wetlands.tif
  python -m engine heatmap out/scene.store --model M --point 512340,5207810 --out out/similar.tif
  python -m engine hits out/scene.store --model M --text "dense housing" --k 20 --out out/hits.gpkg
  python -m engine classify out/scene.store --model M --out out/classes.tif
  python -m engine index out/ab.zarr && python -m engine hits out/ab.zarr --model M --ann \
      --text "gravel pit" --k 50 --out out/pits.gpkg
"""


def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} must be {n} comma-separated numbers, got '{text}'") from None
    if len(vals) != n:
        raise InputError(f"{what} must be {n} comma-separated numbers, got '{text}'")
    return vals


def _progress_bar(total_label: str):
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=total_label, unit="‰", dynamic_ncols=True, leave=True)

    def update(fraction: float) -> None:
        bar.n = int(max(0.0, min(1.0, fraction)) * 1000)
        bar.refresh()

    return bar, update


def _load_model(args):
    from .model import UniGeoModel

    return UniGeoModel.load(args.model, providers=args.provider, threads=args.threads)


def _open_store(args, model):
    from .zarr_store import open_store

    store = open_store(args.store)
    if model is not None and store.model_hash != model.model_hash:
        raise StoreError(
            f"{args.store} was embedded with another model (hash {store.model_hash[:12]}, this model "
            f"{model.model_hash[:12]}); re-run 'embed' with this model"
        )
    return store


# -- info ---------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .contract import Modality

    model = _load_model(args)
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
def cmd_embed(args) -> int:
    from .contract import Modality
    from .mosaic import grid_for_sources, source_spec

    model = _load_model(args)
    modality = Modality(args.modality)
    if not model.has(modality):
        raise InputError(f"the model has no {modality.value} encoder")
    bands = [int(b) for b in args.bands.split(",")] if args.bands else None
    src = source_spec(args.raster, args.asset, bands, _scale(args.scale))
    extent = _floats(args.extent, 4, "--extent") if args.extent else None
    with src.open() as reader:
        grid = grid_for_sources(
            reader,
            model.spec(modality).preprocess,
            grid_crs=args.grid_crs,
            stride_px=args.stride,
            extent=extent,
            extent_crs=args.extent_crs,
            max_tiles=args.max_tiles,
        )
        print(
            f"grid     {grid.rows}×{grid.cols} tiles at {grid.gsd:g} m, CRS {_crs_name(grid.crs)}"
        )
        t0 = time.perf_counter()
        if args.scheduler:
            store, where = _embed_dask(args, model, src, grid, modality), args.scheduler
        else:
            store, where = _embed_local(args, model, reader, grid, modality)
    dt = time.perf_counter() - t0
    n_valid = int(store.valid.sum())
    print(
        f"store    {args.out}  ({n_valid}/{grid.n_tiles} valid tiles, {dt:.1f} s, "
        f"{grid.n_tiles / max(dt, 1e-9):.1f} tiles/s, {where})"
    )
    return 0


def _scale(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _embed_local(args, model, reader, grid, modality):
    from .embed import embed_raster

    bar, update = _progress_bar("embed")
    try:
        store = embed_raster(
            model,
            reader,
            grid,
            args.out,
            modality=modality,
            batch_size=args.batch_size,
            block_tiles=args.block_tiles,
            progress=update,
            resume=not args.no_resume,
        )
    finally:
        bar.close()
    return store, f"provider {model.provider_report().active}"


def _embed_dask(args, model, src, grid, modality):
    import shutil

    from .distributed import embed_distributed
    from .store import partial_path

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
    )


def _crs_name(crs: str) -> str:
    try:
        from pyproj import CRS

        c = CRS.from_user_input(crs)
        epsg = c.to_epsg()
        return f"EPSG:{epsg}" if epsg else c.name
    except Exception:  # noqa: BLE001 - only for display
        return crs[:40]


# -- queries ------------------------------------------------------------------------------------
def _add_query_args(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("query (combine several; negatives subtract)")
    q.add_argument("--text", action="append", default=[], help="text prompt (repeatable)")
    q.add_argument("--point", action="append", default=[], help="x,y of an example location")
    q.add_argument("--point-crs", default=None, help="CRS of --point (default: the store's)")
    q.add_argument("--gps", action="append", default=[], help="lat,lon (WGS84 degrees)")
    q.add_argument("--photo", action="append", default=[], help="street-level photo file")
    q.add_argument("--region", default=None, help="polygon file (GeoJSON/GPKG); mean of its tiles")
    q.add_argument("--negative-text", action="append", default=[], help="text to move away from")
    q.add_argument("--negative-point", action="append", default=[], help="x,y to move away from")
    q.add_argument("--gps-weight", type=float, default=0.0, help="mix a point's GPS embedding in")


def build_query(args, store, model):
    """Turn the query flags into one :class:`engine.query.Query`."""
    from . import query as Q

    parts = []
    for t in args.text:
        parts.append((Q.text_query(model, t), False))
    for t in args.negative_text:
        parts.append((Q.text_query(model, t), True))
    for pt in args.point:
        x, y = _floats(pt, 2, "--point")
        parts.append(
            (
                Q.point_query(
                    store, x, y, crs=args.point_crs, gps_weight=args.gps_weight, model=model
                ),
                False,
            )
        )
    for pt in args.negative_point:
        x, y = _floats(pt, 2, "--negative-point")
        parts.append((Q.point_query(store, x, y, crs=args.point_crs, model=model), True))
    for g in args.gps:
        lat, lon = _floats(g, 2, "--gps")
        parts.append((Q.gps_query(model, lat, lon), False))
    for ph in args.photo:
        parts.append((Q.photo_query(model, ph), False))
    if args.region:
        parts.append((_region(args.region, store), False))
    if not parts:
        raise InputError("give a query: --text, --point, --gps, --photo or --region")
    query = Q.Query()
    for q, negative in parts:
        query.add(q.vector(), 1.0, negative=negative, description=q.description())
    return query


def _region(path: str, store):
    import pyogrio
    import shapely
    from shapely.ops import unary_union

    from . import query as Q

    try:
        meta, _, geoms, _ = pyogrio.raw.read(path)
    except Exception as e:  # noqa: BLE001 - pyogrio raises many types for unreadable files
        raise InputError(f"cannot read polygons from {path}: {e}") from None
    polys = [g for g in shapely.from_wkb(geoms) if g is not None and not g.is_empty]
    if not polys:
        raise InputError(f"{path} holds no polygon")
    return Q.region_query(store, unary_union(polys), crs=meta.get("crs"))


def _provenance(args, model, query) -> dict:
    return {
        "model": f"{model.bundle.name} {model.bundle.version}",
        "model_hash": model.model_hash,
        "query": query.description(),
        "store": str(args.store),
    }


def cmd_heatmap(args) -> int:
    from .domain import domain_warning
    from .streaming import heatmap_auto

    model = _load_model(args)
    store = _open_store(args, model)
    query = build_query(args, store, model)
    # in memory up to 2*10^7 tiles, else chunk by chunk (flat memory)
    heatmap_auto(
        args.out,
        store,
        query.vector(),
        percentiles=not args.no_percentile,
        provenance=_provenance(args, model, query),
    )
    warn = domain_warning(store, model.bundle.training_domain)
    if warn:
        print(f"warning  {warn}")
    print(f"heatmap  {args.out}  (query: {query.description()})")
    return 0


def cmd_hits(args) -> int:
    from .similarity import write_hits
    from .streaming import hits_auto

    model = _load_model(args)
    store = _open_store(args, model)
    query = build_query(args, store, model)
    if args.ann:
        from .ann import AnnIndex, top_k_ann

        index = AnnIndex.load(store)  # refused when the store changed since it was built
        hits = top_k_ann(store, index, query.vector(), args.k, args.min_distance)
    else:
        hits = hits_auto(store, query.vector(), args.k, args.min_distance)
    write_hits(
        args.out,
        hits,
        store.grid.crs,
        as_polygons=args.polygons,
        provenance=_provenance(args, model, query),
    )
    for h in hits[:5]:
        print(
            f"  #{h.rank:<3} score {h.score:.3f}  pct {h.percentile:5.1f}  at {h.x:.1f}, {h.y:.1f}"
        )
    print(f"hits     {args.out}  ({len(hits)} places)")
    return 0


def cmd_index(args) -> int:
    from .ann import AnnIndex, default_folder
    from .zarr_store import open_store

    store = open_store(args.store)
    bar, update = _progress_bar("index")
    index = AnnIndex.build(store, kind=args.kind, nlist=args.nlist, progress=update)
    bar.close()
    folder = index.save(default_folder(store))
    print(
        f"index    {folder}  ({args.kind}, {index.nlist} lists, default nprobe {index.default_nprobe})"
    )
    return 0


def cmd_classify(args) -> int:
    from . import classify as C

    model = _load_model(args)
    store = _open_store(args, model)
    prompts = None
    if args.classes:
        try:
            prompts = json.loads(Path(args.classes).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"--classes must be a JSON file {{class: [prompts]}}: {e}") from None
    result = C.zero_shot(store, model, class_prompts=prompts)
    conf = args.confidence or str(Path(args.out).with_name(Path(args.out).stem + "_confidence.tif"))
    C.write_classification(
        args.out,
        conf,
        store,
        result,
        provenance={
            "model": f"{model.bundle.name} {model.bundle.version}",
            "model_hash": model.model_hash,
            "classes": ", ".join(result.classes),
            "method": "zero-shot",
        },
    )
    print(f"classes  {args.out}\nconfid.  {conf}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m engine",
        description="UniGeo engine: embed rasters, query them, classify.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, store=True):
        if store:
            p.add_argument("store", help="embedding store folder (from 'embed')")
        p.add_argument("--model", required=True, help="model bundle folder")
        p.add_argument("--provider", default=None, help="auto (default), cpu, cuda or tensorrt")
        p.add_argument("--threads", type=int, default=None, help="CPU threads for inference")

    p = sub.add_parser(
        "info",
        help="validate a bundle and show its encoders and provider",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model bundle folder")
    p.add_argument("--provider", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "embed",
        help="embed a raster into a store (resumable)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("raster", nargs="+", help="raster(s), a .vrt, or one STAC-like JSON collection")
    common(p, store=False)
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--modality", default="aerial", choices=["aerial", "dsm"])
    p.add_argument(
        "--bands", default=None, help="1-based band indices in model order, e.g. 1,2,3,4"
    )
    p.add_argument("--scale", default="dtype", help="dtype (uint8/255), percentile, or a number")
    p.add_argument("--stride", type=int, default=None, help="tile stride in pixels (default: tile)")
    p.add_argument("--extent", default=None, help="minx,miny,maxx,maxy (default: whole raster)")
    p.add_argument("--extent-crs", default=None, help="CRS of --extent (default: the grid's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-tiles", type=int, default=5_000_000)
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    p.add_argument("--block-tiles", type=int, default=32, help="resume block (and Zarr chunk) side")
    p.add_argument("--grid-crs", default=None, help="grid CRS (default: from the first raster)")
    p.add_argument("--asset", default=None, help="asset key of a JSON collection (default: image)")
    p.add_argument(
        "--scheduler",
        default=None,
        help="local:N (N local worker processes) or tcp://HOST:PORT: embed on Dask into Zarr",
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "heatmap",
        help="similarity heatmap GeoTIFF for a query",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    p.add_argument("--out", required=True, help="GeoTIFF to write")
    p.add_argument("--no-percentile", action="store_true", help="only the raw cosine band")
    _add_query_args(p)
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser(
        "hits",
        help="top-k similar places as GeoPackage/GeoJSON",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    p.add_argument("--out", required=True, help=".gpkg or .geojson")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--min-distance", type=int, default=1, help="NMS radius in tiles")
    p.add_argument("--polygons", action="store_true", help="tile polygons instead of points")
    p.add_argument("--ann", action="store_true", help="use the store's ANN index (see 'index')")
    _add_query_args(p)
    p.set_defaults(func=cmd_hits)

    p = sub.add_parser(
        "index",
        help="build an ANN index (FAISS) beside a store, for --ann hits over 10^7+ tiles",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="embedding store folder (npy or Zarr)")
    p.add_argument("--kind", default="ivf", choices=["ivf", "ivf-sq8", "flat"])
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~sqrt(tiles))")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "classify",
        help="zero-shot land-use classification",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    p.add_argument("--out", required=True, help="class GeoTIFF (paletted)")
    p.add_argument("--confidence", default=None, help="confidence GeoTIFF")
    p.add_argument(
        "--classes", default=None, help="JSON {class: [prompts]} (default: the bundle's)"
    )
    p.set_defaults(func=cmd_classify)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: a resumable partial store is kept; rerun the same command",
            file=sys.stderr,
        )
        return 130
