"""Spatial train/val/test splits: by area, or by a block grid in metres with a buffer.

Random splits leak: neighbouring chips share pixels and context, so a test chip next to a
training chip measures memorisation. Block splits assign whole blocks of a metric grid to one
split and drop (split None) every sample whose chip footprint, grown by ``buffer_m``, reaches a
block of another split. A kept test chip and a kept training chip are therefore at least
``2 * buffer_m`` apart: they neither overlap nor touch.

The block grid lives in EPSG:6933 (EASE-Grid 2.0 global, equal-area, metres). It is a
cylindrical projection (x depends only on longitude, y only on latitude), so a latitude /
longitude box maps to an axis-aligned rectangle and the block test is exact.

A block grid only separates chips that were split on it. A build mixes sources whose chips
differ by orders of magnitude (2 m local orthophotos, 7.4 km Blue Marble chips), and coarse
chips need coarse blocks, so one coarse training chip can contain fine test chips of another
grid. :class:`LeakGuard` closes that gap across grids: fed every sample in turn, it moves a chip
to split None when its buffered footprint meets a kept chip of another split. Fed finest chips
first, it drops the coarse chip (one sample) rather than the many fine chips inside it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from pyproj import Transformer

from engine.errors import InputError

EARTH_M_PER_DEG = 111_320.0  # metres per degree of latitude (mean); used for chip footprints
BLOCK_CRS = "EPSG:6933"
SPLIT_NAMES = ("train", "val", "test", "holdout")  # block splits draw the first three
WRAP_SHIFTS = (0.0, -360.0, 360.0)  # longitude shifts that compare boxes across 180 degrees


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
    grow_m: float = 0.0,
) -> list[tuple[int, int]]:
    """Index pairs (i in split a, j in split b) whose chip footprints overlap or touch.

    Footprints come from each sample's own GSD and size, whatever grid split it, so this checks
    across sources of different chip sizes too; boxes past the antimeridian wrap around.

    Args:
        lat, lon, gsd_m, size_px: per-sample chip centre, GSD and side (see chip_footprint).
        splits: per-sample split ("train" / "val" / "test" / None).
        a, b: the two splits to compare.
        grow_m: grow every footprint by this many metres first; with the build's buffer,
            an empty result means kept chips of splits a and b are more than 2 x grow_m apart.
    """
    from shapely import STRtree, box

    fp = chip_footprint(lat, lon, gsd_m, size_px, grow_m=grow_m)
    s = np.asarray(splits, dtype=object)
    ia, ib = np.flatnonzero(s == a), np.flatnonzero(s == b)
    if not len(ia) or not len(ib):
        return []
    tree = STRtree([box(*fp[j]) for j in ib])
    pairs = set()
    for i in ia:
        w, south, e, n = fp[i]
        for shift in WRAP_SHIFTS:  # a box past 180 degrees meets its neighbours 360 away
            hits = tree.query(box(w + shift, south, e + shift, n), predicate="intersects")
            pairs.update((int(i), int(ib[k])) for k in hits)
    return sorted(pairs)


class LeakGuard:
    """Cross-grid leak check for a stream of samples: the first kept chip wins.

    :meth:`admit` moves a sample to split None when its footprint grown by ``buffer_m`` meets
    the grown footprint of an already kept sample of another split, so kept chips of different
    splits end up more than ``2 * buffer_m`` apart whatever grid split them. Which chip of a
    leaking pair is dropped follows the stream order; feed the finest chips first so that a
    coarse chip (one sample) gives way rather than the fine chips inside it.

    Kept footprints sit in a hash of ``cell_deg`` degree cells, so a query costs the chips near
    it rather than all chips so far.
    """

    def __init__(self, buffer_m: float, cell_deg: float = 1.0) -> None:
        if not buffer_m > 0:
            raise InputError("LeakGuard needs buffer_m > 0 (a zero buffer lets chips touch)")
        cols = 360 / cell_deg if cell_deg > 0 else 0.5
        if cols != round(cols):  # cells must tile the globe exactly for the 180-degree wrap
            raise InputError(f"cell_deg must divide 360 degrees (e.g. 0.5, 1, 2), got {cell_deg}")
        self.buffer_m, self.cell_deg = float(buffer_m), float(cell_deg)
        self._cols = round(cols)
        self._boxes = np.empty((1024, 4))  # kept boxes (w, s, e, n), for vectorised tests
        self._box_list: list[tuple[float, ...]] = []  # the same, for cheap scalar tests
        self._cells: dict[tuple[int, int], tuple[list[int], ...]] = {}  # cell -> ids per split
        self.moved: Counter[str] = Counter()  # split -> samples moved to None

    def reserve(self, box: tuple[float, float, float, float], split: str) -> None:
        """Treat WGS84 ``box`` (west, south, east, north) as kept by ``split``.

        A held-out area reserved before any sample arrives keeps every chip of the other
        splits off it, whatever order the sources come in (a 237 km Blue Marble training chip
        over it is moved to None, and so would be a local chip).
        """
        if split not in SPLIT_NAMES:
            raise InputError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        w, s, e, n = (float(v) for v in box)
        dlat = self.buffer_m / EARTH_M_PER_DEG
        dlon = self.buffer_m / (EARTH_M_PER_DEG * max(math.cos(math.radians((s + n) / 2)), 1e-6))
        fp = (w - dlon, s - dlat, e + dlon, n + dlat)
        self._keep(fp, SPLIT_NAMES.index(split), self._cells_of(fp))

    def admit(self, lat: float, lon: float, side_m: float, split: str | None) -> str | None:
        """The split the sample keeps: ``split``, or None when it would leak.

        Args:
            lat, lon: chip centre in degrees.
            side_m: chip side in metres (0 for a point sample such as a photo).
            split: the sample's split from its own grid; None stays None.
        """
        if split is None:
            return None
        if split not in SPLIT_NAMES:
            raise InputError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
        code = SPLIT_NAMES.index(split)
        fp = self._footprint(lat, lon, side_m)
        cells = self._cells_of(fp)
        near: set[int] = set()
        for c in cells:
            lists = self._cells.get(c)
            if lists is not None:
                near.update(*(ks for other, ks in enumerate(lists) if other != code))
        if near and self._meets(fp, near):
            self.moved[split] += 1
            return None
        self._keep(fp, code, cells)
        return split

    def _footprint(self, lat: float, lon: float, side_m: float) -> tuple[float, ...]:
        # chip_footprint for one chip in plain floats: numpy costs ~10x more per scalar call.
        half = float(side_m) / 2 + self.buffer_m
        dlat = half / EARTH_M_PER_DEG
        dlon = half / (EARTH_M_PER_DEG * max(math.cos(math.radians(lat)), 1e-6))
        return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)

    def _cells_of(self, fp: tuple[float, ...]) -> list[tuple[int, int]]:
        # Columns wrap modulo 360 degrees, so a box past 180 shares cells with its wrapped twin.
        x0, x1 = (math.floor(v / self.cell_deg) for v in (fp[0], fp[2]))
        y0, y1 = (math.floor(min(max(v, -90.0), 90.0) / self.cell_deg) for v in (fp[1], fp[3]))
        cols = range(self._cols) if x1 - x0 + 1 >= self._cols else range(x0, x1 + 1)
        return [(x % self._cols, y) for x in cols for y in range(y0, y1 + 1)]

    def _meets(self, fp: tuple[float, ...], near: set[int]) -> bool:
        """Whether ``fp`` meets (overlaps or touches) any kept box in ``near``."""
        if len(near) > 32:  # many candidates (dense fine chips): one vectorised test
            b = self._boxes[np.fromiter(near, np.int64, len(near))]
            ns = (fp[1] <= b[:, 3]) & (b[:, 1] <= fp[3])
            return any(
                bool((ns & (fp[0] + s <= b[:, 2]) & (b[:, 0] <= fp[2] + s)).any())
                for s in WRAP_SHIFTS
            )
        for k in near:
            w, so, e, n = self._box_list[k]
            if fp[1] <= n and so <= fp[3]:
                if any(fp[0] + s <= e and w <= fp[2] + s for s in WRAP_SHIFTS):
                    return True
        return False

    def _keep(self, fp: tuple[float, ...], code: int, cells: list[tuple[int, int]]) -> None:
        n = len(self._box_list)
        if n == len(self._boxes):
            self._boxes = np.concatenate([self._boxes, np.empty_like(self._boxes)])
        self._boxes[n] = fp
        self._box_list.append(fp)
        for c in cells:
            self._cells.setdefault(c, tuple([] for _ in SPLIT_NAMES))[code].append(n)


class GroupGuard:
    """Keeps every sample of a group (a labelled polygon) in one split: the first one's.

    Fed samples in turn, :meth:`admit` fixes each new group's split to the sample's own; a
    later sample of that group with another split (or whose groups were fixed to different
    splits) gives way: split None. Samples without groups pass unchanged.
    """

    def __init__(self) -> None:
        self.split_of: dict[str, str] = {}
        self.moved: Counter[str] = Counter()

    def admit(self, groups: Sequence[str], split: str | None) -> str | None:
        """The split the sample keeps: ``split``, or None when a group of it is elsewhere."""
        if split is None or not groups:
            return split
        fixed = {self.split_of[g] for g in groups if g in self.split_of}
        if fixed - {split}:
            self.moved[split] += 1
            return None
        for g in groups:
            self.split_of.setdefault(g, split)
        return split


def groups_in_one_split(groups: Sequence[Sequence[str] | None], splits: Sequence) -> list[str]:
    """The groups that occur in more than one split (None excluded): empty when none leak."""
    seen: dict[str, set] = {}
    for gs, sp in zip(groups, splits, strict=True):
        if sp is None:
            continue
        for g in gs or ():
            seen.setdefault(g, set()).add(sp)
    return sorted(g for g, sps in seen.items() if len(sps) > 1)
