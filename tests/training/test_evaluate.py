"""Evaluation metrics on constructed embeddings, and the full report on the trained tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.evaluate import evaluate_model, haversine_m, retrieval, write_report


def test_haversine_one_degree_of_latitude():
    d = haversine_m(np.array([0.0]), np.array([0.0]), np.array([1.0]), np.array([0.0]))
    assert d[0] == pytest.approx(111_195, rel=1e-3)


def test_retrieval_counts_ranks_ties_and_distance():
    q = np.eye(4, dtype=np.float32)
    lat = np.array([0.0, 0.0, 0.0, 10.0])
    lon = np.array([0.0, 0.0005, 1.0, 0.0])  # sample 1 is ~56 m from sample 0
    r = retrieval(q, q, lat, lon)
    assert r["R@1"] == 1.0 and r["acc@100m"] == 1.0
    g = q[[1, 0, 2, 3]]  # queries 0 and 1 retrieve each other
    r = retrieval(q, g, lat, lon)
    assert r["R@1"] == 0.5 and r["R@5"] == 1.0 and r["acc@100m"] == 1.0
    tie = retrieval(q, np.ones((4, 4), np.float32), lat, lon)
    assert tie["R@1"] == 0.0  # all-equal scores never count as a hit


def test_evaluation_of_trained_model_beats_chance(trained, tmp_path):
    trainer, _, _ = trained
    res = evaluate_model(trainer.core, trainer.val_set, trainer.cfg)
    assert len(res["retrieval"]) == 20
    r = res["retrieval"]["aerial->text"]
    assert r["R@10"] > 3 * 10 * r["chance@1"]
    assert res["probe"]["aerial"]["linear"] > res["baseline"]["majority_class"] + 0.2
    assert "aerial_raw_stats" in res["baseline"]
    paths = write_report(res, tmp_path)
    assert json.loads(paths["json"].read_text())["n"] == 64
    assert "| aerial->text |" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 1000


def test_raw_stats_keep_chips_without_nir():
    from training.evaluate import raw_stats

    rgb = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    f = raw_stats({"aerial": rgb})
    assert f.shape == (20,) and np.isfinite(f).all()  # was all-NaN-filtered before
    assert (f.reshape(5, 4)[:, 3] == 0).all() and f[0] == pytest.approx(rgb[0].mean())
    assert np.isnan(raw_stats({"aerial": None})).all()


def test_zero_shot_landuse_picks_the_class_of_its_own_prompt(trained, monkeypatch):
    import training.evaluate as ev
    from training.train import make_collate

    trainer, _, _ = trained
    model, cfg = trainer.core, trainer.cfg
    monkeypatch.setattr(ev, "ZERO_SHOT_TEMPLATES", ("{}",))
    names = ["water", "forest", "cropland"]
    samples = [{"text": n, "lat": 0.0, "lon": 0.0, "sample_id": n} for n in names]
    with ev.torch.no_grad():
        txt = model(make_collate(cfg)(samples))["text"].float().numpy()
    emb = txt / np.linalg.norm(txt, axis=1, keepdims=True)  # "images" equal to their prompts
    keep = np.ones(3, bool)
    res = ev.zero_shot_landuse(model, cfg, emb, keep, np.array([0, 1, 2]), names)
    assert res == {"accuracy": 1.0, "n_test": 3, "classes": 3}
    res = ev.zero_shot_landuse(model, cfg, emb, keep, np.array([1, 2, 0]), names)
    assert res["accuracy"] == 0.0
    assert ev.zero_shot_landuse(model, cfg, emb, keep, np.array([-1, -1, -1]), names) is None
