"""Spatial train/val/test splits: by area, or by a block grid in metres with a buffer.

Random splits leak: neighbouring chips share pixels and context, so a test chip next to a
training chip measures memorisation. Block splits assign whole blocks of a metric grid to one
split and drop (split None) every sample whose chip footprint, grown by ``buffer_m``, reaches a
block of another split. A kept test chip and a kept training chip are therefore at least
``2 * buffer_m`` apart: they neither overlap nor touch.

The block grid lives in EPSG:6933 (EASE-Grid 2.0 global, equal-area, metres). It is a
cylindrical projection (x depends only on longitude, y only on latitude), so a latitude /
longitude box maps to an axis-aligned rectangle and the block test is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyproj import Transformer

from engine.errors import InputError

EARTH_M_PER_DEG = 111_320.0  # metres per degree of latitude (mean); used for chip footprints
BLOCK_CRS = "EPSG:6933"
SPLIT_NAMES = ("train", "val", "test")


def chip_footprint(
    lat: np.ndarray, lon: np.ndarray, gsd_m: np.ndarray, size_px: np.ndarray, grow_m: float = 0
) -> np.ndarray:
    """The WGS84 box (west, south, east, north) of square chips centred on (lat, lon).

    Args:
        lat, lon: chip centres in degrees.
        gsd_m: ground sample distance in metres (0 for point samples such as photos).
        size_px: chip side in pixels.
        grow_m: grow every side by this many metres.

    Returns:
        float64 array [N, 4].
    """
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    half = np.asarray(gsd_m, np.float64) * np.asarray(size_px, np.float64) / 2 + grow_m
    dlat = half / EARTH_M_PER_DEG
    dlon = half / (EARTH_M_PER_DEG * np.maximum(np.cos(np.radians(lat)), 1e-6))
    return np.stack([lon - dlon, lat - dlat, lon + dlon, lat + dlat], axis=1)


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise InputError(f"split fractions must be 3 non-negative numbers summing to 1, got {f}")
    return f


def block_splits(
    lat: np.ndarray,
    lon: np.ndarray,
    gsd_m: np.ndarray,
    size_px: np.ndarray,
    *,
    block_m: float = 2000.0,
    buffer_m: float = 50.0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> list[str | None]:
    """Assign samples to splits by blocks of ``block_m`` metres; drop chips near other splits.

    Args:
        lat, lon, gsd_m, size_px: per-sample chip centre, GSD and side (see chip_footprint).
        block_m: block side in metres on the EASE-Grid 2.0.
        buffer_m: margin in metres; must be > 0 so kept chips of different splits never touch.
        fractions: share of blocks in train, val, test (blocks are drawn with a seeded hash).
        seed: changes which blocks go where.

    Returns:
        One of "train" / "val" / "test" per sample, or None for dropped (buffer) samples.
    """
    if not block_m > 0 or not buffer_m > 0:
        raise InputError("block_m and buffer_m must be positive (a zero buffer lets chips touch)")
    frac = _check_fractions(fractions)
    bx0, by0, bx1, by1, bcx, bcy = _block_ranges(lat, lon, gsd_m, size_px, block_m, buffer_m)
    out: list[str | None] = []
    cache: dict[tuple[int, int], int] = {}
    for i in range(len(bcx)):
        own = _block_split(int(bcx[i]), int(bcy[i]), frac, seed, cache)
        same = all(
            _block_split(bx, by, frac, seed, cache) == own
            for bx in range(int(bx0[i]), int(bx1[i]) + 1)
            for by in range(int(by0[i]), int(by1[i]) + 1)
        )
        out.append(SPLIT_NAMES[own] if same else None)
    return out


def _block_ranges(lat, lon, gsd_m, size_px, block_m: float, buffer_m: float) -> list[np.ndarray]:
    """Block indices of each grown footprint's corners (x0, y0, x1, y1) and of its centre."""
    box = chip_footprint(lat, lon, gsd_m, size_px, grow_m=buffer_m)
    tf = Transformer.from_crs("EPSG:4326", BLOCK_CRS, always_xy=True)
    n = len(box)
    # One call for corners and centres (pyproj treats 1-element arrays as scalars).
    xs = np.concatenate([box[:, 0], box[:, 2], np.asarray(lon, np.float64)])
    ys = np.clip(np.concatenate([box[:, 1], box[:, 3], np.asarray(lat, np.float64)]), -85, 85)
    px, py = (np.floor(np.asarray(v) / block_m) for v in tf.transform(xs, ys))
    return [px[:n], py[:n], px[n : 2 * n], py[n : 2 * n], px[2 * n :], py[2 * n :]]


def _block_split(bx: int, by: int, frac: np.ndarray, seed: int, cache: dict) -> int:
    """A block's split, drawn from a hash of (seed, block) so it never depends on the data."""
    key = (bx, by)
    if key not in cache:
        u = np.random.default_rng((seed & 0xFFFFFFFF, bx & 0xFFFFFFFF, by & 0xFFFFFFFF)).random()
        cache[key] = int(np.searchsorted(np.cumsum(frac), u, side="right").clip(0, 2))
    return cache[key]


def area_splits(
    area_ids: Sequence[str],
    *,
    val_areas: Sequence[str] = (),
    test_areas: Sequence[str] = (),
) -> list[str]:
    """Whole areas go to one split: the named val/test areas, every other area to train."""
    overlap = set(val_areas) & set(test_areas)
    if overlap:
        raise InputError(f"areas {sorted(overlap)} are named for both val and test")
    known = set(area_ids)
    unknown = (set(val_areas) | set(test_areas)) - known
    if unknown:
        raise InputError(
            f"split areas {sorted(unknown)} are not in the data (have {sorted(known)})"
        )
    return ["val" if a in val_areas else "test" if a in test_areas else "train" for a in area_ids]


def leaking_pairs(
    lat: np.ndarray,
    lon: np.ndarray,
    gsd_m: np.ndarray,
    size_px: np.ndarray,
    splits: Sequence[str | None],
    a: str = "test",
    b: str = "train",
) -> list[tuple[int, int]]:
    """Index pairs (i in split a, j in split b) whose chip footprints overlap or touch."""
    from shapely import STRtree, box

    fp = chip_footprint(lat, lon, gsd_m, size_px)
    s = np.asarray(splits, dtype=object)
    ia, ib = np.flatnonzero(s == a), np.flatnonzero(s == b)
    if not len(ia) or not len(ib):
        return []
    tree = STRtree([box(*fp[j]) for j in ib])
    pairs = []
    for i in ia:
        for k in tree.query(box(*fp[i]), predicate="intersects"):
            pairs.append((int(i), int(ib[k])))
    return pairs
