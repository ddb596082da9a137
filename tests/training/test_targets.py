"""Held-out measures of issue 18 (training.targets): the baselines they are reported beside."""

from __future__ import annotations

import numpy as np
import pytest

from training.heldout import Scene, pixel_stats
from training.targets import chance_at_k, cross_date, stats_embedder


def _places(n: int, seed: int, size: int = 16) -> np.ndarray:
    """``n`` chips [6, size, size] with place-specific band levels and texture; SWIR2 absent."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.05, 0.6, (n, 6, 1, 1)) + rng.normal(0, 0.05, (n, 6, size, size))
    base[:, 5] = np.nan
    return base.astype(np.float32)


def _scene(second: np.ndarray, first: np.ndarray) -> Scene:
    views = [np.stack([a, b]) for a, b in zip(first, second, strict=True)]
    rows = [{"id": i} for i in range(len(views))]
    return Scene("t", rows, views, [["2018-06-01", "2020-06-01"]] * len(views))


def test_pixel_statistics_find_the_same_place_across_dates_and_not_other_places():
    """A second date 10 % darker with new noise: the baseline finds each place (R@1 near 1);
    against unrelated chips it is near chance (1/n)."""
    first = _places(40, 0)
    rng = np.random.default_rng(1)
    darker = first * 0.9 + rng.normal(0, 0.01, first.shape).astype(np.float32)
    same = _scene(darker, first)
    res = cross_date(None, same, stats_embedder(same))
    assert res["n"] == 40 and res["chance@1"] == pytest.approx(1 / 40)
    assert res["R@1"] >= 0.9
    other = _scene(_places(40, 2), first)
    assert cross_date(None, other, stats_embedder(other))["R@1"] <= 0.2


def test_stats_embedder_is_one_fixed_transform_unit_norm_and_finite_with_absent_bands():
    first = _places(10, 3)
    scene = _scene(first * 0.5, first)
    embed = stats_embedder(scene)
    a, b = embed(first[:4]), embed(first)
    assert np.isfinite(b).all()
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a, b[:4], rtol=1e-5, atol=1e-6)  # independent of the batch
    stats = pixel_stats(first)
    assert stats.shape == (10, 6 * 6) and (stats[:, 5] == 0).all()  # absent band: zero, flag 0
    assert (stats[:, -1] == 0).all() and (stats[:, -6:-1] == 1).all()


def test_chance_at_k_counts_every_correct_item():
    assert chance_at_k(np.arange(10), 1) == pytest.approx(0.1)
    assert chance_at_k(np.arange(10), 10) == pytest.approx(1.0)
    # pairs: 2 correct items of 10, k = 1 -> 0.2
    assert chance_at_k(np.repeat(np.arange(5), 2), 1) == pytest.approx(0.2)


def test_report_shows_the_cross_date_baseline():
    from training.targets_report import markdown

    res = {"dataset": "d", "holdout": [], "bundles": {
        "b": {"size_mb": 1.0, "version": "0", "scenes": {}, "cross_date": {
            "R@1": 0.15, "n": 32, "chance@1": 0.031}}},
        "cross_date_baselines": {"pixel statistics": {"R@1": 0.422},
                                 "frozen Lite0": {"R@1": 0.5}}}  # fmt: skip
    md = markdown(res)
    assert "| 0.150 | pixel statistics 0.422, frozen Lite0 0.500, chance 0.031, n 32 |" in md
    # columns: a bundle folder with its version (make model's ship vs baseline), a checkpoint's
    # run folder without the config's version, then the references
    res["bundles"] = {"out/ship": res["bundles"]["b"], "out/baseline": {**res["bundles"]["b"],
                      "version": "0.2.0"}, "w/frozen/checkpoint.pt": res["bundles"]["b"]}  # fmt: skip
    res["bundles"]["out/ship"] = {**res["bundles"]["out/ship"], "version": "0.3.0"}
    head = next(x for x in markdown(res).splitlines() if x.startswith("| measure"))
    assert head == "| measure | ship (0.3.0) | baseline (0.2.0) | frozen | reference |"
    # two bundles in folders of the same name and version: their parent folders tell them apart
    res["bundles"]["cand/ship"] = {**res["bundles"]["out/ship"]}
    head = next(x for x in markdown(res).splitlines() if x.startswith("| measure"))
    assert head == ("| measure | out/ship (0.3.0) | baseline (0.2.0) | frozen | cand/ship (0.3.0) "
                    "| reference |")  # fmt: skip


def test_lite0_baseline_embeds_chips_alike_across_brightness_and_apart_across_places():
    """The frozen-backbone reference: 1280-d, unit norm, finite with absent bands (NaN), and the
    same place 10 % darker is nearer than another place."""
    embed = __import__("training.targets", fromlist=["lite0_embedder"]).lite0_embedder()
    a = _places(6, 4, size=64)  # the aerial tower's chip size
    e, d = embed(a), embed(a * 0.9)
    assert e.shape == (6, 1280) and np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    sim = e @ d.T
    assert (sim.diagonal() > np.where(np.eye(6, dtype=bool), -1, sim).max(1)).all()


def _polygon_world(dims: int = 100, effect: float = 0.2, n_poly: int = 12, per_poly: int = 6):
    """Three classes of polygons; every one of ``dims`` dimensions carries a little of the class
    (and of its polygon) under unit noise, as embedding dimensions do: with few training
    polygons a weakly regularised probe overfits, a strongly regularised one averages."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 1, (3, dims))
    labels, groups, rows = [], [], []
    for c in range(3):
        for p in range(n_poly):
            centre = effect * (means[c] + rng.normal(0, 0.3, dims))
            for _ in range(per_poly):
                rows.append(centre + rng.normal(0, 1, dims))
                labels.append(c)
                groups.append([f"c{c}p{p}"])
    return np.array(rows), np.array(labels), groups


