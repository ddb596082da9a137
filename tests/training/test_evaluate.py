"""Evaluation metrics on constructed embeddings, and the full report on the trained tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.evaluate import evaluate_model, haversine_m, markdown, retrieval, write_report


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


def test_ties_are_scored_as_expectation_for_recall_and_distance_alike():
    lat = np.array([0.0, 0.0, 0.0, 10.0])
    lon = np.array([0.0, 0.0005, 1.0, 0.0])  # 0 and 1 within 100 m; 2 and 3 far from all
    q = np.eye(4, dtype=np.float32)
    tie = retrieval(q, np.ones((4, 4), np.float32), lat, lon)
    # A constant gallery scores chance (1/4) at R@1, certainty at R@5.
    assert tie["R@1"] == pytest.approx(0.25) == tie["chance@1"] and tie["R@5"] == 1.0
    # Acc@100 m uses the same rule: query 0 and 1 have 2 of 4 tied top hits within 100 m,
    # queries 2 and 3 only themselves (1 of 4). Before, argmax took row 0 for every query.
    assert tie["acc@100m"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)
    # A wrong item strictly above the partner is a miss whatever the tie rule.
    g = q.copy()
    g[1, 0] = 2.0  # gallery 1 beats gallery 0 for query 0; it is 56 m away
    r = retrieval(q, g, lat, lon)
    assert r["R@1"] == pytest.approx(0.75) and r["acc@100m"] == 1.0


def test_tie_probability_matches_brute_force_over_orders():
    from itertools import permutations

    from training.evaluate import _hit_probability

    for above, tn, tm, k in [(0, 3, 1, 1), (1, 2, 2, 2), (0, 4, 2, 3), (2, 1, 1, 2), (3, 0, 1, 1)]:
        items = [0] * tn + [1] * tm  # 0 = wrong, 1 = correct
        orders = set(permutations(items))
        hits = [above + order.index(1) < k for order in orders]
        got = _hit_probability(np.array([above]), np.array([tn]), np.array([tm]), k)[0]
        assert got == pytest.approx(np.mean(hits)), (above, tn, tm, k)


def test_text_pairs_count_samples_with_the_same_caption_as_correct():
    from training.evaluate import caption_groups

    caps = ["forest", "forest", "cropland", None]
    groups = caption_groups(caps)
    assert groups[0] == groups[1] != groups[2] and groups[3] not in groups[:3]
    # A perfect text tower gives identical embeddings to identical captions.
    text = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    img = text + 0.01 * np.arange(4)[:, None]  # images near their caption
    lat, lon = np.zeros(4), np.arange(4.0)
    # Without equivalence the duplicate caption caps both directions (the old behaviour).
    assert retrieval(img, text, lat, lon)["R@1"] == pytest.approx(0.75)
    assert retrieval(text, img, lat, lon)["R@1"] < 1.0
    for q, g in ((img, text), (text, img)):
        r = retrieval(q, g, lat, lon, groups)
        assert r["R@1"] == 1.0 and r["n"] == 4
        assert r["chance@1"] == pytest.approx((2 + 2 + 1 + 1) / 4 / 4)  # share counted correct
    # A wrong caption ranked first still misses.
    assert retrieval(img, text[[2, 2, 0, 3]], lat, lon, groups)["R@1"] == pytest.approx(0.25)


def test_evaluation_of_trained_model_beats_chance(trained, tmp_path):
    trainer, _, _ = trained
    res = evaluate_model(trainer.core, trainer.val_set, trainer.cfg)
    assert len(res["retrieval"]) == 20
    r = res["retrieval"]["aerial->text"]
    # Toy captions repeat: equal captions are correct hits, and chance@1 counts them too.
    assert r["chance@1"] > 1 / r["n"] and r["R@1"] > 3 * r["chance@1"]
    aerial = res["probe"]["aerial"]
    assert aerial["linear"] > aerial["majority"] + 0.2
    assert res["baseline"]["majority_class"] == aerial["majority"]
    assert aerial["folds"] >= 2 and len(aerial["per_fold"]["knn5"]) == aerial["folds"]
    assert "aerial_raw_stats" in res["baseline"]
    assert (
        res["retrieval"]["text->aerial"]["R@1"] >= 0 and 0 <= res["notes"]["shared_caption_share"]
    )
    paths = write_report(res, tmp_path)
    assert json.loads(paths["json"].read_text())["n"] == 64
    md = paths["md"].read_text()
    assert "| aerial->text |" in md and "majority (same folds)" in md and "Ties:" in md
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
    from training.steps import make_collate

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


def _areas(rng: np.random.Generator, informative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two areas in file order with different class mixes (like naip_nd then pucallpa)."""
    y = np.array([3] * 19 + [1] * 11 + [2] * 4 + [1] * 28 + [2] * 5 + [3] * 1)
    x = rng.normal(size=(len(y), 8)).astype(np.float32)
    if informative:
        x[np.arange(len(y)), y] += 4.0
    return x, y


