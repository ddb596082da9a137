"""Training metrics: an append-only CSV and PNG curves drawn from it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from engine.atomic import atomic_path


class MetricsLog:
    """Rows of ``{name: value}``; columns are the union of keys seen so far.

    The CSV is rewritten atomically on every flush, so a crash never leaves a torn file and
    later rows may add columns (a pair that first appears mid-run).
    """

    def __init__(self, path: str | Path, rows: list[dict[str, float]] | None = None) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = list(rows or [])

    @classmethod
    def resume(cls, path: str | Path, upto_step: int) -> MetricsLog:
        """Re-read an existing CSV, keeping rows up to ``upto_step`` (for resumed runs)."""
        path = Path(path)
        rows: list[dict[str, float]] = []
        if path.is_file():
            with path.open(newline="") as f:
                for r in csv.DictReader(f):
                    row = {k: float(v) for k, v in r.items() if v not in ("", None)}
                    if row.get("step", math.inf) <= upto_step:
                        rows.append(row)
        return cls(path, rows)

    def add(self, row: dict[str, float]) -> None:
        self.rows.append({k: float(v) for k, v in row.items()})

    def flush(self) -> None:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        with atomic_path(self.path, suffix=".csv.part") as tmp:
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                w.writerows(self.rows)

    def plot(self, png: str | Path) -> Path:
        """Loss (total and per pair), learning rate and temperature against step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        png = Path(png)
        steps = [r["step"] for r in self.rows]
        fig, axes = plt.subplots(1, 4, figsize=(19, 4))
        for key in sorted({k for r in self.rows for k in r}):
            if key == "loss" or key.startswith("loss/"):
                pts = [(r["step"], r[key]) for r in self.rows if key in r]
                axes[0].plot(*zip(*pts, strict=True), label=key, lw=2 if key == "loss" else 1)
        axes[0].set(title="loss", xlabel="step")
        axes[0].legend(fontsize=7)
        axes[1].plot(steps, [r.get("lr", math.nan) for r in self.rows])
        axes[1].set(title="learning rate", xlabel="step")
        axes[2].plot(steps, [r.get("temperature", math.nan) for r in self.rows])
        axes[2].set(title="temperature (1 / logit scale)", xlabel="step")
        for key in ("val/R@1", "val/R@10"):
            pts = [(r["step"], r[key]) for r in self.rows if key in r]
            if pts:
                axes[3].plot(*zip(*pts, strict=True), marker="o", label=key)
                axes[3].legend(fontsize=7)
        axes[3].set(title="held-out retrieval (mean over pairs)", xlabel="step", ylim=(0, 1))
        fig.tight_layout()
        with atomic_path(png, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        return png
