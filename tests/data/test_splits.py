"""Spatial splits: no held-out chip overlaps or touches a training chip, across grids too."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.errors import InputError
from training.data.splits import (
    LeakGuard,
    area_splits,
    block_splits,
    chip_footprint,
    leaking_pairs,
)


def _dense_points(n: int, seed: int, lat0: float = 47.0, lon0: float = -99.1):
    rng = np.random.default_rng(seed)
    lat = lat0 + rng.uniform(0, 0.05, n)  # ~5.5 km: chips of 320 m overlap a lot
    lon = lon0 + rng.uniform(0, 0.07, n)
    return lat, lon, np.full(n, 5.0), np.full(n, 64)


@pytest.mark.parametrize(("seed", "lat0"), [(0, 47.0), (1, -33.9), (2, 64.5)])
def test_block_split_has_no_leakage(seed, lat0):
    lat, lon, gsd, size = _dense_points(1500, seed, lat0=lat0)
    splits = block_splits(lat, lon, gsd, size, block_m=1000, buffer_m=10, seed=seed)
    counts = Counter(splits)
    assert counts["train"] > counts["test"] > 0 and counts["val"] > 0
    assert 0 < counts[None] < 1500 * 0.8  # the buffer drops some chips, not most
    for a, b in (("test", "train"), ("val", "train"), ("test", "val")):
        assert leaking_pairs(lat, lon, gsd, size, splits, a, b) == []
    # Kept chips of different splits are at least 2 x buffer apart: grown by 9 m they still
    # do not touch.
    fp_test = chip_footprint(lat, lon, gsd, size, grow_m=9.0)
    s = np.asarray(splits, dtype=object)
    from shapely import STRtree, box

    tree = STRtree([box(*f) for f in fp_test[s == "train"]])
    assert not any(len(tree.query(box(*f), "intersects")) for f in fp_test[s == "test"])


def test_a_random_split_does_leak():
    """The leakage check can fail: a naive per-sample random split leaks heavily."""
    lat, lon, gsd, size = _dense_points(600, 3)
    rng = np.random.default_rng(0)
    naive = list(rng.choice(["train", "val", "test"], 600, p=[0.8, 0.1, 0.1]))
    assert len(leaking_pairs(lat, lon, gsd, size, naive)) > 50


def test_touching_chips_count_as_leak():
    # Two 320 m chips whose edges meet exactly: touching is leakage too.
    lat = np.array([47.0, 47.0])
    dlon = 320 / (111_320 * np.cos(np.radians(47.0)))
    lon = np.array([-99.0, -99.0 + dlon])
    assert leaking_pairs(lat, lon, [5, 5], [64, 64], ["test", "train"]) == [(0, 1)]


def test_block_split_is_deterministic_and_validated():
    lat, lon, gsd, size = _dense_points(200, 4)
    a = block_splits(lat, lon, gsd, size, block_m=800, seed=1)
    assert a == block_splits(lat, lon, gsd, size, block_m=800, seed=1)
    assert a != block_splits(lat, lon, gsd, size, block_m=800, seed=2)
    with pytest.raises(InputError, match="buffer"):
        block_splits(lat, lon, gsd, size, buffer_m=0)
    with pytest.raises(InputError, match="fractions"):
        block_splits(lat, lon, gsd, size, fractions=(0.5, 0.5, 0.5))


def test_area_split():
    areas = ["naip", "swellendam", "pucallpa", "naip"]
    assert area_splits(areas, test_areas=["pucallpa"], val_areas=["swellendam"]) == [
        "train",
        "val",
        "test",
        "train",
    ]
    with pytest.raises(InputError, match="not in the data"):
        area_splits(areas, test_areas=["mars"])
    with pytest.raises(InputError, match="both"):
        area_splits(areas, test_areas=["naip"], val_areas=["naip"])


def _leaks(lat, lon, side, splits, grow_m=0.0) -> int:
    """Leaking pairs between every two splits, footprints from each sample's own side."""
    ones = np.ones(len(side))
    pairs = (("test", "train"), ("val", "train"), ("test", "val"))
    return sum(len(leaking_pairs(lat, lon, side, ones, splits, a, b, grow_m)) for a, b in pairs)


def _coarse_over_fine(seed: int = 0):
    """Dense 320 m chips block-split on 1 km blocks, plus 237 km Blue Marble-like chips over them.

    Returns lat, lon, chip side (m) and the per-grid splits, fine chips first. The coarse
    chips are block-split on their own 1425 km grid, as the builder does, and one is forced to
    train: the case the per-grid split missed (every fine test chip inside a train chip).
    """
    lat, lon, gsd, size = _dense_points(800, seed)
    fine = block_splits(lat, lon, gsd, size, block_m=1000, buffer_m=10, seed=seed)
    clat, clon = np.array([47.02, 47.1, 46.9]), np.array([-99.06, -98.5, -99.6])
    coarse = block_splits(clat, clon, [7421.3] * 3, [32] * 3, block_m=1_425_000, buffer_m=10)
    coarse[0] = "train"
    side = np.concatenate([gsd * size, np.full(3, 7421.3 * 32)])
    return np.r_[lat, clat], np.r_[lon, clon], side, fine + coarse


