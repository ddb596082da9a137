"""The query CLI commands (``heatmap``, ``hits``, ``index``, ``classify``) and query building."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
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


def build_query(args: argparse.Namespace, store: Any, model: Any) -> Any:
    """Turn the query flags into one :class:`engine.query.Query`.

    Raises:
        InputError: No query flag was given, or one is malformed/unreadable.
    """
    from ..search import query as Q

    parts = _query_parts(args, store, model)
    if not parts:
        raise InputError("give a query: --text, --point, --gps, --photo or --region")
    query = Q.Query()
    for q, negative in parts:
        query.add(q.vector(), 1.0, negative=negative, description=q.description())
    return query


def _query_parts(args: argparse.Namespace, store: Any, model: Any) -> list[tuple[Any, bool]]:
    """Each flag's query as ``(query, negative)``, in the order the CLI always combined them."""
    from ..search import query as Q

    parts = [(Q.text_query(model, t), False) for t in args.text]
    parts += [(Q.text_query(model, t), True) for t in args.negative_text]
    for pt in args.point:
        x, y = floats(pt, 2, "--point")
        q = Q.point_query(store, x, y, crs=args.point_crs, gps_weight=args.gps_weight, model=model)
        parts.append((q, False))
    for pt in args.negative_point:
        x, y = floats(pt, 2, "--negative-point")
        parts.append((Q.point_query(store, x, y, crs=args.point_crs, model=model), True))
    for g in args.gps:
        lat, lon = floats(g, 2, "--gps")
        parts.append((Q.gps_query(model, lat, lon), False))
    parts += [(Q.photo_query(model, ph), False) for ph in args.photo]
    if args.region:
        parts.append((_region(args.region, store), False))
    return parts


def _region(path: str, store: Any) -> Any:
    """A region query: the mean of the store's tiles inside the polygons of ``path``."""
    from ..geo.geometry import union
    from ..geo.vector import read_features
    from ..search import query as Q

    feats, crs = read_features(path)
    if not feats:
        raise InputError(f"{path} holds no polygon")
    region = union((wkb for wkb, _ in feats), what=f"the polygons of {path}")
    return Q.region_query(store, region, crs=crs)


def _query_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The files a query command reads, by option, for :func:`~.cli_common.check_paths`."""
    return {"the store": args.store, "--region": args.region, "--photo": args.photo}


def _provenance(args: argparse.Namespace, model: Any, query: Any) -> dict:
    """Metadata written into every output: which model, store and query made it."""
    return {
        "model": f"{model.bundle.name} {model.bundle.version}",
        "model_hash": model.model_hash,
        "query": query.description(),
        "store": str(args.store),
    }


# -- heatmap ------------------------------------------------------------------------------------
def add_heatmap_parser(sub: Any) -> None:
    """Register ``heatmap STORE --model M --out TIF`` plus the query flags."""
    p = add_command(sub, "heatmap", "similarity heatmap GeoTIFF for a query")
    add_model_args(p)
    p.add_argument("--out", required=True, help="GeoTIFF to write")
    p.add_argument("--no-percentile", action="store_true", help="only the raw cosine band")
    add_query_args(p)
    p.set_defaults(func=cmd_heatmap)


def cmd_heatmap(args: argparse.Namespace) -> int:
    """Write the query's similarity heatmap GeoTIFF; returns the exit code."""
    from ..search.domain import domain_warning
    from ..search.streaming import heatmap_auto

    check_paths({"--out": args.out}, _query_inputs(args))
    model = load_model(args)
    store = open_store(args, model)
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
    from ..search.hits import write_hits
    from ..search.streaming import hits_auto

    check_paths({"--out": args.out}, _query_inputs(args))
    model = load_model(args)
    store = open_store(args, model)
    query = build_query(args, store, model)
    if args.ann:
        from ..search.ann import AnnIndex, top_k_ann

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


# -- classify -----------------------------------------------------------------------------------
def add_classify_parser(sub: Any) -> None:
    """Register ``classify STORE --model M --out TIF`` (zero-shot, or few-shot with --examples)."""
    p = add_command(sub, "classify", "land-use classification (zero-shot or from examples)")
    add_model_args(p)
    p.add_argument("--out", required=True, help="class GeoTIFF (paletted)")
    p.add_argument("--confidence", default=None, help="confidence GeoTIFF")
    p.add_argument(
        "--classes",
        default=None,
        help="JSON {class: [prompts]} or [class, ...] (default: the bundle's classes); prompts "
        "are used as written, a bare class name gets the bundle's prompt templates",
    )
    f = p.add_argument_group("few-shot (labelled polygons instead of prompts)")
    f.add_argument("--examples", default=None, help="labelled polygons (GeoPackage/GeoJSON/...)")
    f.add_argument("--class-field", default="class", help="label field of --examples")
    f.add_argument("--method", default="prototype", choices=["prototype", "logreg"])
    f.add_argument(
        "--report",
        default=None,
        help="validation report .json/.html/.md; all three are written (default: "
        "<out>_validation.json beside --out)",
    )
    f.add_argument("--folds", type=int, default=5, help="cross-validation folds (by polygon)")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="tiles below this softmax confidence get the extra class 'uncertain' (last index)",
    )
    p.set_defaults(func=cmd_classify)