def test_probes_use_stratified_folds_not_file_order():
    from training.evaluate import probes, stratified_folds

    x, y = _areas(np.random.default_rng(0), informative=True)
    keep = np.ones(len(y), bool)
    p = probes(x, y, keep)
    assert p["folds"] == 5 and p["n_test"] == len(y) and len(p["per_fold"]["linear"]) == 5
    assert p["class_counts"] == {"1": 39, "2": 9, "3": 20} and p["dropped_classes"] == {}
    # The old half split trained on one area and tested on the other (0.82 majority there).
    assert p["linear"] > 0.9 and p["knn5"] > 0.9
    # The fair baseline: the training fold's majority class (1) scored on each test fold.
    fold = stratified_folds(y, 5)
    want = [np.mean(y[fold == f] == np.bincount(y[fold != f]).argmax()) for f in range(5)]
    assert p["per_fold"]["majority"] == pytest.approx(want)
    assert p["majority"] == pytest.approx(39 / 68, abs=0.02)
    for f in range(5):  # every class in every test fold, sizes within one
        assert set(np.unique(y[fold == f])) == {1, 2, 3}
    assert np.ptp(np.bincount(fold)) <= 1
    assert probes(x, y, keep) == p  # seeded: same numbers again
    # Knowing the area alone: naip_nd is all class 3, pucallpa mostly class 1 -> 58 / 68.
    areas = np.array(["nd"] * 34 + ["pu"] * 34)
    areas[19:34] = "pu"  # rows 19-33 are pucallpa too (file order of the test split)
    pa = probes(x, y, keep, areas=areas)
    assert pa["area_majority"] == pytest.approx(58 / 68, abs=0.01)
    assert pa["linear"] == p["linear"] and p["area_majority"] == p["majority"]  # no areas


def test_probe_on_noise_stays_near_its_majority_baseline():
    from training.evaluate import probes

    x, y = _areas(np.random.default_rng(1), informative=False)
    p = probes(x, y, np.ones(len(y), bool))
    assert p["knn5"] < p["majority"] + 0.15 and p["linear"] < p["majority"] + 0.15
    assert all(p[f"{m}_std"] >= 0 for m in ("linear", "knn5", "majority"))


def test_probes_shrink_folds_drop_singletons_and_say_why_they_skip():
    from training.evaluate import probes

    rng = np.random.default_rng(2)
    y = np.array([0] * 12 + [1] * 3 + [2])  # class 2 has one sample, class 1 three
    x = rng.normal(size=(len(y), 4))
    p = probes(x, y, np.ones(len(y), bool))
    assert p["folds"] == 3 and p["dropped_classes"] == {"2": 1} and p["n_test"] == 15
    # The val split: 24 labelled samples, all one class.
    one = probes(x[:12].repeat(2, 0), np.zeros(24, np.int64), np.ones(24, bool))
    assert set(one) == {"skipped"} and "{0: 24}" in one["skipped"]
    assert "two classes" in one["skipped"]
    none = probes(x, np.full(len(y), -1), np.ones(len(y), bool))
    assert "0 labelled samples" in none["skipped"]
    # The report says why instead of leaving the probe out silently.
    res = {
        "n": 24,
        "retrieval": {},
        "probe": {},
        "baseline": {},
        "probe_skipped": {"aerial": one["skipped"]},
    }
    md = markdown(res)
    assert "No probe could run" in md and "Probe on aerial not run: 24 labelled" in md
