"""Fixtures for the dataset tests: a small written dataset with partial modalities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data.writer import DatasetWriter, SampleRecord

N_SAMPLES = 50


def make_record(i: int, rng: np.random.Generator) -> SampleRecord:
    """Sample i: modality presence cycles so that every combination of absences occurs."""
    has = [(i >> k) & 1 == 0 for k in range(4)]  # aerial, streetview, dsm, text
    prov = {"gps": "real"}
    rec = SampleRecord(
        sample_id=f"s{i:03d}",
        lat=47.0 + i * 1e-3,
        lon=-99.1 - i * 1e-3,
        area_id="north" if i % 2 else "south",
        split=("train", "val", "test")[i % 3],
        gsd_m=5.0,
        landuse=i % 7,
        landuse_provenance="derived",
        provenance=prov,
    )
    if has[0]:
        rec.aerial = [rng.integers(0, 256, (4, 16, 16), dtype=np.uint8) for _ in range(1 + i % 3)]
        prov["aerial"] = "real"
    if has[1]:
        rec.streetview = [rng.random((3, 24, 24), dtype=np.float32)]
        prov["streetview"] = "synthetic"
    if has[2]:
        d = (100 + 10 * rng.random((1, 16, 16))).astype(np.float32)
        d[0, 0, 0] = np.nan
        rec.dsm = d
        prov["dsm"] = "derived"
    if has[3]:
        rec.text = [f"place {i} phrasing {k}" for k in range(2)]
        prov["text"] = "derived"
    return rec


@pytest.fixture
def records() -> list[SampleRecord]:
    rng = np.random.default_rng(0)
    return [make_record(i, rng) for i in range(N_SAMPLES)]


@pytest.fixture
def tiny_dataset(tmp_path: Path, records: list[SampleRecord]) -> Path:
    out = tmp_path / "ds"
    with DatasetWriter(out, "tiny", shard_size=8) as w:
        for r in records:
            w.add(r)
        w.close(bands={"aerial": ["red", "green", "blue", "nir"]}, class_names=list("abcdefg"))
    return out