def read_examples(path: str, field: str) -> tuple[list[tuple[Any, str]], str | None]:
    """``([(polygon WKB, label), ...], crs)`` of the labelled polygons in ``path``.

    Raises:
        InputError: Unreadable file, missing field, or no labelled polygon.
    """
    from ..geo.vector import read_features

    feats, crs = read_features(path, field)
    pairs = [(g, str(v).strip()) for g, v in feats if v is not None and str(v).strip()]
    if not pairs:
        raise InputError(f"no feature of {path} has a polygon and a '{field}' label")
    return pairs, crs


def read_classes(path: str) -> dict[str, list[str]]:
    """The ``--classes`` JSON file: ``{class: [prompts]}``, or a list of bare class names.

    Raises:
        InputError: The file is unreadable, not JSON, or of another shape.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"--classes must be a JSON file {{class: [prompts]}}: {e}") from None
    if isinstance(data, list) and all(isinstance(c, str) and c.strip() for c in data):
        return {c.strip(): [c.strip()] for c in data}  # bare names: templated by the engine
    if isinstance(data, dict) and all(isinstance(v, (list, str)) for v in data.values()):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in data.items()}
    raise InputError(
        f"--classes {path}: expected {{class: [prompts]}} or [class, ...], "
        f"got {type(data).__name__}"
    )


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify every tile; writes the class and confidence GeoTIFFs (and, few-shot, a report)."""
    from ..classify import land_use as C
    from ..classify import report as R
    from ..classify import validation as V

    if args.report and not args.examples:
        raise InputError("--report validates few-shot classification: give --examples too")
    conf = _classify_outputs(args)
    model = load_model(args)
    store = open_store(args, model)
    report = paths = None
    if args.examples:
        pairs, crs = read_examples(args.examples, args.class_field)
        result = C.from_examples(store, pairs, method=args.method, crs=crs)
        # validate before writing anything: a bad --report path fails early
        paths = R.report_paths(args.report or R.default_report_path(args.out))
        report = V.cross_validate(
            store, pairs, args.method, crs, folds=args.folds, min_confidence=args.min_confidence
        )
    else:
        prompts = read_classes(args.classes) if args.classes else None
        result = C.zero_shot(store, model, class_prompts=prompts)
    result = V.apply_min_confidence(result, args.min_confidence)
    prov = {
        "model": f"{model.bundle.name} {model.bundle.version}",
        "model_hash": model.model_hash,
        "classes": ", ".join(result.classes),
        "method": result.method,
    }
    C.write_classification(args.out, conf, store, result, provenance=prov)
    print(f"classes  {args.out}\nconfid.  {conf}")
    if args.min_confidence is not None:
        n_low, idx = result.params["uncertain_tiles"], result.params["uncertain_class"]
        print(f"         {n_low} tiles below {args.min_confidence:g} -> class {idx} 'uncertain'")
    if report is not None:
        R.write_validation_report(paths[".json"], report, provenance=prov)
        print(f"report   {paths['.json']} (+ .html, .md)\n         {report.summary()}")
    _print_notes(result, report)
    return 0


def _classify_outputs(args: argparse.Namespace) -> str:
    """Check every path ``classify`` will write (before any work); returns the confidence path."""
    from ..classify import report as R

    conf = args.confidence or str(Path(args.out).with_name(Path(args.out).stem + "_confidence.tif"))
    outputs = {"--out": args.out, "--confidence": conf}
    if args.examples:
        rep = R.report_paths(args.report or R.default_report_path(args.out))
        outputs.update({f"the {k} report": v for k, v in rep.items()})
    inputs = {"the store": args.store, "--examples": args.examples, "--classes": args.classes}
    check_paths(outputs, inputs)
    return conf


def _print_notes(result: Any, report: Any) -> None:
    """Zero-shot: temperature and margin; both: the warnings."""
    p = result.params
    if report is None:
        print(
            f"         softmax at temperature {p['temperature']:.4g} ({p['temperature_source']}); "
            f"median best-vs-second cosine gap {_num(p['cosine_margin_median'])}"
        )
    for w in [result.warning] if result.warning else (report.warnings if report else []):
        print(f"warning  {w}")


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
