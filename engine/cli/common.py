"""Helpers shared by the CLI commands: examples epilog, subparser factory, model/store loading."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import pipeline
from ..atomic import check_output_target
from ..errors import InputError
from ..store.window import DEFAULT_MAX_NODATA

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
  python -m engine models install --default     # the default model into the QGIS profile
"""


def add_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add one subcommand parser that carries the shared examples epilog.

    Args:
        sub: The ``add_subparsers()`` action of the top-level parser.
        name: Subcommand name (``embed``, ``heatmap``, ...).
        help_text: One-line help shown in ``python -m engine --help``.

    Returns:
        The new subparser; the caller adds its arguments and ``func`` default.
    """
    # Every subcommand repeats the examples so that `<cmd> --help` alone is enough to get going.
    return sub.add_parser(
        name,
        help=help_text,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_model_args(p: argparse.ArgumentParser, store: bool = True) -> None:
    """Add the arguments most commands share: the store, the model bundle and the runtime.

    Args:
        p: The subcommand parser.
        store: Also add the positional ``store`` argument (first, before ``--model``).
    """
    if store:
        p.add_argument("store", help="embedding store folder (from 'embed')")
        p.add_argument(
            "--max-nodata",
            type=float,
            default=DEFAULT_MAX_NODATA,
            metavar="F",
            help=f"skip tiles with a larger fraction of no data (default {DEFAULT_MAX_NODATA})",
        )
    p.add_argument("--model", required=True, help="model bundle folder")
    p.add_argument("--provider", default=None, help="auto (default), cpu, cuda or tensorrt")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference")


def floats(text: str, n: int, what: str) -> list[float]:
    """Parse ``n`` comma-separated numbers given to option ``what``.

    Raises:
        InputError: The text is not exactly ``n`` numbers.
    """
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} must be {n} comma-separated numbers, got '{text}'") from None
    if len(vals) != n:
        raise InputError(f"{what} must be {n} comma-separated numbers, got '{text}'")
    return vals


def ints(text: str, what: str) -> list[int]:
    """Parse comma-separated whole numbers given to option ``what`` (e.g. ``--bands 1,2,3``).

    Raises:
        InputError: The text is not a list of whole numbers.
    """
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(
            f"{what} must be comma-separated whole numbers (e.g. 1,2,3,4), got '{text}'"
        ) from None


def check_paths(outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Refuse two outputs on one path, an output that is one of the inputs, and output paths
    that cannot be written (a folder, a path inside a store): before any work is done.

    Args:
        outputs: option name -> output path (None: not given).
        inputs: option name -> input path or list of paths (None: not given).

    Raises:
        InputError: naming both options; nothing has been read or written yet.
    """
    seen: dict[Path, str] = {}
    for name, value in inputs.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                seen.setdefault(_key(v), name)
    for name, value in outputs.items():
        if value is None:
            continue
        check_output_target(Path(value))
        other = seen.get(_key(value))
        if other is not None:
            raise InputError(
                f"{name} {value} is also {other}: it would replace it; write to another path"
            )
        seen[_key(value)] = name


def _key(path: Any) -> Path:
    """One identity per file: the resolved path (symbolic links followed where they exist)."""
    try:
        return Path(path).resolve()
    except OSError:  # an unresolvable path (a loop, too long): compare as given
        return Path(path).absolute()


def progress_bar(total_label: str) -> tuple[Any, Callable[[float], None]]:
    """A terminal progress bar and a ``progress(fraction)`` callback that drives it.

    Returns:
        ``(bar, update)``; the caller closes ``bar`` when done.
    """
    from tqdm import tqdm

    # Per-mille steps: engine callbacks report fractions, not counts.
    bar = tqdm(total=1000, desc=total_label, unit="‰", dynamic_ncols=True, leave=True)

    def update(fraction: float) -> None:
        bar.n = int(max(0.0, min(1.0, fraction)) * 1000)
        bar.refresh()

    return bar, update


def load_model(args: argparse.Namespace) -> Any:
    """Load the bundle named by ``--model`` with ``--provider``/``--threads``."""
    return pipeline.load_model(args.model, args.provider, args.threads)


def open_store(args: argparse.Namespace, model: Any) -> Any:
    """Open ``args.store`` (tiles over ``--max-nodata`` left out), embedded with ``model``.

    Raises:
        StoreError: The store comes from another model; its vectors would be meaningless here.
    """
    return pipeline.open_store(args.store, model, getattr(args, "max_nodata", None))
