"""Band choice in the dock: read from the QGIS layer, chosen, shown, changed, remembered, used.

The 7-band rasters hold the quadrant scene of ``test_tasks`` in Landsat TM/ETM+ order (band 1
blue, 2 green, 3 red, 4 NIR, then SWIR1, thermal, SWIR2), so a heatmap is only right when bands
3, 2, 1, 4 feed the model's red, green, blue, NIR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.plugin.test_tasks import ORIGIN, PX, SIZE, UTM, patch_settings, sync_runner

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]
DEMO_SCENE = ROOT / "data-cache/localtileserver/1.0.0/localtileserver/tiler/data/landsat.tif"
ETM = ("B1", "B2", "B3", "B4", "B5", "B6_VCID_2", "B7")
CODES = tuple(f"B{i}" for i in range(1, 8))


def write_landsat(path: Path, names: tuple[str, ...]) -> Path:
    """Left half water (high blue), right half vegetation (high NIR), in TM/ETM+ band order."""
    import rasterio
    from affine import Affine

    data = np.full((7, SIZE, SIZE), 60, np.uint8)
    data[0, :, : SIZE // 2] = 220  # band 1: blue
    data[3, :, SIZE // 2 :] = 220  # band 4: NIR
    data[5] = 200  # band 6: thermal, bright everywhere: wrong if it were taken
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=7, dtype="uint8", crs=UTM)
    profile["transform"] = Affine(PX, 0.0, ORIGIN[0], 0.0, -PX, ORIGIN[1])
    with rasterio.open(path, "w", photometric="MINISBLACK", **profile) as dst:
        dst.write(data)
        dst.descriptions = names
    return path


@pytest.fixture()
def plugin(qgis_iface, qgis_new_project, monkeypatch, tmp_path, analytic_bundle, plugin_package):
    patch_settings(monkeypatch, tmp_path, analytic_bundle)
    p = plugin_package.classFactory(qgis_iface)
    p.initGui()
    p.controller.runner = sync_runner
    p.dock.show()
    yield p
    if p.toolbar is not None:
        p.unload()


def _add(path: Path, name: str):
    from qgis.core import QgsProject, QgsRasterLayer
    from unigeo.plugin import source_bands

    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    source_bands.forget(layer)  # no choice left over from an earlier run
    QgsProject.instance().addMapLayer(layer)
    return layer


def _heat(plugin, layer):
    from qgis.core import QgsProject
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice

    plugin.dock.area_combo.setCurrentIndex(1)
    token = plugin.controller.run_query(QuerySpec(texts=("water",)), layer, AreaChoice())
    group = QgsProject.instance().layerTreeRoot().findGroup(layer.name())
    return token, None if group is None else group.findLayers()[0].layer()


def test_provider_reads_descriptions_and_colour(plugin, tmp_path):
    from unigeo.plugin import source_bands

    layer = _add(write_landsat(tmp_path / "etm.tif", ETM), "etm")
    count, names, interps = source_bands.provider_bands(layer)
    assert count == 7 and names == list(ETM)
    assert interps[0] == "Gray" and set(interps[1:]) == {"Undefined"}


def test_seven_band_landsat_runs_from_the_dock_with_bands_3_2_1_4(plugin, tmp_path):
    import rasterio

    layer = _add(write_landsat(tmp_path / "etm.tif", ETM), "etm")
    plugin.dock.layer_combo.setLayer(layer)
    panel = plugin.dock.band_panel
    assert panel.mapping() == (3, 2, 1, 4) and "Landsat 7 ETM+" in panel.reason.text()
    assert [panel.grid.itemAt(i).widget().text() for i in (0, 2, 4, 6)] == list(RGBN)
    token, heat = _heat(plugin, layer)
    assert token > 0 and heat is not None
    with rasterio.open(heat.source()) as src:
        cos = src.read(1)
    assert cos[:, :2].min() > 0.75 and cos[:, 2:].max() < 0.0  # the blue half is water
    assert "bands: 3,2,1,4 (Landsat 7 ETM+" in heat.metadata().abstract()


RGBN = ("red", "green", "blue", "nir")


def test_cannot_tell_asks_then_remembers_the_users_bands(plugin, qgis_iface, tmp_path):
    from qgis.core import QgsRasterLayer
    from unigeo.plugin import source_bands

    path = write_landsat(tmp_path / "scene7.tif", CODES)  # TM/ETM+ or OLI? nothing says
    layer = _add(path, "scene7")
    plugin.dock.layer_combo.setLayer(layer)
    panel = plugin.dock.band_panel
    assert not panel.choice.decided and not panel.use_button.isHidden()
    assert panel.mapping() == (3, 2, 1, 4)  # the first layout that fits, shown, not yet used
    assert "TM" in panel.reason.text() and "OLI" in panel.reason.text()
    token, heat = _heat(plugin, layer)
    assert token == 0 and heat is None
    bar = qgis_iface.messageBar().get_messages(2)  # Qgis.Critical
    assert "Where › Bands" in bar[-1] and "fit more than one sensor" in bar[-1]
    panel.use_button.click()
    assert panel.choice.source == "user" and panel.use_button.isHidden()
    assert layer.customProperty(source_bands.LAYER_PROPERTY) == "3,2,1,4"
    token, heat = _heat(plugin, layer)
    assert token > 0 and "picked by hand" in heat.metadata().abstract()
    again = QgsRasterLayer(str(path), "same file, another layer")  # remembered per source
    assert source_bands.remembered(again, RGBN).mapping == (3, 2, 1, 4)
    panel.auto_button.click()
    assert not panel.choice.decided and source_bands.remembered(again, RGBN) is None


def test_changing_a_band_is_remembered_and_checked(plugin, tmp_path):
    from unigeo.plugin import source_bands

    layer = _add(write_landsat(tmp_path / "etm.tif", ETM), "etm")
    plugin.dock.layer_combo.setLayer(layer)
    panel = plugin.dock.band_panel
    nir = panel.findChild(type(panel.combos[0]), "UniGeoBand_nir")
    nir.setCurrentIndex(nir.findData(5))  # the user prefers band 5 as NIR
    assert panel.choice.source == "user" and panel.mapping() == (3, 2, 1, 5)
    assert source_bands.current_choice(layer, RGBN).mapping == (3, 2, 1, 5)
    assert plugin.controller.bands_for(layer, plugin.controller.model()).bands == (3, 2, 1, 5)
    nir.setCurrentIndex(nir.findData(-1))  # "?": incomplete, not remembered
    assert "Pick a band" in panel.reason.text()
    assert source_bands.current_choice(layer, RGBN).mapping == (3, 2, 1, 5)
    source_bands.forget(layer)


def test_the_demo_landsat_scene_through_the_qgis_provider(plugin):
    if not DEMO_SCENE.is_file():
        pytest.skip("the demo scene is fetched by make demo")
    layer = _add(DEMO_SCENE, "landsat")
    plugin.dock.layer_combo.setLayer(layer)
    assert plugin.dock.band_panel.mapping() == (3, 2, 1, 4)  # make demo's BANDS
    assert plugin.controller.bands_for(layer, plugin.controller.model()).source == "sensor"


def test_web_layer_colour_is_red_green_blue_alpha_never_nir(plugin, tmp_path):
    from qgis.core import QgsRasterLayer
    from unigeo.plugin import source_bands

    url = f"file://{tmp_path}/{{z}}/{{x}}/{{y}}.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmin=0&zmax=2", "xyz", "wms")
    assert layer.isValid()
    assert source_bands.provider_bands(layer) == (4, [""] * 4, ["Red", "Green", "Blue", "Alpha"])
    choice = source_bands.auto_choice(layer, RGBN)
    assert not choice.decided and "no nir" in choice.reason  # the alpha band is no NIR
    choice = source_bands.auto_choice(layer, RGBN, optional=("nir",))
    assert choice.mapping == (1, 2, 3, 0) and choice.absent == ("nir",)


def test_dock_scaling_is_remembered_used_and_recorded(plugin, tmp_path):
    import rasterio
    from qgis.core import QgsProject, QgsRasterLayer
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin import source_bands
    from unigeo.plugin.controller import AreaChoice

    from tests.plugin.test_processing_sensor import S2, write_s2

    s2_tif = write_s2(tmp_path / "s2_l1c.tif")
    layer = QgsRasterLayer(str(s2_tif), "s2")
    assert layer.isValid()
    source_bands.forget(layer)
    source_bands.remember_scaling(layer, "dtype")
    QgsProject.instance().addMapLayer(layer)
    plugin.dock.layer_combo.setLayer(layer)
    combo = plugin.dock.band_panel.findChild(type(plugin.dock.band_panel.scaling_combo),
                                             "UniGeoScaling")  # fmt: skip
    assert combo is not None and combo.isEnabled() and combo.currentData() == "dtype"
    assert combo.findData(f"sensor:{S2}") > 0

    def heat() -> np.ndarray:
        plugin.dock.area_combo.setCurrentIndex(1)
        token = plugin.controller.run_query(QuerySpec(texts=("nir",)), layer, AreaChoice())
        assert token > 0
        group = QgsProject.instance().layerTreeRoot().findGroup(layer.name())
        out = group.findLayers()[0].layer()  # the newest result is on top
        with rasterio.open(out.source()) as src:
            return src.read(1), out.metadata().abstract()

    cos_auto, meta_auto = heat()
    assert "scaling: dtype" in meta_auto
    combo.setCurrentIndex(combo.findData(f"sensor:{S2}"))
    assert source_bands.scaling(layer) == f"sensor:{S2}"
    again = QgsRasterLayer(str(s2_tif), "same file, another layer")  # remembered per source
    assert source_bands.scaling(again) == f"sensor:{S2}"
    cos_s2, meta_s2 = heat()
    assert f"scaling: sensor:{S2}" in meta_s2
    assert np.nanmax(np.abs(cos_s2 - cos_auto)) > 0.05  # another store, another map
    combo.setCurrentIndex(combo.findData("dtype"))  # back to automatic: forgotten
    assert source_bands.scaling(again) == "dtype"
    with pytest.raises(Exception, match="unknown pixel scaling"):
        source_bands.remember_scaling(layer, "sensor:no_such_sensor")
