"""The ``classify`` CLI command: zero-shot from prompts, or few-shot from labelled polygons."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import pipeline
from ..classify.report import default_report_path
from ..errors import InputError
from ..geo.vector import read_features
from .common import add_command, add_model_args, check_paths, load_model, open_store


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
    if args.report and not args.examples:
        raise InputError("--report validates few-shot classification: give --examples too")
    conf = _classify_outputs(args)
    model = load_model(args)
    store = open_store(args, model)
    report = paths = None
    if args.examples:
        pairs, crs = read_examples(args.examples, args.class_field)
        spec = pipeline.ClassifySpec(None, tuple(pairs), crs, args.method, args.min_confidence)
        result = pipeline.classify(store, model, spec)
        # validate before writing anything: a bad --report path fails early
        paths = pipeline.report_paths(args.report or default_report_path(args.out))
        report = pipeline.validate(store, spec, folds=args.folds)
    else:
        prompts = read_classes(args.classes) if args.classes else None
        spec = pipeline.ClassifySpec(prompts, min_confidence=args.min_confidence)
        result = pipeline.classify(store, model, spec)
    prov = pipeline.provenance(model, classes=", ".join(result.classes), method=result.method)
    pipeline.write_classification(args.out, conf, store, result, provenance=prov)
    print(f"classes  {args.out}\nconfid.  {conf}")
    if args.min_confidence is not None:
        n_low, idx = result.params["uncertain_tiles"], result.params["uncertain_class"]
        print(f"         {n_low} tiles below {args.min_confidence:g} -> class {idx} 'uncertain'")
    if report is not None:
        pipeline.write_validation_report(paths[".json"], report, provenance=prov)
        print(f"report   {paths['.json']} (+ .html, .md)\n         {report.summary()}")
    _print_notes(result, report)
    return 0


def _classify_outputs(args: argparse.Namespace) -> str:
    """Check every path ``classify`` will write (before any work); returns the confidence path."""
    conf = args.confidence or str(Path(args.out).with_name(Path(args.out).stem + "_confidence.tif"))
    outputs = {"--out": args.out, "--confidence": conf}
    if args.examples:
        rep = pipeline.report_paths(args.report or default_report_path(args.out))
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
