"""Timing helpers shared by the benchmarks: warm-up, repeats, medians, fits, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so `python bench/x.py` finds engine/ and training/
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls after warm-up."""

    median: float
    best: float
    repeats: int
    samples: tuple[float, ...] = ()

    def rate(self, items: float) -> float:
        """Items per second at the median time."""
        return items / self.median if self.median > 0 else float("inf")


def time_fn(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5) -> Timing:
    """Median and best wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    The median, not the mean, because the machine is shared: a neighbour's burst should move
    one sample, not the figure.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("need repeats >= 1 and warmup >= 0")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), repeats, tuple(times))


def time_interleaved(
    fns: dict[str, Callable[[], Any]], warmup: int = 1, repeats: int = 5
) -> dict[str, Timing]:
    """Like :func:`time_fn` for several variants, called round-robin.

    Interleaving puts a neighbour's burst of load on every variant alike, so the ratios
    between variants stay meaningful on a shared machine.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("need repeats >= 1 and warmup >= 0")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: Timing(statistics.median(v), min(v), repeats) for k, v in times.items()}


def time_blocks(
    fns: dict[str, Callable[[], Any]], warmup: int = 1, repeats: int = 6, rounds: int = 2
) -> dict[str, Timing]:
    """Variants timed in consecutive blocks (warm-up + calls), the block order alternating.

    For variants with their own spinning thread pools (torch's OpenMP, onnxruntime's): calling
    them round-robin lets one pool's spin-wait starve the next variant's threads on a small
    machine, so each block starts with its own warm-up. ``repeats`` is split over ``rounds``.
    """
    if repeats < 1 or warmup < 0 or rounds < 1:
        raise ValueError("need repeats >= 1, rounds >= 1 and warmup >= 0")
    times: dict[str, list[float]] = {k: [] for k in fns}
    per = max(1, repeats // rounds)
    for r in range(rounds):
        for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            times[k] += time_fn(fns[k], warmup, per).samples
    return {k: Timing(statistics.median(v), min(v), len(v)) for k, v in times.items()}


def fit_power(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Fit ``y = a * x**b`` by least squares in log-log space; return ``(b, a)``.

    ``b`` near 1 means linear growth.
    """
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    if lx.size < 2:
        raise ValueError("need at least two points to fit an exponent")
    b, log_a = np.polyfit(lx, ly, 1)
    return float(b), float(np.exp(log_a))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=5, check=False,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, core count, memory, library versions and git revision of this run."""
    import onnxruntime

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "ort_providers": onnxruntime.get_available_providers(),
        "git": _git_rev(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        info["torch"] = "not installed"
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * size / 1e9, 1)
    except (ValueError, OSError):
        pass
    return info


def md_table(rows: Sequence[dict[str, Any]], cols: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts) with columns ``cols`` (default: the first row's)."""
    if not rows:
        return "_(no rows)_\n"
    cols = list(cols or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
