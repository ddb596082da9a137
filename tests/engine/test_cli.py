"""The CLI end to end: info, embed, heatmap (text and point), hits, classify, and its errors."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio

from engine.cli.main import main

NAIP = "naip_north_dakota/m_4709963_se_14_1_20200831.tif"


@pytest.fixture(scope="module")
def naip_store(tmp_path_factory, analytic_bundle, shared_data):
    out = tmp_path_factory.mktemp("cli") / "naip.store"
    # A sub-extent (in the raster's UTM CRS) keeps the test fast.
    rc = main(
        [
            "embed",
            str(shared_data / NAIP),
            "--model",
            str(analytic_bundle),
            "--out",
            str(out),
            "--extent",
            "487500,5206000,490500,5208500",
        ]
    )
    assert rc == 0
    return out


def test_info_lists_every_encoder(analytic_bundle, capsys):
    assert main(["info", str(analytic_bundle)]) == 0
    out = capsys.readouterr().out
    for m in ("aerial", "streetview", "dsm", "text", "gps"):
        assert f"{m}" in out and "ok" in out
    assert "provider CPUExecutionProvider" in out


def test_help_carries_examples(capsys):
    with pytest.raises(SystemExit):
        main(["heatmap", "--help"])
    assert "python -m engine heatmap" in capsys.readouterr().out


def test_embed_then_queries_on_real_raster(naip_store, analytic_bundle, tmp_path, capsys):
    from engine.store.npy import EmbeddingStore

    store = EmbeddingStore.open(naip_store)
    assert store.valid.sum() > 0 and store.embeddings.shape[-1] == 8
    m = str(analytic_bundle)
    heat = tmp_path / "water.tif"
    assert (
        main(["heatmap", str(naip_store), "--model", m, "--text", "water", "--out", str(heat)]) == 0
    )
    with rasterio.open(heat) as r:
        assert r.count == 2 and r.crs.to_epsg() == 26914
        cos, pct = r.read(1), r.read(2)
    assert np.nanmax(cos) <= 1.0 + 1e-6 and np.nanmin(pct) == 0 and np.nanmax(pct) == 100
    assert np.isnan(cos).sum() == (~store.valid).sum()

    pt = tmp_path / "point.tif"
    x, y = store.grid.tile_center(3, 4)
    assert (
        main(["heatmap", str(naip_store), "--model", m, "--point", f"{x},{y}", "--out", str(pt)])
        == 0
    )
    with rasterio.open(pt) as r:
        assert r.read(1)[3, 4] == pytest.approx(1.0, abs=2e-3)  # the clicked tile matches itself

    hits = tmp_path / "hits.gpkg"
    assert (
        main(
            [
                "hits",
                str(naip_store),
                "--model",
                m,
                "--point",
                f"{x},{y}",
                "--k",
                "5",
                "--out",
                str(hits),
            ]
        )
        == 0
    )
    info = pyogrio.read_info(hits)
    assert info["features"] == 5 and "26914" in info["crs"]

    cls = tmp_path / "classes.tif"
    assert main(["classify", str(naip_store), "--model", m, "--out", str(cls)]) == 0
    with rasterio.open(cls) as r:
        classes = r.read(1)
        assert r.colormap(1) and set(np.unique(classes)) <= {0, 1, 2, 3, 255}
    assert (tmp_path / "classes_confidence.tif").is_file()


def test_errors_are_clear_and_write_nothing(naip_store, analytic_bundle, tmp_path, capsys):
    out = tmp_path / "x.tif"
    assert (
        main(
            ["heatmap", str(naip_store), "--model", str(tmp_path), "--text", "a", "--out", str(out)]
        )
        == 2
    )
    assert "bundle.json" in capsys.readouterr().err
    assert (
        main(["heatmap", str(naip_store), "--model", str(analytic_bundle), "--out", str(out)]) == 2
    )
    assert "give a query" in capsys.readouterr().err
    assert (
        main(
            [
                "heatmap",
                str(naip_store),
                "--model",
                str(analytic_bundle),
                "--text",
                "   ",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "error:" in capsys.readouterr().err
    assert (
        main(
            [
                "embed",
                str(tmp_path / "missing.tif"),
                "--model",
                str(analytic_bundle),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "missing.tif" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "s").exists()


def test_store_from_another_model_is_refused(naip_store, tmp_path, capsys):
    from tests.fixtures.analytic_bundle import make_analytic_bundle

    other = make_analytic_bundle(tmp_path / "other", name="other-model")
    assert (
        main(
            [
                "heatmap",
                str(naip_store),
                "--model",
                str(other),
                "--text",
                "water",
                "--out",
                str(tmp_path / "h.tif"),
            ]
        )
        == 2
    )
    assert "another model" in capsys.readouterr().err


def test_index_then_ann_hits_match_exact_hits(naip_store, analytic_bundle, tmp_path):
    """'index' builds a FAISS index beside the store; 'hits --ann' finds what exact search finds."""
    pytest.importorskip("faiss")
    from engine.store.npy import EmbeddingStore

    m = str(analytic_bundle)
    assert main(["index", str(naip_store), "--kind", "flat"]) == 0
    assert (naip_store / "ann" / "index.json").is_file()
    store = EmbeddingStore.open(naip_store)  # still a valid store with the index inside
    x, y = store.grid.tile_center(2, 2)
    out = {}
    for name, extra in (("exact", []), ("ann", ["--ann"])):
        out[name] = tmp_path / f"{name}.gpkg"
        args = ["hits", str(naip_store), "--model", m, "--point", f"{x},{y}", "--k", "5"]
        assert main([*args, *extra, "--out", str(out[name])]) == 0
    exact, ann = (pyogrio.raw.read(out[k])[-1] for k in ("exact", "ann"))  # field arrays
    assert len(exact[0]) == 5
    names = pyogrio.read_info(out["exact"])["fields"].tolist()
    for field in ("rank", "row", "col"):
        i = names.index(field)
        assert list(ann[i]) == list(exact[i]), field
    i = names.index("score")
    np.testing.assert_allclose(ann[i], exact[i], atol=1e-6)


def test_dsm_is_embedded_in_metres_by_default(analytic_bundle, shared_data, tmp_path):
    """--modality dsm reads heights in metres (area-average), as Processing and training do."""
    import json

    dsm = shared_data / "alexandria_dsm" / "dsm.tif"
    out = tmp_path / "d.store"
    assert main(["embed", str(dsm), "--model", str(analytic_bundle), "--modality", "dsm",
                 "--out", str(out)]) == 0  # fmt: skip
    info = json.loads((out / "store.json").read_text())
    assert '"scaling": "divide:1"' in json.dumps(info)
    out2 = tmp_path / "p.store"
    assert main(["embed", str(dsm), "--model", str(analytic_bundle), "--modality", "dsm",
                 "--scale", "percentile", "--out", str(out2)]) == 0  # fmt: skip
    assert "percentile" in (out2 / "store.json").read_text()
