"""Procedural street-level views "seen from inside" a land-use class (clearly synthetic).

A view is sky above a horizon and class-specific ground and objects below/on it: trees for
forest, houses with windows for residential, large grey halls for industrial, converging crop
rows for cropland, water with waves and a far shore, and so on. The images are meant to carry
the class signal for the synthetic world and pseudo ground views, not to look real.
"""

from __future__ import annotations

import numpy as np

from .landuse import (
    BARE,
    CROPLAND,
    FOREST,
    GRASSLAND,
    INDUSTRIAL,
    RESIDENTIAL,
    WATER,
)
from .landuse import (
    SYNTH_CLASS_NAMES as CLASS_NAMES,
)

GROUND_RGB = {
    WATER: (0.10, 0.25, 0.45),
    FOREST: (0.15, 0.30, 0.10),
    CROPLAND: (0.60, 0.55, 0.20),
    GRASSLAND: (0.30, 0.55, 0.20),
    RESIDENTIAL: (0.45, 0.45, 0.45),
    INDUSTRIAL: (0.35, 0.35, 0.37),
    BARE: (0.60, 0.48, 0.33),
}


def render_street(cls: int, size: int, rng: np.random.Generator, far_cls: int = -1) -> np.ndarray:
    """Render a [3, size, size] float32 view in [0, 1] of land-use class ``cls``.

    Args:
        cls: land-use class index (see :data:`CLASS_NAMES`).
        size: output side in pixels.
        rng: random generator (objects, horizon, colours jitter).
        far_cls: class shown on the far horizon (the second class of the place), -1 none.
    """
    if not 0 <= cls < len(CLASS_NAMES):
        raise ValueError(f"unknown land-use class {cls}")
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = int(h * rng.uniform(0.38, 0.52))
    img = np.empty((3, h, w), np.float32)
    sky_top, sky_low = np.array([0.35, 0.55, 0.85]), np.array([0.75, 0.85, 0.95])
    t = np.clip(yy / max(horizon, 1), 0, 1)
    for c in range(3):
        img[c] = sky_top[c] + (sky_low[c] - sky_top[c]) * t
    ground = yy >= horizon
    depth = np.clip((yy - horizon) / max(h - horizon, 1), 1e-3, 1)  # 0 far .. 1 near
    base = np.array(GROUND_RGB[cls]) * rng.uniform(0.9, 1.1, 3)
    for c in range(3):
        img[c][ground] = base[c] * (0.75 + 0.25 * depth[ground])
    if far_cls >= 0:
        band = (yy >= horizon - max(2, h // 20)) & (yy < horizon)
        for c in range(3):
            img[c][band] = GROUND_RGB[far_cls][c] * 0.8
    _DRAW[cls](img, yy, xx, horizon, depth, rng)
    return np.clip(img, 0, 1)


def _put(img: np.ndarray, m: np.ndarray, rgb: tuple[float, float, float]) -> None:
    for c in range(3):
        img[c][m] = rgb[c]


def _water(img, yy, xx, hz, depth, rng) -> None:
    waves = 0.5 + 0.5 * np.sin(yy * (1.5 / np.maximum(depth, 0.05)) + rng.uniform(0, 6))
    m = yy >= hz
    for c, k in enumerate((0.05, 0.08, 0.12)):
        img[c][m] += k * waves[m]


def _forest(img, yy, xx, hz, depth, rng) -> None:
    h, w = yy.shape
    for _ in range(int(rng.integers(6, 12))):
        cx, half = rng.uniform(0, w), rng.uniform(0.05, 0.12) * w
        top, base = hz - rng.uniform(0.2, 0.4) * h, hz + rng.uniform(0.0, 0.3) * (h - hz)
        frac = np.clip((yy - top) / max(base - top, 1), 0, 1)
        tri = (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half * frac)
        g = rng.uniform(0.22, 0.4)
        _put(img, tri, (0.05, g, 0.06))


def _cropland(img, yy, xx, hz, depth, rng) -> None:
    h, w = yy.shape
    vx = rng.uniform(0.3, 0.7) * w
    slope = (xx - vx) / np.maximum(yy - hz + 1, 1)
    rows = np.sin(slope * rng.uniform(8, 14)) > 0.3
    m = (yy > hz) & rows
    _put(img, m, (0.30, 0.50, 0.12))


def _grassland(img, yy, xx, hz, depth, rng) -> None:
    h, w = yy.shape
    for _ in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0, w), hz + rng.uniform(0, 0.2) * (h - hz), rng.uniform(1, 3)
        _put(img, (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r, (0.15, 0.35, 0.10))


def _buildings(img, yy, xx, hz, rng, n, wide, tall, wall, roof, windows) -> None:
    h, w = yy.shape
    for _ in range(n):
        bw, bh = rng.uniform(*wide) * w, rng.uniform(*tall) * h
        x0 = rng.uniform(-0.1, 0.9) * w
        base = hz + rng.uniform(0.05, 0.2) * (h - hz)
        body = (xx >= x0) & (xx < x0 + bw) & (yy >= base - bh) & (yy < base)
        _put(img, body, tuple(np.array(wall) * rng.uniform(0.85, 1.15)))
        if roof is not None:
            frac = (base - bh - yy) / max(bh * 0.4, 1)
            cx = x0 + bw / 2
            tri = (frac >= 0) & (frac <= 1) & (np.abs(xx - cx) <= bw / 2 * (1 - frac))
            _put(img, tri, roof)
        if windows:
            win = body & ((xx - x0) % 5 < 2) & ((base - yy) % 6 < 2) & (base - yy > 2)
            _put(img, win, (0.15, 0.2, 0.3))


def _residential(img, yy, xx, hz, depth, rng) -> None:
    n = int(rng.integers(3, 6))
    _buildings(
        img, yy, xx, hz, rng, n, (0.15, 0.3), (0.12, 0.25), (0.85, 0.8, 0.7), (0.6, 0.2, 0.15), True
    )


def _industrial(img, yy, xx, hz, depth, rng) -> None:
    n = int(rng.integers(1, 3))
    _buildings(img, yy, xx, hz, rng, n, (0.45, 0.8), (0.2, 0.35), (0.7, 0.72, 0.75), None, False)
    h, w = yy.shape
    cx = rng.uniform(0.1, 0.9) * w
    _put(img, (np.abs(xx - cx) < 1.5) & (yy > hz - 0.45 * h) & (yy < hz), (0.4, 0.3, 0.3))


def _bare(img, yy, xx, hz, depth, rng) -> None:
    h, w = yy.shape
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, w), hz + rng.uniform(0, 1) * (h - hz)
        r = 0.5 + 2.5 * (cy - hz) / max(h - hz, 1)
        _put(img, (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r, (0.45, 0.42, 0.40))


_DRAW = {
    WATER: _water,
    FOREST: _forest,
    CROPLAND: _cropland,
    GRASSLAND: _grassland,
    RESIDENTIAL: _residential,
    INDUSTRIAL: _industrial,
    BARE: _bare,
}
