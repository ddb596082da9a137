"""Few-shot validation: polygon-grouped stratified folds, the report files, the confidence cut."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

import engine.classify.report as R
import engine.classify.validation as V
from engine.classify.land_use import Classification, from_examples, write_classification
from engine.errors import InputError

D = 32
NAMES = ("water", "crops", "town")


def _cell_box(fx, r0, c0, r1, c1):
    """A polygon covering the centres of local tiles rows r0..r1, cols c0..c1 (inclusive)."""
    ox, oy = fx.ORIGIN
    return box(ox + c0 * 10 + 1, oy - (r1 + 1) * 10 + 1, ox + (c1 + 1) * 10 - 1, oy - r0 * 10 - 1)


def _blocks(fx, rng, noise=0.25, pure_noise=False):
    """A 12 x 18 store in three 6-column class bands; 24 polygons of 3 x 3 tiles (8 per class)."""
    centres = fx.unit(rng.standard_normal((3, D)))
    truth = np.repeat(np.arange(3), 6)[None, :].repeat(12, axis=0)
    vec = centres[truth] + noise * rng.standard_normal((12, 18, D)) / np.sqrt(D)
    if pure_noise:
        vec = rng.standard_normal((12, 18, D))
    polys = [
        (_cell_box(fx, r, c, r + 2, c + 2), NAMES[c // 6])
        for r in range(0, 12, 3)
        for c in range(0, 18, 3)
    ]
    return fx.make_store(vec), polys


@pytest.mark.parametrize("method", ["prototype", "logreg"])
def test_separable_store_validates_perfectly(fx, rng, method):
    store, polys = _blocks(fx, rng)
    rep = V.cross_validate(store, polys, method, folds=5, seed=3)
    assert rep.classes == sorted(NAMES) and rep.folds_used == 5
    assert rep.accuracy == 1.0 and rep.balanced_accuracy == 1.0
    assert rep.polygons == {c: 8 for c in NAMES} and rep.tiles == {c: 72 for c in NAMES}
    assert np.array_equal(rep.confusion, np.diag([72, 72, 72]))
    for c in NAMES:
        m = rep.per_class[c]
        assert (m["precision"], m["recall"], m["f1"], m["tested_tiles"]) == (1.0, 1.0, 1.0, 72)
        assert m["folds"] == 5
    # balanced classes dealt evenly: the training-fold majority is always a test minority
    assert rep.baseline_accuracy < 1 / 3 and rep.chance_accuracy == pytest.approx(1 / 3, abs=0.02)
    assert rep.not_validatable == {} and rep.warnings == []
    assert len(rep.fold_accuracy) == 5 and all(a == 1.0 for a in rep.fold_accuracy)


@pytest.mark.parametrize("method", ["prototype", "logreg"])
def test_noise_store_is_no_better_than_guessing(fx, rng, method):
    store, polys = _blocks(fx, rng, pure_noise=True)
    rep = V.cross_validate(store, polys, method)
    assert abs(rep.accuracy - rep.chance_accuracy) < 0.12, rep.summary()
    assert rep.accuracy < rep.baseline_accuracy + 0.2
    assert np.sum(rep.confusion) == 216


def test_folds_never_split_a_polygon(fx, rng, monkeypatch):
    """Record every fold's train/test tiles: each polygon (and overlapping pair) is on one side."""
    store, polys = _blocks(fx, rng)
    # a polygon overlapping two others of its class: the three must stay together
    polys.append((_cell_box(fx, 1, 1, 4, 1), "water"))
    seen = []
    fit, predict = V.fit_classifier, V._predict
    monkeypatch.setattr(V, "fit_classifier", lambda x, *a: (seen.append([x]), fit(x, *a))[1])
    monkeypatch.setattr(
        V, "_predict", lambda lin, x, t: (seen[-1].append(x), predict(lin, x, t))[1]
    )
    rep = V.cross_validate(store, polys, "prototype", folds=4)
    assert rep.folds_used == 4 and len(seen) == 4
    key = {store.embeddings[r, c].tobytes(): (r, c) for r in range(12) for c in range(18)}
    tested = set()
    for train, test in seen:
        tr = {key[v.astype(np.float16).tobytes()] for v in train}
        te = {key[v.astype(np.float16).tobytes()] for v in test}
        assert not tr & te and len(te) == len(test)  # each tile once (overlap deduplicated)
        tested |= te
        for r0, c0 in [(r, c) for r in range(0, 12, 3) for c in range(0, 18, 3)]:
            cells = {(r, c) for r in range(r0, r0 + 3) for c in range(c0, c0 + 3)}
            assert cells <= tr or cells <= te
        glued = {(r, c) for r in range(0, 6) for c in range(0, 3)}  # the overlap's group
        assert glued <= tr or glued <= te
    assert len(tested) == 216 and rep.polygons["water"] == 7  # two groups merged by the overlap


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    folds=st.integers(2, 6),
    seed=st.integers(0, 9),
)
def test_assign_folds_is_stratified(sizes, folds, seed):
    group_class = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    group_size = (np.arange(len(group_class)) % 5) + 1
    fold, k = V.assign_folds(group_class, group_size, folds, seed)
    assert k == (min(folds, max(sizes)) if max(sizes) >= 2 else 0)
    for c, n in enumerate(sizes):
        f = fold[group_class == c]
        if n < 2:
            assert np.all(f == -1)  # a single polygon is never held out
        else:
            assert len(set(f.tolist())) == min(n, k) and np.all((f >= 0) & (f < k))
    again, _ = V.assign_folds(group_class, group_size, folds, seed)
    assert np.array_equal(fold, again)