def test_few_shot_probe_with_inner_cv_picks_c_from_training_polygons_only():
    """cs=(1.0,) is exactly the fixed-C probe (same draws); a grid chooses C per repeat by
    grouped CV on the training chips, and on many weakly informative dimensions it chooses
    strong regularisation and scores higher than C = 1."""
    from training.targets import FEW_SHOT_CS, few_shot

    x, y, g = _polygon_world()
    feats = {"noisy": x}
    fixed = few_shot(feats, y, g, per_class=5, repeats=4)
    one = few_shot(feats, y, g, per_class=5, repeats=4, cs=(1.0,))
    assert one["noisy"]["mean"] == fixed["noisy"]["mean"] and one["noisy"]["c"] == [1.0] * 4
    tuned = few_shot(feats, y, g, per_class=5, repeats=4, cs=FEW_SHOT_CS)
    assert tuned["cs"] == list(FEW_SHOT_CS) and len(tuned["noisy"]["c"]) == 4
    assert set(tuned["noisy"]["c"]) <= set(FEW_SHOT_CS)
    assert max(tuned["noisy"]["c"]) <= 0.03  # stronger regularisation chosen every time
    assert tuned["noisy"]["mean"] > fixed["noisy"]["mean"] + 0.03
    assert tuned["n_test_mean"] == fixed["n_test_mean"]  # the same draws


def test_few_shot_scores_the_plugins_own_classifiers_on_the_same_draws():
    """engine_methods: UniGeo's nearest-prototype and logistic-regression classifiers
    (engine.classify.fit) score the embedding on the draws of the sklearn probe; classes that
    are not contiguous integers map back correctly; on separable features both are near 1."""
    from training.targets import few_shot

    x, y, g = _polygon_world(dims=16, effect=1.5)
    y = np.array([3, 5, 8])[y]  # class ids as a dataset holds them
    x = x / np.linalg.norm(x, axis=1, keepdims=True)  # unit embeddings
    r = few_shot({"embedding": x}, y, g, per_class=5, repeats=3,
                 engine_methods=("prototype", "logreg"))  # fmt: skip
    assert r["classes"] == [3, 5, 8]
    assert r["engine_prototype"]["mean"] > 0.9 and r["engine_logreg"]["mean"] > 0.9
    assert "c" not in r["engine_prototype"] and len(r["embedding"]["c"]) == 3
    shuffled = few_shot({"embedding": x}, np.random.default_rng(1).permutation(y), g,
                        per_class=5, repeats=3,
                        engine_methods=("prototype",))  # fmt: skip
    assert shuffled["engine_prototype"]["mean"] < 0.6  # labels that do not follow the features
