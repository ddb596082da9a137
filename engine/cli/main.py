"""The command-line interface: ``python -m engine info|embed|heatmap|hits|index|classify|models``.

This module holds the entry point and the top-level parser; each command's arguments and
implementation live in :mod:`.embed` (info, embed), :mod:`.query` (heatmap, hits, index),
:mod:`.classify` and :mod:`.models` (the model manager), with shared helpers in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

from ..errors import EngineError, describe_os_error
from .classify import add_classify_parser
from .common import EPILOG
from .embed import add_embed_parser, add_info_parser
from .models import add_models_parser
from .query import add_heatmap_parser, add_hits_parser, add_index_parser

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: unwinds like Ctrl+C, so every cleanup runs."""


def main(argv: list[str] | None = None) -> int:
    """Run one CLI command.

    Every error is one line on stderr, never a traceback (``-v`` adds it for unexpected ones).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 on an :class:`EngineError` or a system error (printed as
        ``error: ...``), 1 on an unexpected error (a bug), 130 when interrupted and 143 when
        terminated (an embed keeps a resumable partial store; nothing else leaves a file).
    """
    _tolerant_streams()
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    with _sigterm_unwinds():
        try:
            return args.func(args)
        except EngineError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # a system error no writer turned into an EngineError
            print(f"error: {describe_os_error(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            print(_interrupted(args.cmd, e), file=sys.stderr)
            return 143 if isinstance(e, Terminated) else 130
        except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a trace
            if args.verbose:
                traceback.print_exc()
            print(
                f"error: unexpected {type(e).__name__}: {e} (a UniGeo bug: rerun with -v for "
                "the details and report it)",
                file=sys.stderr,
            )
            return 1


def _interrupted(cmd: str, e: KeyboardInterrupt) -> str:
    what = "terminated" if isinstance(e, Terminated) else "interrupted"
    if cmd == "embed":
        return f"{what}: a resumable partial store is kept; rerun the same command"
    return f"{what}: no output was written or changed"


def _tolerant_streams() -> None:
    """Print what the terminal cannot encode as escapes (``\\xd7``) instead of crashing.

    With ``LC_ALL=C`` or ``PYTHONIOENCODING=ascii`` stdout is ASCII: a '×' in a message or a
    file name that is not valid UTF-8 (surrogate-escaped) raised UnicodeEncodeError.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                reconfigure(errors="backslashreplace")


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only).

    Python's default for SIGTERM ends the process at once, so the temporary files and folders
    of a write in progress stayed behind; raised as an exception, the writers remove them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
