"""unigeo:classify writes the few-shot validation REPORT and applies MIN_CONFIDENCE (pytest-qgis)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.qgis

X0, Y0 = 500_000.0, 5_003_200.0  # top-left of the quadrant raster (conftest.utm_tif)


@pytest.fixture(scope="module")
def store(run, utm_tif, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_stores") / "utm.store"
    run("embedraster", _feedback(), INPUT=str(utm_tif), OUTPUT_STORE=str(out))
    return out


def _feedback():
    """A feedback that records warnings and infos."""
    from qgis.core import QgsProcessingFeedback

    class Recording(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings: list[str] = []
            self.infos: list[str] = []

        def pushWarning(self, text):  # noqa: N802 (QGIS API)
            self.warnings.append(text)

        def pushInfo(self, text):  # noqa: N802 (QGIS API)
            self.infos.append(text)

    return Recording()


@pytest.fixture(scope="module")
def examples():
    """Three 400-m boxes in the water and vegetation quadrants each, one in the built quadrant."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsRectangle, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "examples", "memory")
    layer.dataProvider().addAttributes([QgsField("lc", QVariant.String)])
    layer.updateFields()
    centres = [("water", X0 + d, Y0 - 400) for d in (300, 800, 1300)]
    centres += [("vegetation", X0 + 1600 + d, Y0 - 400) for d in (300, 800, 1300)]
    centres += [("built", X0 + 2400, Y0 - 2400)]
    feats = []
    for label, x, y in centres:
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x - 200, y - 200, x + 200, y + 200)))
        f.setAttributes([label])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_few_shot_writes_the_report_and_the_threshold(run, store, examples, tmp_path):
    fb = _feedback()
    res = run(
        "classify",
        fb,
        STORE=str(store),
        EXAMPLES=examples,
        CLASS_FIELD="lc",
        METHOD=1,
        MIN_CONFIDENCE=0.9,
        OUTPUT_CLASSES=str(tmp_path / "c.tif"),
        OUTPUT_CONFIDENCE=str(tmp_path / "cc.tif"),
        REPORT=str(tmp_path / "val.html"),
    )
    assert Path(res["REPORT"]) == tmp_path / "val.html"
    assert "<table" in (tmp_path / "val.html").read_text()
    rep = json.loads((tmp_path / "val.json").read_text())
    assert (tmp_path / "val.md").is_file()
    assert rep["method"] == "logreg" and rep["classes"] == ["built", "vegetation", "water"]
    assert rep["polygons"] == {"built": 1, "vegetation": 3, "water": 3}
    assert rep["folds_used"] == 3 and rep["accuracy"] == 1.0 and rep["min_confidence"] == 0.9
    assert list(rep["not_validatable"]) == ["built"]
    assert rep["provenance"]["method"] == "logreg"
    assert any("not validated: built" in w for w in fb.warnings)
    assert any(i.startswith("cross-validated accuracy 1.000") for i in fb.infos)
    with rasterio.open(tmp_path / "c.tif") as ds:
        cls = ds.read(1)
        assert ds.tags(1)["CLASS_3"] == "uncertain"
    with rasterio.open(tmp_path / "cc.tif") as ds:
        conf = ds.read(1)
    assert np.array_equal(cls == 3, conf < 0.9)  # exactly the low-confidence tiles


def test_no_report_unless_asked_and_none_for_zero_shot(run, store, examples, tmp_path):
    res = run(
        "classify",
        _feedback(),
        STORE=str(store),
        EXAMPLES=examples,
        CLASS_FIELD="lc",
        OUTPUT_CLASSES=str(tmp_path / "a.tif"),
        OUTPUT_CONFIDENCE=str(tmp_path / "ac.tif"),
    )
    assert not res.get("REPORT")
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert "CLASS_3" not in ds.tags(1)  # no threshold: no 'uncertain' class
    fb = _feedback()
    res = run(
        "classify",
        fb,
        STORE=str(store),
        OUTPUT_CLASSES=str(tmp_path / "z.tif"),
        OUTPUT_CONFIDENCE=str(tmp_path / "zc.tif"),
        REPORT=str(tmp_path / "z.json"),
    )
    assert not res.get("REPORT") and not (tmp_path / "z.json").exists()
    assert any("only written for few-shot" in w for w in fb.warnings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "ac.tif", "z.tif", "zc.tif"]


def test_bad_report_suffix_fails_before_writing(run, store, examples, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=r"\.json, \.html, \.md"):
        run(
            "classify",
            _feedback(),
            STORE=str(store),
            EXAMPLES=examples,
            CLASS_FIELD="lc",
            OUTPUT_CLASSES=str(tmp_path / "b.tif"),
            OUTPUT_CONFIDENCE=str(tmp_path / "bc.tif"),
            REPORT=str(tmp_path / "b.txt"),
        )
    assert list(tmp_path.iterdir()) == []
