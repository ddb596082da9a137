"""The synthetic world: labels drive every modality, deterministic with its seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from training.data.format import DatasetInfo
from training.data.landuse import (
    CLASS_PHRASES,
    CROPLAND,
    FOREST,
    GRASSLAND,
    INDUSTRIAL,
    RESIDENTIAL,
    WATER,
)
from training.data.landuse import (
    SYNTH_CLASS_NAMES as CLASS_NAMES,  # the synthetic world draws the first 7 classes
)
from training.data.reader import ChipDataset
from training.data.splits import leaking_pairs
from training.data.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "ds"
    generate(SynthConfig(size=400, seed=7, chip_px=32, street_px=32, noise=0.02), out)
    return out


def _by_class(ds: ChipDataset):
    groups: dict[int, list[dict]] = {}
    for i in range(len(ds)):
        s = ds[i]
        groups.setdefault(s["landuse"], []).append(s)
    return groups


def test_every_modality_present_and_synthetic(world: Path):
    info = DatasetInfo.read(world)
    assert info.n_samples == 400 and info.class_names == list(CLASS_NAMES)
    assert info.bands["aerial"] == ["red", "green", "blue", "nir"]
    assert all(v == {"synthetic": 400} for v in info.provenance.values())
    assert len(info.provenance) == 5
    s = ChipDataset(world)[0]
    assert s["aerial"].shape == (4, 32, 32) and s["streetview"].shape == (3, 32, 32)
    assert s["dsm"].shape == (1, 32, 32) and isinstance(s["text"], str)
    assert 46.7 < s["lat"] < 46.9 and 7.0 < s["lon"] < 7.3  # placed at the configured box


def test_labels_drive_all_modalities(world: Path):
    g = _by_class(ChipDataset(world))
    assert {WATER, FOREST, CROPLAND, RESIDENTIAL} <= set(g)

    def ndvi(s):
        r, n = s["aerial"][0], s["aerial"][3]
        return float(np.mean((n - r) / (n + r + 1e-6)))

    def mean(cls, f):
        return float(np.mean([f(s) for s in g[cls]]))

    # Aerial: vegetation is greener in NIR than water and built-up land.
    assert mean(FOREST, ndvi) > 0.3 > mean(WATER, ndvi)
    assert mean(CROPLAND, ndvi) > mean(RESIDENTIAL, ndvi)

    # DSM: buildings and trees stand above the chip's median surface, water is flat.
    def bump(s):
        return float(np.percentile(s["dsm"], 95) - np.median(s["dsm"]))

    def flat(s):
        return float(np.mean(np.abs(s["dsm"] - np.median(s["dsm"])) < 0.5))

    assert mean(RESIDENTIAL, bump) > 3
    assert mean(WATER, flat) > 0.5 > mean(RESIDENTIAL, flat)
    assert mean(FOREST, bump) > mean(GRASSLAND if GRASSLAND in g else WATER, bump)

    # Street view: the lower half of a water view is blue, of a forest view green.
    def lower(s, c):
        return float(s["streetview"][c, 20:].mean())

    assert mean(WATER, lambda s: lower(s, 2) - lower(s, 0)) > 0.15
    assert mean(FOREST, lambda s: lower(s, 1) - lower(s, 0)) > 0.05
    # Text names the dominant class in its first phrasing.
    for cls, samples in g.items():
        words = CLASS_PHRASES[CLASS_NAMES[cls]]
        hits = [any(w in s["text"].lower() for w in words) for s in samples]
        assert np.mean(hits) > 0.95, CLASS_NAMES[cls]
    if INDUSTRIAL in g:
        assert mean(INDUSTRIAL, bump) > 3


def test_splits_do_not_leak(world: Path):
    t = pq.read_table(world / "samples.parquet").to_pydict()
    n = len(t["lat"])
    assert {"train", "test"} <= set(t["split"])
    for a in ("test", "val"):
        assert leaking_pairs(t["lat"], t["lon"], t["gsd_m"], [32] * n, t["split"], a, "train") == []


def test_deterministic_with_seed(tmp_path: Path):
    cfg = SynthConfig(size=40, seed=3, chip_px=16, street_px=16)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    generate(SynthConfig(size=40, seed=4, chip_px=16, street_px=16), tmp_path / "c")
    ta, tb, tc = (pq.read_table(tmp_path / x / "samples.parquet") for x in "abc")
    assert ta.equals(tb) and not ta.equals(tc)
    for sub in ("aerial", "streetview", "dsm"):
        for f in (tmp_path / "a" / sub).glob("*.npy"):
            np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "b" / sub / f.name))


def test_weak_modality_loses_its_label_signal(tmp_path: Path):
    def separation(out: Path) -> float:
        g = _by_class(ChipDataset(out))
        nir = {k: np.mean([s["aerial"][3].mean() for s in v]) for k, v in g.items()}
        return float(nir[FOREST] - nir[WATER])

    base = dict(size=150, seed=1, chip_px=16, street_px=16)
    generate(SynthConfig(**base), tmp_path / "good")
    generate(SynthConfig(**base, weak="aerial", weak_level=0.9), tmp_path / "weak")
    assert separation(tmp_path / "weak") < 0.3 * separation(tmp_path / "good")
    with pytest.raises(ValueError):
        generate(SynthConfig(**base, weak="smell"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_weak_text_and_gps(tmp_path: Path):
    base = dict(size=120, seed=2, chip_px=16, street_px=16)
    generate(SynthConfig(**base), tmp_path / "good")
    generate(SynthConfig(**base, weak="text", weak_level=1.0), tmp_path / "text")
    generate(SynthConfig(**base, weak="gps", weak_level=0.5), tmp_path / "gps")

    def named(out: Path) -> float:
        ds = ChipDataset(out)
        hits = []
        for i in range(len(ds)):
            s = ds[i]
            hits.append(
                any(w in s["text"].lower() for w in CLASS_PHRASES[CLASS_NAMES[s["landuse"]]])
            )
        return float(np.mean(hits))

    assert named(tmp_path / "good") > 0.95 and named(tmp_path / "text") < 0.6
    good = pq.read_table(tmp_path / "good" / "samples.parquet").to_pydict()
    moved = pq.read_table(tmp_path / "gps" / "samples.parquet").to_pydict()
    shift_m = np.hypot(
        np.subtract(good["lat"], moved["lat"]), np.subtract(good["lon"], moved["lon"])
    )
    assert np.median(shift_m) * 111_000 > 100  # positions no longer match the chips
