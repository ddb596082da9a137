"""Where results land and how they read: newest on top, hidden groups shown, 0–1 confidence ramp,
outputs never offered as sources, example places marked on the map, the classify dialog's mode.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.plugin.test_tasks import patch_settings, sync_runner, write_scene

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def env(monkeypatch, tmp_path, analytic_bundle, plugin_package):
    return patch_settings(monkeypatch, tmp_path, analytic_bundle)


@pytest.fixture()
def plugin(qgis_iface, qgis_new_project, env, plugin_package):
    p = plugin_package.classFactory(qgis_iface)
    p.initGui()
    p.controller.runner = sync_runner
    yield p
    if p.toolbar is not None:
        p.unload()


@pytest.fixture()
def scene(tmp_path, qgis_new_project):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(write_scene(tmp_path / "scene.tif")), "scene")
    QgsProject.instance().addMapLayer(layer)
    return layer


def _nodes(group_name: str) -> list:
    from qgis.core import QgsProject

    group = QgsProject.instance().layerTreeRoot().findGroup(group_name)
    return list(group.findLayers())


def _search(plugin, scene, text: str) -> None:
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice

    assert plugin.controller.run_query(QuerySpec(texts=(text,)), scene, AreaChoice()) > 0


def test_newest_result_on_top_older_of_same_kind_unchecked_not_deleted(plugin, scene):
    from unigeo.engine.pipeline import ClassifySpec
    from unigeo.plugin.controller import AreaChoice

    _search(plugin, scene, "water")
    _search(plugin, scene, "vegetation")
    nodes = _nodes("scene")
    assert [n.layer().name() for n in nodes] == ["text 'vegetation'", "text 'water'"]
    assert [n.itemVisibilityChecked() for n in nodes] == [True, False]
    assert all(Path(n.layer().source()).is_file() for n in nodes)  # hidden, not deleted
    spec = ClassifySpec(class_prompts={"water": ("water",), "vegetation": ("vegetation",)})
    assert plugin.controller.classify(spec, scene, AreaChoice())
    nodes = _nodes("scene")
    names = [n.layer().name() for n in nodes]
    assert names[:2] == ["land use zero-shot", "land use zero-shot (confidence)"]
    # another kind: the newest heatmap stays shown under the class map
    assert [n.itemVisibilityChecked() for n in nodes] == [True, True, True, False]


def test_result_in_a_hidden_group_is_shown(plugin, scene):
    from qgis.core import QgsProject

    root = QgsProject.instance().layerTreeRoot()
    outer = root.insertGroup(0, "my work")
    outer.addGroup("scene")
    outer.setItemVisibilityChecked(False)
    inner = root.findGroup("scene")
    inner.setItemVisibilityChecked(False)
    _search(plugin, scene, "water")
    assert inner.itemVisibilityChecked() and outer.itemVisibilityChecked()
    (node,) = _nodes("scene")
    assert node.itemVisibilityChecked() and node.isVisible()  # on the map, not only checked


def test_confidence_and_percentile_legends_are_fixed_ramps(plugin, scene):
    from qgis.core import QgsSingleBandPseudoColorRenderer
    from unigeo.engine.pipeline import ClassifySpec
    from unigeo.plugin.controller import AreaChoice

    spec = ClassifySpec(class_prompts={"water": ("water",), "vegetation": ("vegetation",)})
    plugin.controller.classify(spec, scene, AreaChoice())
    _search(plugin, scene, "water")
    layers = {n.layer().name(): n.layer() for n in _nodes("scene")}
    conf = layers["land use zero-shot (confidence)"]
    r = conf.renderer()
    assert isinstance(r, QgsSingleBandPseudoColorRenderer)
    assert (r.classificationMin(), r.classificationMax()) == (0.0, 1.0)
    assert [(v, label) for label, v in _legend(r)] == [
        (0.0, "0 (uncertain)"),
        (1.0, "1 (confident)"),
    ]
    heat = layers["text 'water'"].renderer()
    assert heat.band() == 2 and (heat.classificationMin(), heat.classificationMax()) == (0, 100)


def _legend(renderer) -> list[tuple[str, float]]:
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    return [(i.label, i.value) for i in items]


def test_outputs_are_not_offered_as_source_rasters(plugin, scene, tmp_path):
    from qgis.core import QgsProject, QgsRasterLayer

    plugin.dock.show()
    _search(plugin, scene, "water")
    (heat,) = [n.layer() for n in _nodes("scene")]
    # a UniGeo GeoTIFF opened by hand has no layer property, only its UNIGEO_* tags
    by_hand = QgsRasterLayer(heat.source(), "opened by hand")
    QgsProject.instance().addMapLayer(by_hand)
    other = QgsRasterLayer(str(write_scene(tmp_path / "other.tif")), "other")
    QgsProject.instance().addMapLayer(other)
    combo = plugin.dock.layer_combo
    offered = {combo.layer(i).name() for i in range(combo.count()) if combo.layer(i)}
    assert offered == {"scene", "other"}


def test_example_places_are_marked_until_clear(plugin, qgis_iface):
    from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY
    from qgis.gui import QgsVertexMarker
    from unigeo.plugin.tools.example_markers import (
        HALO_KEY,
        ICON_KEY,
        NEGATIVE_COLOR,
        POSITIVE_COLOR,
    )

    canvas = qgis_iface.mapCanvas()
    utm = QgsCoordinateReferenceSystem("EPSG:32633")
    canvas.setDestinationCrs(utm)
    dock = plugin.dock
    dock.searchRequested.disconnect()  # markers only: no search
    wgs = QgsPointXY(15.0, 45.0)
    dock.add_example(QgsPointXY(500_100, 4_999_900), utm, wgs, "replace")
    dock.add_example(QgsPointXY(500_300, 4_999_900), utm, wgs, "positive")
    dock.add_example(QgsPointXY(500_500, 4_999_700), utm, wgs, "negative")

    def markers():  # the coloured symbols; each has a white halo under it
        items = [i for i in canvas.scene().items() if isinstance(i, QgsVertexMarker)]
        assert len([i for i in items if i.data(HALO_KEY)]) * 2 == len(items)
        return [i for i in items if not i.data(HALO_KEY)]

    found = sorted(markers(), key=lambda m: m.center().x())
    assert [m.center().x() for m in found] == [500_100, 500_300, 500_500]
    assert [m.color().name() for m in found] == [POSITIVE_COLOR.name()] * 2 + [
        NEGATIVE_COLOR.name()
    ]
    kinds = [m.data(ICON_KEY) for m in found]
    assert kinds == [QgsVertexMarker.ICON_CROSS] * 2 + [QgsVertexMarker.ICON_X]
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))  # follows the map
    assert min(m.center().x() for m in markers()) == pytest.approx(1_669_800, abs=2_000)
    dock.add_example(QgsPointXY(500_100, 4_999_900), utm, wgs, "replace")  # a new search
    assert len(markers()) == 1
    dock.clear_examples()
    assert markers() == [] and dock.examples == []


def test_unload_takes_markers_off_the_canvas(plugin, qgis_iface):
    from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY
    from qgis.gui import QgsVertexMarker

    canvas = qgis_iface.mapCanvas()
    plugin.dock.searchRequested.disconnect()
    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    plugin.dock.add_example(QgsPointXY(500_000, 5_000_000), crs, QgsPointXY(15, 45), "replace")
    plugin.unload()
    assert not [i for i in canvas.scene().items() if isinstance(i, QgsVertexMarker)]


@pytest.mark.parametrize(
    ("evaluation", "mode", "said"),
    [
        ({"zero_shot": {"accuracy": 0.015, "n_test": 68, "classes": 7}}, "few", "1.5%"),
        ({"zero_shot": {"accuracy": 0.45, "classes": 4}}, "few", "below the 50%"),
        ({"zero_shot": {"accuracy": 0.6, "classes": 2}}, "few", "below the 75%"),  # chance 50 %
        ({"zero_shot": {"accuracy": 0.8, "classes": 7}}, "zero", "80.0%"),
        ({}, "zero", "unverified"),
    ],
)
def test_classify_dialog_mode_follows_the_declared_accuracy(
    evaluation, mode, said, qgis_new_project, plugin_package
):
    from unigeo.engine.model.bundle_spec import BundleSpec
    from unigeo.plugin.dialogs.classify_dialog import ClassifyDialog

    shipped = BundleSpec.read(ROOT / "resources" / "models" / "default")
    bundle = dataclasses.replace(shipped, evaluation=evaluation)
    dlg = ClassifyDialog(bundle.class_prompts, bundle=bundle)
    assert (dlg.few if mode == "few" else dlg.zero).isChecked()
    assert said in dlg.advice.text() and not dlg.advice.isHidden()
    assert dlg.table.isEnabled() == (mode == "zero")


def test_classify_dialog_opens_on_few_shot_for_the_shipped_model(plugin, monkeypatch):
    from unigeo.plugin.dialogs.classify_dialog import ClassifyDialog
    from unigeo.plugin.settings import Settings

    monkeypatch.setattr(
        Settings, "bundle_path", lambda self: str(ROOT / "resources/models/default")
    )
    from unigeo.plugin import model_cache

    model_cache.release_all()
    seen = []

    def look(dlg):
        seen.append((dlg.few.isChecked(), dlg.advice.text()))
        return 0

    monkeypatch.setattr(ClassifyDialog, "exec_", look)
    plugin.show_classify()
    ((few, text),) = seen
    assert few and "27.0% zero-shot land-use accuracy on 9 classes" in text
    model_cache.release_all()