def test_single_polygon_class_is_not_validatable(fx, rng):
    store, polys = _blocks(fx, rng)
    crops = [p for p in polys if p[1] == "crops"][:3]
    polys = [p for p in polys if p[1] == "water"] + crops + [(_cell_box(fx, 0, 12, 2, 14), "town")]
    rep = V.cross_validate(store, polys, "logreg", folds=5)
    assert rep.polygons == {"water": 8, "crops": 3, "town": 1}
    assert list(rep.not_validatable) == ["town"] and "one polygon" in rep.warnings[0]
    assert rep.per_class["town"]["recall"] is None and rep.per_class["town"]["tested_tiles"] == 0
    assert rep.per_class["crops"]["folds"] == 3 and rep.per_class["water"]["folds"] == 5
    assert np.sum(rep.confusion[rep.classes.index("town")]) == 0 and rep.accuracy == 1.0
    only_one = [polys[0], polys[-1]]
    empty = V.cross_validate(store, only_one, "prototype")
    assert empty.folds_used == 0 and empty.accuracy is None and "two polygons" in empty.summary()


def test_bad_input_is_refused(fx, rng):
    store, polys = _blocks(fx, rng)
    with pytest.raises(InputError, match="method"):
        V.cross_validate(store, polys, "knn")
    with pytest.raises(InputError, match="2 folds"):
        V.cross_validate(store, polys, folds=1)
    with pytest.raises(InputError, match="two classes"):
        V.cross_validate(store, [p for p in polys if p[1] == "water"])


def test_min_confidence_reports_coverage(fx, rng):
    store, polys = _blocks(fx, rng, noise=1.5)
    rep = V.cross_validate(store, polys, "logreg", min_confidence=0.9)
    assert 0.0 < rep.coverage < 1.0 and rep.min_confidence == 0.9
    assert rep.confident_accuracy >= rep.accuracy


