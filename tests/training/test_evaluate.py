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