def _guarded(lat, lon, side, splits, buffer_m=10.0, cell_deg=1.0):
    g = LeakGuard(buffer_m, cell_deg)
    return [g.admit(*v) for v in zip(lat, lon, side, splits, strict=True)], g


def test_per_grid_splits_leak_across_grids():
    """What the builder did: a coarse training chip contains fine held-out chips."""
    lat, lon, side, splits = _coarse_over_fine()
    assert Counter(splits[:800])["test"] > 0
    first = leaking_pairs(lat, lon, side, np.ones(len(side)), splits, "test", "train")
    assert any(j == 800 for _, j in first)  # fine test chips inside the coarse train chip


@pytest.mark.parametrize("seed", [0, 1])
def test_guard_drops_the_coarse_chip_not_the_fine_ones(seed):
    lat, lon, side, splits = _coarse_over_fine(seed)
    guarded, g = _guarded(lat, lon, side, splits)
    assert _leaks(lat, lon, side, splits) > 0
    assert _leaks(lat, lon, side, guarded, grow_m=10.0) == 0  # > 2 x buffer apart
    assert guarded[:800] == splits[:800]  # fine val/test/train membership unchanged
    assert guarded[800] is None and sum(g.moved.values()) == sum(
        a != b for a, b in zip(splits, guarded, strict=True)
    )


def test_guard_feeds_in_order_coarse_first_loses_fine_chips():
    """Stream order decides who gives way: coarse first drops the fine chips inside it."""
    lat, lon, side, splits = _coarse_over_fine()
    order = np.r_[800:803, 0:800]
    guarded, g = _guarded(lat[order], lon[order], side[order], [splits[i] for i in order])
    assert guarded[0] == "train" and _leaks(lat[order], lon[order], side[order], guarded) == 0
    assert g.moved["test"] + g.moved["val"] > 10  # many held-out fine chips lost


def _reference_guard(lat, lon, side, splits, buffer_m):
    """Naive O(N^2) reference: keep a chip unless it meets a kept chip of another split."""
    fp = chip_footprint(lat, lon, side, np.ones(len(side)), grow_m=buffer_m)
    out: list = []
    for i, s in enumerate(splits):
        meets = any(
            out[j] not in (None, s)
            and any(fp[i, 0] + d <= fp[j, 2] and fp[j, 0] <= fp[i, 2] + d for d in (0, -360, 360))
            and fp[i, 1] <= fp[j, 3]
            and fp[j, 1] <= fp[i, 3]
            for j in range(i)
        )
        out.append(None if s is None or meets else s)
    return out


@pytest.mark.parametrize(("seed", "cell_deg"), [(0, 1.0), (1, 0.5), (2, 4.0)])
def test_guard_matches_naive_reference_on_mixed_sizes(seed, cell_deg):
    rng = np.random.default_rng(seed)
    n = 400
    lat = rng.uniform(-70, 70, n) * rng.choice([1, 0.02], n)  # half clustered near the equator
    lon = np.where(rng.random(n) < 0.2, rng.uniform(178, 182, n), rng.uniform(-3, 3, n))
    lon = (lon + 180) % 360 - 180  # some chips straddle the antimeridian
    side = rng.choice([0.0, 320.0, 20_000.0, 237_000.0], n)
    splits = list(rng.choice(["train", "val", "test", None], n, p=[0.6, 0.15, 0.15, 0.1]))
    guarded, _ = _guarded(lat, lon, side, splits, buffer_m=50.0, cell_deg=cell_deg)
    assert guarded == _reference_guard(lat, lon, side, splits, 50.0)
    assert _leaks(lat, lon, side, guarded, grow_m=50.0) == 0
    assert 0 < Counter(guarded)["test"] < Counter(splits)["test"]


def test_antimeridian_and_buffer_in_leaking_pairs():
    # Two 1 km chips on either side of 180 degrees, 2 km apart centre to centre.
    dlon = 1000 / (111_320 * np.cos(np.radians(10.0)))
    lat, lon = np.array([10.0, 10.0]), np.array([180 - dlon, -180 + dlon])
    side, ones = np.array([1000.0, 1000.0]), np.ones(2)
    assert leaking_pairs(lat, lon, side, ones, ["test", "train"]) == []  # 1 km gap
    assert leaking_pairs(lat, lon, side, ones, ["test", "train"], grow_m=501) == [(0, 1)]
    assert _guarded(lat, lon, side, ["test", "train"], buffer_m=501)[0] == ["test", None]
    assert _guarded(lat, lon, side, ["test", "train"], buffer_m=499)[0] == ["test", "train"]


def test_guard_is_validated():
    with pytest.raises(InputError, match="buffer"):
        LeakGuard(0)
    with pytest.raises(InputError, match="divide 360"):
        LeakGuard(10, cell_deg=0.7)
    with pytest.raises(InputError, match="split must be"):
        LeakGuard(10).admit(0.0, 0.0, 100.0, "bogus")  # "holdout" is a split now
    assert LeakGuard(10).admit(0.0, 0.0, 100.0, None) is None