def test_report_files_are_written_together(fx, rng, tmp_path, monkeypatch):
    store, polys = _blocks(fx, rng)
    rep = V.cross_validate(store, polys, "prototype")
    paths = R.write_validation_report(tmp_path / "r.html", rep, provenance={"model": "m"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json", "r.md"]
    data = json.loads(paths[".json"].read_text())
    assert data["accuracy"] == 1.0 and data["provenance"] == {"model": "m"}
    assert data["confusion"] == rep.confusion and data["per_class"]["town"]["tested_tiles"] == 72
    assert "<table" in paths[".html"].read_text() and "| town | 8 | 72 | 72 |" in (
        paths[".md"].read_text()
    )
    assert R.default_report_path(tmp_path / "cls.tif") == tmp_path / "cls_validation.json"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    monkeypatch.setattr(R, "render_markdown", lambda r: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        R.write_validation_report(tmp_path / "r.json", rep)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporaries
    with pytest.raises(InputError, match=".json, .html, .md"):
        R.write_validation_report(tmp_path / "r.txt", rep)


def _toy(conf):
    cls = np.array([[0, 1], [1, -1]], np.int16)
    return Classification(["a", "b"], cls, np.asarray(conf, np.float32), ["#ff0000", "#00ff00"])


def test_min_confidence_marks_uncertain_tiles(fx, rng, tmp_path):
    res = V.apply_min_confidence(_toy([[0.9, 0.55], [0.7, np.nan]]), 0.6)
    assert res.classes == ["a", "b", "uncertain"] and res.colors[-1] == V.UNCERTAIN_COLOR
    assert res.class_raster.tolist() == [[0, 2], [1, -1]]  # nodata stays nodata
    assert res.params["uncertain_tiles"] == 1 and res.params["uncertain_class"] == 2
    per = V.apply_min_confidence(_toy([[0.9, 0.55], [0.7, np.nan]]), {"a": 0.95})
    assert per.class_raster.tolist() == [[2, 1], [1, -1]]
    assert V.apply_min_confidence(_toy([[1, 1], [1, 1]]), None).classes == ["a", "b"]
    for bad, msg in ((1.5, "up to 1"), ({"c": 0.5}, "unknown classes")):
        with pytest.raises(InputError, match=msg):
            V.apply_min_confidence(_toy([[1, 1], [1, 1]]), bad)
    # on a real few-shot result, written to disk: value 2 = 'uncertain', 255 = nodata
    store, polys = _blocks(fx, rng, noise=1.5)
    few = from_examples(store, polys[:6], "logreg")
    cut = V.apply_min_confidence(few, 0.8)
    low = few.confidence < 0.8
    assert 0 < low.sum() < low.size and np.all(cut.class_raster[low] == 3)
    assert np.array_equal(cut.class_raster[~low], few.class_raster[~low])
    write_classification(tmp_path / "c.tif", tmp_path / "cc.tif", store, cut)
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.tags(1)["CLASS_3"] == "uncertain" and np.array_equal(ds.read(1) == 3, low)
        assert ds.colormap(1)[3][:3] == (158, 158, 158)


def test_cli_few_shot_with_report_and_threshold(analytic_bundle, tmp_path, capsys):
    """embed a 4-colour raster, classify it from a GeoJSON of labelled boxes, check every file."""
    from engine.cli.main import main

    data = np.zeros((4, 320, 320), np.uint8)
    colours = {"water": (60, 70, 200, 40), "veg": (50, 90, 50, 210), "bare": (210, 80, 60, 70)}
    for col, (r, c) in zip(colours.values(), [(0, 0), (0, 160), (160, 0)], strict=True):
        data[:, r : r + 160, c : c + 160] = np.array(col)[:, None, None]
    data[:, 160:, 160:] = 128
    data = (data + np.random.default_rng(5).integers(0, 6, data.shape)).astype(np.uint8)
    tif = tmp_path / "q.tif"
    t = Affine(10.0, 0, 500_000.0, 0, -10.0, 5_003_200.0)
    prof = dict(driver="GTiff", width=320, height=320, count=4, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(tif, "w", transform=t, **prof) as dst:
        dst.write(data)
        for i, n in enumerate(("red", "green", "blue", "nir"), start=1):
            dst.set_band_description(i, n)
    store = tmp_path / "q.store"
    assert main(["embed", str(tif), "--model", str(analytic_bundle), "--out", str(store)]) == 0
    feats = []
    for name, (r, c) in zip(colours, [(0, 0), (0, 160), (160, 0)], strict=True):
        for dx in (200, 1000):  # two boxes per class, 160-m tiles: several tiles each
            x0, y0 = 500_000 + c * 10 + dx, 5_003_200 - r * 10 - 200
            geom = {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + 320, y0],
                    [x0 + 320, y0 - 320], [x0, y0 - 320], [x0, y0]]]}  # fmt: skip
            feats.append({"type": "Feature", "properties": {"lc": name}, "geometry": geom})
    ex = tmp_path / "ex.geojson"
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    ex.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": feats}))
    out = tmp_path / "cls.tif"
    args = ["classify", str(store), "--model", str(analytic_bundle), "--out", str(out)]
    few = [*args, "--examples", str(ex), "--class-field", "lc", "--method", "logreg"]
    assert main([*few, "--min-confidence", "0.99"]) == 0
    text = capsys.readouterr().out
    rep = json.loads((tmp_path / "cls_validation.json").read_text())
    assert rep["accuracy"] == 1.0 and rep["folds_used"] == 2 and rep["min_confidence"] == 0.99
    assert rep["polygons"] == {"bare": 2, "veg": 2, "water": 2} and "accuracy 1.000" in text
    assert (tmp_path / "cls_validation.html").is_file() and (
        tmp_path / "cls_validation.md"
    ).is_file()
    with rasterio.open(out) as ds:
        assert ds.tags(1)["CLASS_3"] == "uncertain" and 3 in ds.read(1)  # the grey quadrant
    assert main([*few, "--class-field", "nope"]) == 2
    assert main([*args, "--report", str(tmp_path / "z.json")]) == 2
    err = capsys.readouterr().err
    assert "no field 'nope'" in err and "give --examples too" in err
    assert not (tmp_path / "z.json").exists()
