"""Before an embedding starts: its tile count and time, and whether the raster suits the model.

A raster far coarser (or finer) than the imagery the model was trained on is resampled to the
encoder's pixel size without complaint: a 1 km raster becomes 200x more 5 m tiles (641,601 tiles,
about an hour) of made-up detail. :func:`plan_embedding` computes, once for every front end, the
tile count, an estimated time (from throughputs earlier stores recorded, else a conservative
constant) and the warning to show; the CLI prints it, Processing pushes it to the feedback and the
GUI puts it in the message bar and, for a very large job, asks before it starts.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..grid import TileGrid
from ..model.bundle_spec import TrainingDomain
from ..raster.tiling import raster_gsd_m
from ..search.domain import grid_gsd_m, gsd_out_of_range

ASSUMED_TILES_PER_S = 150.0
"""Tiles per second when no earlier store recorded a rate. docs/PERFORMANCE.md measured 404-544
tiles/s end to end for the default bundle on 2 CPU cores (sections 2, 5 and 7); a third of that
leaves room for a busy machine, warped reads and network files, so the estimate errs long."""
LARGE_JOB_S = 15 * 60.0
"""Jobs estimated above this are 'very large': the GUI asks before it starts them."""
MIN_TILES_FOR_RATE = 64
"""A store of fewer tiles timed mostly start-up; its rate is not used for estimates."""
_RATES_USED = 20  # the newest stores' rates are taken (median): the machine may have changed


@dataclass(frozen=True)
class EmbedPlan:
    """What an embedding will cost, and why it may be a bad idea (see :func:`plan_embedding`)."""

    name: str  # the raster, for messages
    tiles: int  # tiles of the grid (the resumable part of a rerun is not subtracted)
    tiles_per_s: float  # the rate the time is estimated with
    measured: bool  # True: the rate was recorded by earlier stores; False: the assumed constant
    source_gsd_m: float | None  # the raster's own pixel size in metres (None: unknown)
    grid_gsd_m: float  # the pixel size tiles are read at
    gsd_range_m: tuple[float, float]  # the model's training range (aerial)
    out_of_range: bool  # the raster's pixel size lies outside the training range

    @property
    def seconds(self) -> float:
        return self.tiles / self.tiles_per_s

    @property
    def large(self) -> bool:
        """True for a job long enough that a GUI should ask before starting it."""
        return self.seconds > LARGE_JOB_S

    def summary(self) -> str:
        """``"641,601 tiles, about 1 h 11 min at ~150 tiles/s (assumed)"``."""
        how = "measured on earlier stores" if self.measured else "assumed"
        return (
            f"{self.tiles:,} tiles, {duration_text(self.seconds)} at "
            f"~{self.tiles_per_s:,.0f} tiles/s ({how})"
        )

    def warning(self) -> str | None:
        """One paragraph for the user when the raster's pixel size or the job's size is a
        problem, else None. Says what, why, and what to do."""
        if self.out_of_range and self.source_gsd_m is not None:
            lo, hi = self.gsd_range_m
            factor = self.source_gsd_m / self.grid_gsd_m
            how = f"{factor:,.0f}x finer" if factor >= 1 else f"{1 / factor:,.0f}x coarser"
            return (
                f"'{self.name}' has {self.source_gsd_m:,.4g} m pixels, outside the {lo:g}-"
                f"{_hi(hi)} m range the model was trained on: it will be resampled to "
                f"{self.grid_gsd_m:g} m ({how}), {self.summary()}. Resample the raster into "
                f"{lo:g}-{_hi(hi)} m, embed a smaller extent, or expect weak results."
            )
        if self.large:
            return (
                f"Embedding '{self.name}' needs {self.summary()}. Choose a smaller extent or a "
                "larger stride to make it shorter; an interrupted run resumes where it stopped."
            )
        return None


def _hi(hi: float) -> str:
    return "any" if math.isinf(hi) else f"{hi:g}"


def duration_text(seconds: float) -> str:
    """``"about 1 h 11 min"``, ``"about 12 min"``, ``"about 40 s"``, ``"under a second"``."""
    s = max(0.0, float(seconds))
    if s < 1:
        return "under a second"
    if s < 90:
        return f"about {s:.0f} s"
    minutes = round(s / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"


def plan_embedding(
    reader: Any,
    grid: TileGrid,
    domain: TrainingDomain,
    *,
    aerial: bool = True,
    tiles_per_s: float | None = None,
) -> EmbedPlan:
    """The tile count, estimated time and pixel-size check of embedding ``reader`` on ``grid``.

    Args:
        reader: the raster (a :class:`~engine.raster.reader.RasterReader`: ``bounds``, ``res``, ``crs``).
        grid: the tile grid it will be embedded on.
        domain: the model's training domain (``model.bundle.training_domain``).
        aerial: check the pixel size against the aerial training range (False for a DSM).
        tiles_per_s: a measured rate (e.g. :func:`recorded_tiles_per_s`); None or not a
            positive number: :data:`ASSUMED_TILES_PER_S`.
    """
    measured = tiles_per_s is not None and math.isfinite(tiles_per_s) and tiles_per_s > 0
    rate = float(tiles_per_s) if measured else ASSUMED_TILES_PER_S
    grid_m = grid_gsd_m(grid)
    source_m = _source_gsd_m(reader, grid, grid_m)
    out = False
    if aerial and source_m is not None:
        out = gsd_out_of_range(source_m, domain)
    return EmbedPlan(
        name=_name(reader),
        tiles=grid.n_tiles,
        tiles_per_s=rate,
        measured=bool(measured),
        source_gsd_m=source_m,
        grid_gsd_m=grid_m,
        gsd_range_m=domain.gsd_range_m,
        out_of_range=out,
    )


def _source_gsd_m(reader: Any, grid: TileGrid, grid_m: float) -> float | None:
    """The raster's pixel size in metres (its size in grid-CRS units times the unit's metres)."""
    try:
        native = raster_gsd_m(reader, grid.crs)
    except (EngineError, AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None  # only for a warning: never fail the job over it
    value = native * grid_m / grid.gsd
    return value if math.isfinite(value) and value > 0 else None


def _name(reader: Any) -> str:
    paths = getattr(reader, "paths", None)
    if paths and len(paths) > 1:
        return f"{Path(str(paths[0])).name} and {len(paths) - 1} more"
    path = getattr(reader, "path", None)
    if path is not None:
        return Path(str(path)).name
    return str(getattr(reader, "name", None) or "the raster")


def recorded_tiles_per_s(
    folders: Iterable[str | Path], model_hash: str | None = None
) -> float | None:
    """The median embedding rate earlier stores recorded (``meta.tiles_per_s``), or None.

    Args:
        folders: store folders, or folders holding stores (one level down), e.g. the store cache
            or the parent folder of a CLI ``--out``. Unreadable entries are skipped.
        model_hash: only stores embedded with this model count (another model runs at another
            speed); None: any.
    """
    found: list[tuple[str, float]] = []
    for folder in folders:
        for meta in _store_files(Path(folder)):
            rate = _rate(meta, model_hash)
            if rate is not None:
                found.append(rate)
    if not found:
        return None
    newest = sorted(found, reverse=True)[:_RATES_USED]
    return float(statistics.median(r for _, r in newest))


def _store_files(folder: Path) -> list[Path]:
    try:
        if (folder / "store.json").is_file():
            return [folder / "store.json"]
        if not folder.is_dir():
            return []
        return [p / "store.json" for p in folder.iterdir() if (p / "store.json").is_file()]
    except OSError:
        return []


def _rate(path: Path, model_hash: str | None) -> tuple[str, float] | None:
    """``(created, tiles_per_s)`` of one store.json, when it is usable for an estimate."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        meta = info.get("meta") or {}
        rate, tiles = meta.get("tiles_per_s"), meta.get("tiles_this_run")
        same = model_hash is None or info.get("model_hash") == model_hash
        ok = (
            isinstance(rate, (int, float)) and isinstance(tiles, int) and not isinstance(rate, bool)
        )
        if same and ok and tiles >= MIN_TILES_FOR_RATE and math.isfinite(rate) and rate > 0:
            return str(info.get("created", "")), float(rate)
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # a damaged store says nothing about speed
    return None
