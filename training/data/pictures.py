"""Pictures of chips for the dataset reports: an RGB rendering of any band set, a compact PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.atomic import atomic_path


def save_png(fig, out_png: Path, dpi: int) -> Path:
    """Save a figure as a 256-colour PNG (a third of the size; these live in docs/)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    im = Image.open(buf).convert("RGB").quantize(256)
    with atomic_path(out_png, suffix=".png") as tmp:
        im.save(tmp, format="PNG", optimize=True)
    return out_png


def render_rgb(chip: np.ndarray, bands: list[str] | tuple[str, ...]) -> np.ndarray:
    """An H x W x 3 picture of a chip: true colour, else false colour (NIR, red, green).

    Each channel is stretched to its own 2-98 % range; NaN shows black.
    """
    names = list(bands)
    have = [b for b in names if np.isfinite(chip[names.index(b)]).any()]
    for combo in (("red", "green", "blue"), ("nir", "red", "green"), ("swir1", "nir", "red")):
        if all(b in have for b in combo):
            pick = [names.index(b) for b in combo]
            break
    else:
        pick = [names.index(b) for b in (have or names)[:3]]
        pick += pick[-1:] * (3 - len(pick))
    x = np.asarray(chip[pick], np.float32)
    if np.isfinite(x).any():
        lo = np.nanpercentile(x, 2, axis=(1, 2), keepdims=True)
        hi = np.nanpercentile(x, 98, axis=(1, 2), keepdims=True)
        x = np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    return np.nan_to_num(x).transpose(1, 2, 0)
