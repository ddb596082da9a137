"""The command-line interface: ``python -m engine info|embed|heatmap|hits|index|classify|models``.

This module holds the entry point and the top-level parser; each command's arguments and
implementation live in ``cli_embed`` (info, embed), ``cli_query`` (heatmap, hits, index,
classify) and ``cli_models`` (the model manager), with shared helpers in ``cli_common``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .cli_common import EPILOG
from .cli_embed import add_embed_parser, add_info_parser, cmd_embed, cmd_info
from .cli_models import add_models_parser
from .cli_query import (
    add_classify_parser,
    add_heatmap_parser,
    add_hits_parser,
    add_index_parser,
    build_query,
    cmd_classify,
    cmd_heatmap,
    cmd_hits,
    cmd_index,
)
from .errors import EngineError

# Re-exported so that code importing these from engine.cli keeps working after the split.
__all__ = [
    "EPILOG",
    "build_query",
    "cmd_classify",
    "cmd_embed",
    "cmd_heatmap",
    "cmd_hits",
    "cmd_index",
    "cmd_info",
    "main",
    "make_parser",
]

log = logging.getLogger("unigeo")


def make_parser() -> argparse.ArgumentParser:
    """The ``python -m engine`` parser; each subcommand's ``func`` default runs it."""
    ap = argparse.ArgumentParser(
        prog="python -m engine",
        description="UniGeo engine: embed rasters, query them, classify.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    # The order here is the order `--help` lists the commands in.
    for add in (
        add_info_parser,
        add_embed_parser,
        add_heatmap_parser,
        add_hits_parser,
        add_index_parser,
        add_classify_parser,
        add_models_parser,
    ):
        add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one CLI command.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 on an :class:`EngineError` (printed as ``error: ...``),
        130 when interrupted (a resumable partial store is kept).
    """
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
