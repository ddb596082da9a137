"""The query CLI commands ``heatmap``, ``hits`` and ``index``: the query flags as a QuerySpec."""

from __future__ import annotations

import argparse
from typing import Any

from .. import pipeline
from ..errors import InputError
from ..geo.vector import read_features
from ..search.spec import Place, QuerySpec, Region
from .common import (
    add_command,
    add_model_args,
    check_paths,
    floats,
    load_model,
    open_store,
    progress_bar,
)


# -- query flags ----------------------------------------------------------------------------------
def add_query_args(p: argparse.ArgumentParser) -> None:
    """Add the query flags (text, points, GPS, photos, region, negatives) as one group."""
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


def query_spec(args: argparse.Namespace) -> QuerySpec:
    """The query flags as plain data (nothing is encoded yet).

    Raises:
        InputError: No query flag was given, or one is malformed or unreadable.
    """
    crs = args.point_crs
    spec = QuerySpec(
        texts=tuple(args.text),
        negative_texts=tuple(args.negative_text),
        points=tuple(Place(*floats(pt, 2, "--point"), crs) for pt in args.point),
        negative_points=tuple(
            Place(*floats(pt, 2, "--negative-point"), crs) for pt in args.negative_point
        ),
        photos=tuple(args.photo),
        regions=(_region(args.region),) if args.region else (),
        gps=tuple(tuple(floats(g, 2, "--gps")) for g in args.gps),
        gps_weight=args.gps_weight,
    )
    if spec.is_empty() and not spec.has_negatives():
        raise InputError("give a query: --text, --point, --gps, --photo or --region")
    return spec


def _region(path: str) -> Region:
    """A region query's polygons: every polygon of the file ``path``, united."""
    feats, crs = read_features(path)
    if not feats:
        raise InputError(f"{path} holds no polygon")
    return Region(tuple(wkb for wkb, _ in feats), crs, "", f"the polygons of {path}")


def _query_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The files a query command reads, by option, for :func:`~.common.check_paths`."""
    return {"the store": args.store, "--region": args.region, "--photo": args.photo}


# -- heatmap ------------------------------------------------------------------------------------
def add_heatmap_parser(sub: Any) -> None:
    """Register ``heatmap STORE --model M --out TIF`` plus the query flags."""
    p = add_command(sub, "heatmap", "similarity heatmap GeoTIFF for a query")
    add_model_args(p)
    p.add_argument("--out", required=True, help="GeoTIFF to write")
    p.add_argument("--no-percentile", action="store_true", help="only the raw cosine band")
    add_query_args(p)
    p.set_defaults(func=cmd_heatmap)


def _query_job(args: argparse.Namespace) -> tuple[Any, Any, Any, dict]:
    """What heatmap and hits share: checked paths, model, store, query and provenance."""
    check_paths({"--out": args.out}, _query_inputs(args))
    spec = query_spec(args)  # a bad query fails before the model loads
    model = load_model(args)
    store = open_store(args, model)
    query = pipeline.build_query(spec, store, model)
    return model, store, query, pipeline.provenance(model, store, query=query.description())


def cmd_heatmap(args: argparse.Namespace) -> int:
    """Write the query's similarity heatmap GeoTIFF; returns the exit code."""
    model, store, query, prov = _query_job(args)
    pipeline.heatmap(args.out, store, query, percentiles=not args.no_percentile, provenance=prov)
    warn = pipeline.domain_warning(store, model)
    if warn:
        print(f"warning  {warn}")
    print(f"heatmap  {args.out}  (query: {query.description()})")
    return 0


# -- hits ---------------------------------------------------------------------------------------
def add_hits_parser(sub: Any) -> None:
    """Register ``hits STORE --model M --out GPKG`` plus the query flags."""
    p = add_command(sub, "hits", "top-k similar places as GeoPackage/GeoJSON")
    add_model_args(p)
    p.add_argument(
        "--out",
        required=True,
        help=".gpkg (store CRS), .geojson (WGS84, RFC 7946) or .shp (store CRS)",
    )
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--min-distance", type=int, default=1, help="NMS radius in tiles")
    p.add_argument("--polygons", action="store_true", help="tile polygons instead of points")
    p.add_argument("--ann", action="store_true", help="use the store's ANN index (see 'index')")
    add_query_args(p)
    p.set_defaults(func=cmd_hits)


def cmd_hits(args: argparse.Namespace) -> int:
    """Write the query's top-k places (exact, or via the ANN index); returns the exit code."""
    model, store, query, prov = _query_job(args)
    hits = pipeline.hits(
        args.out, store, query, args.k, args.min_distance, args.polygons, prov, ann=args.ann
    )
    for h in hits[:5]:
        print(
            f"  #{h.rank:<3} score {h.score:.3f}  pct {h.percentile:5.1f}  at {h.x:.1f}, {h.y:.1f}"
        )
    print(f"hits     {args.out}  ({len(hits)} places)")
    return 0


# -- index --------------------------------------------------------------------------------------
def add_index_parser(sub: Any) -> None:
    """Register ``index STORE``: build a FAISS index beside the store."""
    p = add_command(
        sub, "index", "build an ANN index (FAISS) beside a store, for --ann hits over 10^7+ tiles"
    )
    p.add_argument("store", help="embedding store folder (npy or Zarr)")
    p.add_argument("--kind", default="ivf", choices=["ivf", "ivf-sq8", "flat"])
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~sqrt(tiles))")
    p.set_defaults(func=cmd_index)


def cmd_index(args: argparse.Namespace) -> int:
    """Build and save the store's ANN index; returns the exit code."""
    from ..search.ann import AnnIndex, default_folder

    store = open_store(args, None)  # no model: the index only needs the vectors
    bar, update = progress_bar("index")
    try:
        index = AnnIndex.build(store, kind=args.kind, nlist=args.nlist, progress=update)
    finally:
        bar.close()  # also on an error or Ctrl+C, so the message is not printed into the bar
    folder = index.save(default_folder(store))
    print(
        f"index    {folder}  ({args.kind}, {index.nlist} lists, default nprobe {index.default_nprobe})"
    )
    return 0
