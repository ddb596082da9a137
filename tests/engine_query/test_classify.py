"""Land-use classification: zero-shot from prompts, prototype and logreg few-shot, GeoTIFF output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from pyproj import CRS
from shapely.geometry import box

from engine.classify.fit import fit_logreg
from engine.classify.land_use import Classification, from_examples, write_classification, zero_shot
from engine.errors import InputError

D = 32


def _clustered_store(fx, rng, noise=0.25, invalid_row=None):
    """A 12 x 15 grid in three vertical bands of five columns (classes 0, 1, 2) around 3 centres.

    Returns the store, the per-tile true class and the three cluster centres.
    """
    centres = fx.unit(rng.standard_normal((3, D)))
    truth = np.repeat(np.arange(3), 5)[None, :].repeat(12, axis=0)
    vec = centres[truth] + noise * rng.standard_normal((12, 15, D)) / np.sqrt(D)
    valid = np.ones((12, 15), bool)
    if invalid_row is not None:
        valid[invalid_row] = False
    return fx.make_store(vec, valid), truth, centres


def _cell_box(fx, r0, c0, r1, c1):
    """A polygon covering the centres of local tiles rows r0..r1, cols c0..c1 (inclusive)."""
    ox, oy = fx.ORIGIN
    return box(ox + c0 * 10 + 1, oy - (r1 + 1) * 10 + 1, ox + (c1 + 1) * 10 - 1, oy - r0 * 10 - 1)


def test_zero_shot_picks_the_constructed_classes(fx, rng):
    store, truth, centres = _clustered_store(fx, rng, invalid_row=4)
    # two prompts per class whose mean points at the class centre
    off = fx.unit(rng.standard_normal(D)) * 0.3
    vocab = {}
    for i, name in enumerate(["water", "crops", "town"]):
        vocab[f"{name} a"], vocab[f"{name} b"] = centres[i] + off, centres[i] - off
    prompts = {n: [f"{n} a", f"{n} b"] for n in ["water", "crops", "town"]}
    model = fx.FakeModel(
        D,
        vocab,
        class_prompts={k: tuple(v) for k, v in prompts.items()},
        class_colors={"water": "#0000ff"},
        prompt_templates=("a photo of {}",),
    )
    res = zero_shot(store, model)
    assert res.classes == ["water", "crops", "town"]
    assert res.class_raster.dtype == np.int16 and res.confidence.dtype == np.float32
    assert np.all(res.class_raster[4] == -1) and np.all(np.isnan(res.confidence[4]))
    ok = store.valid
    assert np.mean(res.class_raster[ok] == truth[ok]) == 1.0
    assert np.all((res.confidence[ok] > 1 / 3) & (res.confidence[ok] <= 1.0))
    assert res.colors[0] == "#0000ff" and len(set(res.colors)) == 3
    assert model.calls[0][1][1] is None  # bundle prompts are final, not templated again
    # confidence is the softmax of cos/T of the chosen class: check one tile by hand
    protos = fx.unit(
        np.stack([fx.unit(np.stack([c + off, c - off])).mean(axis=0) for c in centres])
    )
    cos = protos @ store.embeddings[0, 0].astype(np.float64)
    p = np.exp((cos - cos.max()) / 0.01)
    assert res.confidence[0, 0] == pytest.approx(p.max() / p.sum(), rel=1e-4)
    margin = zero_shot(store, model, confidence="margin").confidence[0, 0]
    assert margin == pytest.approx(np.sort(cos)[-1] - np.sort(cos)[-2], abs=1e-5)


def test_zero_shot_errors(fx, rng):
    store, _, centres = _clustered_store(fx, rng)
    model = fx.FakeModel(D, {"a": centres[0], "b": centres[1]})
    with pytest.raises(InputError, match="at least two classes"):
        zero_shot(store, model)  # the bundle has no class prompts
    with pytest.raises(InputError, match="no prompts"):
        zero_shot(store, model, {"x": ["a"], "y": [" "]})
    with pytest.raises(InputError, match="temperature"):
        zero_shot(store, model, {"x": ["a"], "y": ["b"]}, temperature=0)
    with pytest.raises(InputError, match="confidence"):
        zero_shot(store, model, {"x": ["a"], "y": ["b"]}, confidence="entropy")


@pytest.mark.parametrize("method", ["prototype", "logreg"])
def test_few_shot_recovers_cluster_labels(fx, rng, method):
    store, truth, _ = _clustered_store(fx, rng, noise=0.8)
    examples = [
        (_cell_box(fx, 0, 0, 1, 1), "water"),  # 4 tiles of class 0
        (_cell_box(fx, 10, 6, 11, 7), "crops"),  # 4 tiles of class 1
        (_cell_box(fx, 5, 12, 6, 13), "town"),  # 4 tiles of class 2
        (_cell_box(fx, 8, 2, 8, 3), "water"),  # a second water polygon
    ]
    res = from_examples(store, examples, method=method)
    assert res.classes == ["crops", "town", "water"]  # sorted label names
    remap = np.array([2, 0, 1])  # truth index -> result class index
    acc = np.mean(res.class_raster == remap[truth])
    assert acc > 0.95, acc
    assert res.params["examples"] == {"crops": 4, "town": 4, "water": 6}
    assert np.all((res.confidence > 1 / 3 - 1e-6) & (res.confidence <= 1 + 1e-6))


def test_logreg_is_deterministic_and_matches_probabilities(rng):
    x = np.concatenate([rng.normal(m, 0.3, (20, 4)) for m in (-1.0, 1.0)]).astype(np.float32)
    y = np.repeat([0, 1], 20)
    a, b = fit_logreg(x, y, 2), fit_logreg(x, y, 2)
    np.testing.assert_array_equal(a.weight, b.weight)
    logits = x @ a.weight + a.bias
    assert np.mean(np.argmax(logits, axis=1) == y) == 1.0
    assert not a.cosine


def test_few_shot_with_too_few_examples_raises(fx, rng):
    store, _, _ = _clustered_store(fx, rng, invalid_row=0)
    with pytest.raises(InputError, match="at least two classes"):
        from_examples(store, [(_cell_box(fx, 2, 0, 3, 1), "water")])
    with pytest.raises(InputError, match=r"town \(1\)"):
        from_examples(
            store, [(_cell_box(fx, 2, 0, 3, 1), "water"), (_cell_box(fx, 5, 5, 5, 5), "town")]
        )
    with pytest.raises(InputError, match=r"town \(0\)"):  # polygon only over nodata tiles
        from_examples(
            store, [(_cell_box(fx, 2, 0, 3, 1), "water"), (_cell_box(fx, 0, 5, 0, 9), "town")]
        )
    with pytest.raises(InputError, match="method"):
        from_examples(store, [], method="svm")


def test_write_classification_paletted_with_names(fx, rng, tmp_path):
    store, truth, _ = _clustered_store(fx, rng, invalid_row=3)
    res = Classification(
        ["water", "crops", "town"],
        np.where(store.valid, truth, -1).astype(np.int16),
        np.where(store.valid, 0.75, np.nan).astype(np.float32),
        ["#0000ff", "#ffff00", "#ff0000"],
        "prototype",
        {"temperature": 0.01},
    )
    cp, fp = write_classification(
        tmp_path / "cls.tif", tmp_path / "conf.tif", store, res, {"query": "few-shot"}
    )
    with rasterio.open(cp) as ds:
        assert ds.dtypes == ("uint8",) and ds.nodata == 255
        assert CRS.from_user_input(ds.crs.to_wkt()) == CRS.from_user_input(fx.UTM)
        assert ds.transform.to_gdal() == pytest.approx(store.grid.geotransform)
        band = ds.read(1)
        cmap = ds.colormap(1)
        tags = ds.tags(1)
        meta = ds.tags()
    np.testing.assert_array_equal(band, np.where(store.valid, truth, 255))
    assert cmap[0] == (0, 0, 255, 255) and cmap[2] == (255, 0, 0, 255)
    assert [tags[f"CLASS_{i}"] for i in range(3)] == ["water", "crops", "town"]
    assert json.loads(meta["UNIGEO_CLASSES"]) == ["water", "crops", "town"]
    assert meta["UNIGEO_QUERY"] == "few-shot" and meta["UNIGEO_METHOD"] == "prototype"
    with rasterio.open(fp) as ds:
        conf = ds.read(1)
        assert ds.dtypes == ("float32",)
    assert np.all(np.isnan(conf[3])) and np.all(conf[store.valid] == 0.75)


def test_write_classification_failure_leaves_neither_file(fx, rng, tmp_path, monkeypatch):
    store, truth, _ = _clustered_store(fx, rng)
    res = Classification(
        ["a", "b", "c"],
        truth.astype(np.int16),
        np.ones(truth.shape, np.float32),
        ["#000000", "#111111", "#222222"],
    )
    calls = []
    from osgeo import gdal

    real = gdal.Band.WriteArray

    def fail_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the class raster is done, the confidence raster fails
            raise OSError("no space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(gdal.Band, "WriteArray", fail_second)
    with pytest.raises(OSError, match="no space"):
        write_classification(tmp_path / "c.tif", tmp_path / "f.tif", store, res)
    assert list(tmp_path.iterdir()) == []
    bad = Classification(["a"], truth.astype(np.int16), res.confidence, ["red"])
    with pytest.raises(InputError, match="#rrggbb"):
        write_classification(tmp_path / "c.tif", tmp_path / "f.tif", store, bad)
    assert list(tmp_path.iterdir()) == []
