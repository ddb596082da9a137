"""The dataset format: round trip, refused references, atomic writes, validation errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.data.format import (
    MANIFEST,
    DatasetFormatError,
    DatasetInfo,
    parse_ref,
    read_manifest,
)
from training.data.reader import ChipDataset
from training.data.writer import DatasetWriter, SampleRecord


def test_round_trip_preserves_every_chip_and_field(tiny_dataset: Path, records):
    info = DatasetInfo.read(tiny_dataset)
    assert info.n_samples == len(records) and info.class_names == list("abcdefg")
    assert info.chip_sizes == {"aerial": [[16, 16]], "streetview": [[24, 24]], "dsm": [[16, 16]]}
    assert info.provenance["gps"] == {"real": len(records)}
    assert info.areas == {"south": 25, "north": 25}
    table = read_manifest(tiny_dataset)
    assert table.num_rows == len(records)
    # 50 rows in row groups of 8, chips in shards of 8: few files, no per-chip files.
    assert pq.ParquetFile(tiny_dataset / MANIFEST).num_row_groups == 7
    assert len(list((tiny_dataset / "aerial").glob("*.npy"))) < 10
    ds = ChipDataset(tiny_dataset)
    by_id = {r.sample_id: r for r in records}
    for i in range(len(ds)):
        s = ds[i]
        r = by_id[s["sample_id"]]
        assert (s["lat"], s["lon"], s["area_id"], s["landuse"]) == (r.lat, r.lon, r.area_id, i % 7)
        if r.aerial:
            np.testing.assert_allclose(s["aerial"], r.aerial[0] / 255.0, atol=1e-6)
        else:
            assert "aerial" not in s
        if r.streetview:  # stored as float16: 3 decimal digits
            np.testing.assert_allclose(s["streetview"], r.streetview[0], atol=1e-3)
        if r.dsm is not None:
            np.testing.assert_array_equal(s["dsm"], r.dsm)  # NaN positions equal too
            assert s["dsm"].dtype == np.float32
        assert ("text" in s) == bool(r.text)
        np.testing.assert_allclose(s["gps"], [r.lat, r.lon], atol=1e-5)


@pytest.mark.parametrize(
    "ref",
    [
        "/etc/passwd.npy",
        "../outside.npy",
        "aerial/../../x.npy",
        "C:/x.npy",
        "a\\b.npy",
        "aerial/s0.txt",
        "",
        "aerial//s.npy",
    ],
)
def test_references_escaping_the_folder_are_refused(ref):
    with pytest.raises(DatasetFormatError, match="escapes|not"):
        parse_ref(ref)


def test_manifest_with_escaping_path_is_refused(tiny_dataset: Path):
    table = pq.read_table(tiny_dataset / MANIFEST)
    col = table.column("dsm").to_pylist()
    idx = next(i for i, v in enumerate(col) if v)
    col[idx] = "../../secret.npy"
    table = table.set_column(table.schema.get_field_index("dsm"), "dsm", pa.array(col))
    pq.write_table(table, tiny_dataset / MANIFEST)
    with pytest.raises(DatasetFormatError, match="escapes the dataset folder"):
        read_manifest(tiny_dataset)
    with pytest.raises(DatasetFormatError):
        ChipDataset(tiny_dataset)


def test_symlink_escape_is_refused(tiny_dataset: Path, tmp_path: Path):
    from training.data.reader import ChipStore

    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "x.npy", np.zeros((1, 2, 2), np.float32))
    (tiny_dataset / "link").symlink_to(outside)
    with pytest.raises(DatasetFormatError, match="outside the dataset"):
        ChipStore(tiny_dataset).load("link/x.npy")


def test_failed_build_leaves_nothing(tmp_path: Path, records):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError), DatasetWriter(out, "x", shard_size=4) as w:
        for r in records[:10]:
            w.add(r)
        raise RuntimeError("interrupted")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the hidden build folder is gone too


def test_existing_dataset_is_not_overwritten_silently(tiny_dataset: Path):
    with pytest.raises(DatasetFormatError, match="already exists"):
        DatasetWriter(tiny_dataset, "again")


def test_overwrite_replaces_the_dataset(tiny_dataset: Path, records):
    with DatasetWriter(tiny_dataset, "v2", overwrite=True) as w:
        w.add(records[0])
        w.close()
    assert DatasetInfo.read(tiny_dataset).n_samples == 1
    assert read_manifest(tiny_dataset).num_rows == 1


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        ({"provenance": {"gps": "made-up"}}, "provenance"),
        ({"lat": 95.0}, "WGS84"),
        ({"split": "bogus"}, "split"),  # "holdout" is a split now
        ({"dsm": np.zeros((2, 4, 4), np.float32)}, "1 band"),
        ({"aerial": [np.full((4, 4, 4), 2.0, np.float32)]}, r"\[0, 1\]"),
        ({"streetview": [np.zeros((4, 8, 8), np.uint8)]}, "3 bands"),
        ({"landuse": 2, "landuse_provenance": None}, "land-use"),
    ],
)
def test_bad_samples_give_clear_errors(tmp_path: Path, change, msg):
    rec = SampleRecord(
        "a",
        10.0,
        20.0,
        "area",
        provenance={"gps": "real", "aerial": "real", "dsm": "real", "streetview": "real"},
    )
    for k, v in change.items():
        setattr(rec, k, v)
    with DatasetWriter(tmp_path / "ds", "x") as w, pytest.raises(DatasetFormatError, match=msg):
        w.add(rec)
    assert not (tmp_path / "ds").exists()


def test_duplicate_ids_and_empty_datasets_are_refused(tmp_path: Path, records):
    with DatasetWriter(tmp_path / "ds", "x") as w:
        w.add(records[0])
        with pytest.raises(DatasetFormatError, match="unique"):
            w.add(records[0])
    with (
        DatasetWriter(tmp_path / "empty", "x") as w,
        pytest.raises(DatasetFormatError, match="no samples"),
    ):
        w.close()
    assert not (tmp_path / "empty").exists()


def test_dataset_json_is_checked(tiny_dataset: Path):
    (tiny_dataset / "dataset.json").write_text('{"name": "x", "format_version": 99}')
    with pytest.raises(DatasetFormatError, match="format version"):
        DatasetInfo.read(tiny_dataset)


def test_missing_chip_file_is_reported(tiny_dataset: Path):
    for f in (tiny_dataset / "dsm").glob("*.npy"):
        f.unlink()
    ds = ChipDataset(tiny_dataset, modalities=["dsm"])
    with pytest.raises(DatasetFormatError, match="missing"):
        for i in range(len(ds)):
            ds[i]
