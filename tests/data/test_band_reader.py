"""Chips of sensors with different bands in one dataset: expansion by name, collation, views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError
from engine.model.contract import Modality, Preprocess
from training.data.collate import collate_samples
from training.data.format import DatasetFormatError, DatasetInfo, read_manifest
from training.data.reader import ChipDataset, dihedral, expand_bands
from training.data.writer import DatasetWriter, SampleRecord

SIX = ["red", "green", "blue", "nir", "swir1", "swir2"]


def _rec(i: int, bands: tuple[str, ...], n_views: int = 1, dsm: bool = False) -> SampleRecord:
    rng = np.random.default_rng(i)
    views = [rng.integers(0, 256, (len(bands), 8, 8), dtype=np.uint8) for _ in range(n_views)]
    return SampleRecord(
        f"s{i}", 10.0 + i, 20.0, "a", "train", 10.0, aerial=views,
        dsm=rng.random((1, 8, 8)).astype(np.float32) * 100 if dsm else None,
        provenance={"gps": "real", "aerial": "real", **({"dsm": "real"} if dsm else {})},
        sensor="x", aerial_bands=bands, aerial_dates=[f"2020-0{k + 1}-01" for k in range(n_views)],
        groups=["poly:1"] if i == 0 else [],
    )  # fmt: skip


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    out = tmp_path / "mixed"
    with DatasetWriter(out, "mixed", shard_size=4) as w:
        w.add(_rec(0, tuple(SIX), 2, dsm=True))  # Sentinel-2 like
        w.add(_rec(1, ("red", "green", "nir")))  # an 8-bit false-colour render
        w.add(_rec(2, ("red", "green", "blue")))  # RGB only
        w.close(bands={"aerial": SIX})
    return out


def test_chips_store_their_bands_and_read_as_the_dataset_bands(mixed: Path):
    t = read_manifest(mixed).to_pydict()
    assert t["aerial_bands"] == [SIX, ["red", "green", "nir"], ["red", "green", "blue"]]
    assert t["aerial_dates"][0] == ["2020-01-01", "2020-02-01"] and t["groups"][0] == ["poly:1"]
    assert DatasetInfo.read(mixed).format_version == 2
    ds = ChipDataset(mixed)
    s = ds[1]
    assert s["aerial"].shape == (6, 8, 8) and s["aerial_bands"] == tuple(SIX)
    assert np.isnan(s["aerial"][[2, 4, 5]]).all()  # blue, swir1, swir2: the sensor lacks them
    raw = np.load(mixed / t["aerial"][1][0].split("#")[0])[int(t["aerial"][1][0].split("#")[1])]
    np.testing.assert_allclose(s["aerial"][3], raw[2] / 255.0, atol=1e-6)  # nir by name


def test_collate_matches_the_tower_bands_by_name(mixed: Path):
    ds = ChipDataset(mixed)
    samples = [ds[i] for i in range(3)]
    rgbn = Preprocess(
        size=8, bands=("red", "green", "blue", "nir"), mean=(0.5,) * 4, std=(0.5,) * 4
    )
    b = collate_samples(samples, {Modality.AERIAL: rgbn})
    x = b["aerial"].numpy()
    assert x.shape == (3, 4, 8, 8)
    np.testing.assert_allclose(x[1, 3], (samples[1]["aerial"][3] - 0.5) / 0.5, atol=1e-5)
    assert (x[1, 2] == 0).all()  # blue absent: NaN becomes 0 after normalisation
    six = Preprocess(size=8, bands=tuple(SIX), mean=(0.5,) * 6, std=(0.5,) * 6)
    assert collate_samples(samples, {Modality.AERIAL: six})["aerial"].shape == (3, 6, 8, 8)
    pan = Preprocess(size=8, bands=("pan",), mean=(0.5,), std=(0.5,))
    with pytest.raises(InputError, match="bands"):
        collate_samples(samples, {Modality.AERIAL: pan})


def test_augmentation_rotates_aerial_and_dsm_together(mixed: Path):
    plain = ChipDataset(mixed, train=True, seed=1)
    aug = ChipDataset(mixed, train=True, seed=1, augment=True)
    seen = set()
    for epoch in range(8):
        plain.set_epoch(epoch)
        aug.set_epoch(epoch)
        a, p = aug[0], plain[0]
        # Whatever symmetry was drawn, aerial and DSM moved together.
        for k in range(4):
            for flip in (False, True):
                pa, pd = np.rot90(p["aerial"], k, axes=(1, 2)), np.rot90(p["dsm"], k, axes=(1, 2))
                if flip:
                    pa, pd = pa[..., ::-1], pd[..., ::-1]
                if np.array_equal(pa, a["aerial"], equal_nan=True):
                    assert np.array_equal(pd, a["dsm"])
                    seen.add((k, flip))
    assert len(seen) > 1
    arrays = {"x": np.arange(4.0).reshape(1, 2, 2)}
    dihedral(arrays, np.random.default_rng(0))
    assert sorted(arrays["x"].ravel()) == [0, 1, 2, 3]


def test_band_names_are_checked(tmp_path: Path):
    with pytest.raises(DatasetFormatError, match="aerial_bands"):
        with DatasetWriter(tmp_path / "x", "x") as w:
            rec = _rec(0, ("red", "green"))
            rec.aerial_bands = ("red",)
            w.add(rec)
    with pytest.raises(DatasetFormatError, match="aerial date"):
        with DatasetWriter(tmp_path / "y", "y") as w:
            rec = _rec(0, ("red",), 2)
            rec.aerial_dates = ["2020"]
            w.add(rec)
    with pytest.raises(DatasetFormatError, match="not among"):
        expand_bands(np.zeros((1, 2, 2)), ["pan"], SIX)
