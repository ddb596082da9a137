"""Few-shot validation reports: what cross-validation found, as JSON, HTML and Markdown, all or none.

:class:`ValidationReport` is filled by :func:`~.validation.cross_validate`; this module renders
and writes it beside the class raster.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, check_output_target
from ..errors import InputError


@dataclass
class ValidationReport:
    """Polygon-grouped k-fold cross-validation of a few-shot classifier."""

    method: str  # "prototype" or "logreg"
    classes: list[str]  # all labelled classes; index i is row/column i of ``confusion``
    folds: int  # folds requested
    folds_used: int  # folds run (fewer when no class has that many polygons); 0 = none
    seed: int  # seed of the fold assignment
    polygons: dict[str, int]  # class -> polygon groups with tiles
    tiles: dict[str, int]  # class -> example tiles
    not_validatable: dict[str, str]  # class -> why it was not tested
    confusion: list[list[int]]  # [true][predicted] test-tile counts
    per_class: dict[str, dict[str, Any]]  # class -> precision, recall, f1, tested, folds
    accuracy: float | None  # share of test tiles classified right (None: nothing tested)
    balanced_accuracy: float | None  # mean recall over the tested classes
    baseline_accuracy: float | None  # training-fold majority class, same folds
    chance_accuracy: float | None  # expected accuracy of guessing by training class shares
    fold_accuracy: list[float]  # accuracy of each fold
    empty_polygons: int = 0  # labelled polygons with no valid tile centre inside
    min_confidence: float | None = None  # threshold that coverage/confident_accuracy use
    coverage: float | None = None  # share of test tiles at or above min_confidence
    confident_accuracy: float | None = None  # accuracy on those tiles
    warnings: list[str] = field(default_factory=list)  # what a reader should know

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    def summary(self) -> str:
        """One line: accuracy against the baseline, or why nothing was validated."""
        if self.accuracy is None:
            return "cross-validation: nothing to validate (" + "; ".join(self.warnings) + ")"
        return (
            f"cross-validated accuracy {self.accuracy:.3f} (majority baseline "
            f"{self.baseline_accuracy:.3f}, chance {self.chance_accuracy:.3f}, balanced "
            f"{self.balanced_accuracy:.3f}), "
            f"{self.folds_used} folds grouped by polygon"
        )


REPORT_SUFFIXES = (".json", ".html", ".md")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _tables(rep: ValidationReport) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Header lines, the per-class table and the confusion table (first row = header)."""
    head = [
        f"Method: {rep.method}; {rep.folds_used} of {rep.folds} folds, grouped by polygon, "
        f"stratified by class (seed {rep.seed})",
        f"Accuracy {_fmt(rep.accuracy)}; majority-class baseline {_fmt(rep.baseline_accuracy)}; "
        f"chance {_fmt(rep.chance_accuracy)}; balanced accuracy {_fmt(rep.balanced_accuracy)}",
    ]
    if rep.min_confidence is not None:
        head.append(
            f"At confidence >= {rep.min_confidence:g}: coverage {_fmt(rep.coverage)}, "
            f"accuracy {_fmt(rep.confident_accuracy)}"
        )
    head += [f"Warning: {w}" for w in rep.warnings]
    rows = [["class", "polygons", "tiles", "tested tiles", "precision", "recall", "F1"]]
    for c in rep.classes:
        m = rep.per_class[c]
        vals = [_fmt(m[k]) for k in ("precision", "recall", "f1")]
        rows.append([c, str(rep.polygons[c]), str(rep.tiles[c]), str(m["tested_tiles"]), *vals])
    conf = [["true \\ predicted", *rep.classes]]
    conf += [[c, *map(str, r)] for c, r in zip(rep.classes, rep.confusion, strict=True)]
    return head, rows, conf


def render_markdown(rep: ValidationReport) -> str:
    """The report as Markdown: summary lines, per-class table, confusion matrix."""
    head, rows, conf = _tables(rep)

    def table(t: list[list[str]]) -> list[str]:
        out = ["| " + " | ".join(t[0]) + " |", "|" + "---|" * len(t[0])]
        return out + ["| " + " | ".join(r) + " |" for r in t[1:]]

    lines = ["# Few-shot classification: cross-validation", "", *[f"- {h}" for h in head], ""]
    return "\n".join([*lines, *table(rows), "", "Confusion (tiles)", "", *table(conf), ""])


def render_html(rep: ValidationReport) -> str:
    """The report as a small self-contained HTML page."""
    head, rows, conf = _tables(rep)

    def table(t: list[list[str]]) -> str:
        th = "".join(f"<th>{html.escape(v)}</th>" for v in t[0])
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in t[1:]
        )
        return f"<table border='1' cellpadding='4'><tr>{th}</tr>{trs}</table>"

    items = "".join(f"<li>{html.escape(h)}</li>" for h in head)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>UniGeo validation</title>"
        f"</head><body><h1>Few-shot classification: cross-validation</h1><ul>{items}</ul>"
        f"{table(rows)}<h2>Confusion (tiles)</h2>{table(conf)}</body></html>\n"
    )


def report_paths(path: str | Path) -> dict[str, Path]:
    """The ``.json``, ``.html`` and ``.md`` files written for a report path of any of those."""
    path = Path(path)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise InputError(
            f"the validation report must end in {', '.join(REPORT_SUFFIXES)}, got '{path.name}'"
        )
    return {s: path if s == path.suffix.lower() else path.with_suffix(s) for s in REPORT_SUFFIXES}


def default_report_path(class_raster: str | Path) -> Path:
    """``<class raster stem>_validation.json`` next to the class raster."""
    p = Path(class_raster)
    return p.with_name(p.stem + "_validation.json")


def write_validation_report(
    path: str | Path, report: ValidationReport, provenance: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Write the report as JSON, HTML and Markdown beside each other; all three or none.

    Args:
        path: One of the three files (``.json``, ``.html`` or ``.md``); the others take its stem.
        report: The report.
        provenance: Extra keys for the JSON (model, store, ...).

    Returns:
        suffix -> path of the written files.
    """
    paths = report_paths(path)
    body = {**report.to_dict(), "provenance": dict(provenance or {})}
    texts = {
        ".json": json.dumps(body, indent=2, ensure_ascii=False) + "\n",
        ".html": render_html(report),
        ".md": render_markdown(report),
    }
    p = paths
    for target in p.values():
        check_output_target(target)  # never a folder, never inside a store
    # Nested temporaries: a failure in any write leaves all three targets untouched.
    with atomic_path(p[".json"]) as tj, atomic_path(p[".html"]) as th, atomic_path(p[".md"]) as tm:
        for tmp, suffix in ((tj, ".json"), (th, ".html"), (tm, ".md")):
            # a path that is not UTF-8 (in the provenance) is written as \udcxx escapes
            tmp.write_text(texts[suffix], encoding="utf-8", errors="backslashreplace")
    return paths
