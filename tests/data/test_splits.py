"""Spatial splits: no test chip overlaps or touches a training chip."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.errors import InputError
from training.data.splits import area_splits, block_splits, chip_footprint, leaking_pairs


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
