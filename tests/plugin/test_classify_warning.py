"""Zero-shot honesty in the plugin: Processing warnings, the classify task's ``warning``, prompts.

Runs on the analytic bundle (no declared accuracy, no logit scale: must warn) and on a copy
that declares a good measured zero-shot accuracy and a logit scale (must not warn).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio

pytestmark = pytest.mark.qgis

GOOD = {"zero_shot": {"accuracy": 0.92, "n_test": 80, "classes": 4}, "source": "test"}


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    """The analytic bundle, declaring a measured zero-shot accuracy of 0.92 and a logit scale."""
    from tests.fixtures.analytic_bundle import make_analytic_bundle

    folder = tmp_path_factory.mktemp("good_bundle")
    return make_analytic_bundle(folder, name="good", logit_scale=30.0, evaluation=GOOD)


@pytest.fixture(scope="module")
def stores(run, utm_tif, good_bundle, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("warn_stores")
    out = {"analytic": root / "a.store", "good": root / "g.store"}
    run("embedraster", _feedback(), INPUT=str(utm_tif), OUTPUT_STORE=str(out["analytic"]))
    run(
        "embedraster",
        _feedback(),
        INPUT=str(utm_tif),
        OUTPUT_STORE=str(out["good"]),
        MODEL=str(good_bundle),
    )
    return out


def _feedback():
    """A feedback that records warnings (pushWarning) and non-fatal errors."""
    from qgis.core import QgsProcessingFeedback

    class Recording(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings: list[str] = []

        def pushWarning(self, text):  # noqa: N802 (QGIS API)
            self.warnings.append(text)

        def reportError(self, text, fatalError=False):  # noqa: N802, N803 (QGIS API)
            self.warnings.append(text)

    return Recording()


def _params(path) -> dict:
    with rasterio.open(path) as ds:
        return json.loads(ds.tags()["UNIGEO_PARAMS"])


def test_processing_warns_for_an_unmeasured_model(run, stores, tmp_path):
    fb = _feedback()
    cls, conf = tmp_path / "c.tif", tmp_path / "cc.tif"
    run(
        "classify",
        fb,
        STORE=str(stores["analytic"]),
        OUTPUT_CLASSES=str(cls),
        OUTPUT_CONFIDENCE=str(conf),
    )
    (warning,) = fb.warnings
    assert "declares no measured zero-shot accuracy" in warning
    assert "declares no logit_scale" in warning and "few-shot" in warning
    params = _params(cls)
    assert params["warning"] == warning and params["temperature_source"] == "fallback"
    # F11: the bundle's prompts are embedded as written, not templated a second time
    assert params["class_prompts"]["water"] == ["water", "open water"]
    assert params["templated_classes"] == [] and "image of open water" not in json.dumps(params)
    with rasterio.open(conf) as ds:
        assert ds.count == 1 and json.loads(ds.tags()["UNIGEO_PARAMS"])["warning"] == warning


def test_processing_templates_only_bare_class_names(run, stores, tmp_path):
    cls = tmp_path / "k.tif"
    run(
        "classify",
        _feedback(),
        STORE=str(stores["analytic"]),
        CLASSES="wetland\nlake: open water; river",
        OUTPUT_CLASSES=str(cls),
        OUTPUT_CONFIDENCE=str(tmp_path / "kc.tif"),
    )
    prompts = _params(cls)["class_prompts"]
    assert prompts["wetland"] == [
        "wetland",
        "a satellite image of wetland",
        "an aerial photo of wetland",
    ]
    assert prompts["lake"] == ["open water", "river"]


def test_processing_silent_for_a_measured_good_model(run, stores, good_bundle, tmp_path):
    fb = _feedback()
    cls = tmp_path / "g.tif"
    run(
        "classify",
        fb,
        STORE=str(stores["good"]),
        MODEL=str(good_bundle),
        OUTPUT_CLASSES=str(cls),
        OUTPUT_CONFIDENCE=str(tmp_path / "gc.tif"),
    )
    assert fb.warnings == []
    params = _params(cls)
    assert params["warning"] == "" and params["temperature"] == pytest.approx(1 / 30)
    assert params["declared_zero_shot_accuracy"] == 0.92


def _task_output(model_dir: Path, store: Path, spec, folder: Path):
    from unigeo.engine.model import UniGeoModel
    from unigeo.plugin.tasks import ClassifyTask

    results = []
    model = UniGeoModel.load(model_dir)
    folder.mkdir()
    cls, conf = folder / "classes.tif", folder / "confidence.tif"
    task = ClassifyTask(model, store, spec, cls, conf, results.append, {"model": "m"})
    task.finished(task.run())
    (result,) = results
    assert result.ok, result.error
    return result.value


def test_classify_task_carries_the_warning(stores, analytic_bundle, good_bundle, tmp_path):
    from unigeo.engine.pipeline import ClassifySpec

    out = _task_output(analytic_bundle, stores["analytic"], ClassifySpec(), tmp_path / "a")
    assert isinstance(out.warning, str) and "declares no measured zero-shot" in out.warning
    assert out.provenance["warning"] == out.warning
    assert sum(out.counts.values()) == 400  # 20 x 20 tiles, all classified
    good = _task_output(good_bundle, stores["good"], ClassifySpec(), tmp_path / "g")
    assert good.warning == "" and "warning" not in good.provenance
    # few-shot has no declared accuracy to warn about
    half = "POLYGON((500000 5003200,501600 5003200,501600 5001600,500000 5001600,500000 5003200))"
    other = half.replace("500000 ", "501700 ").replace("501600 ", "503200 ")
    spec = ClassifySpec(examples=((half, "a"), (other, "b")), examples_crs="EPSG:32633")
    few = _task_output(analytic_bundle, stores["analytic"], spec, tmp_path / "f")
    assert few.warning == "" and sum(few.counts.values()) == 400
