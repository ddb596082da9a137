"""QgsTask adapters and the controller: heatmap/classify layers, cancel, stale requests, errors.

Runs on the analytic bundle and a generated 4-band GeoTIFF whose left half is water-like (high
blue) and right half vegetation-like (high NIR), so the expected scores are known.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.qgis

UTM = "EPSG:32633"  # central Europe: outside the analytic bundle's training domain
ORIGIN = (500_000.0, 5_000_000.0)
PX = 10.0  # metres per pixel = the analytic aerial tower's GSD
SIZE = 64  # pixels: a 4 x 4 grid of 16-px tiles


def write_scene(path: Path, crs: str = UTM, origin: tuple[float, float] = ORIGIN) -> Path:
    """Left half high blue (water), right half high NIR (vegetation); bands red, green, blue, nir."""
    import rasterio
    from affine import Affine

    data = np.full((4, SIZE, SIZE), 60, np.uint8)
    data[2, :, : SIZE // 2] = 220  # blue
    data[3, :, SIZE // 2 :] = 220  # nir
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint8", crs=crs)
    profile["transform"] = Affine(PX, 0.0, origin[0], 0.0, -PX, origin[1])
    with rasterio.open(path, "w", photometric="MINISBLACK", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(("red", "green", "blue", "nir"), start=1):
            dst.set_band_description(i, name)
    return path


def patch_settings(monkeypatch, tmp_path: Path, bundle: Path):
    """Settings pointing at the analytic bundle and temporary cache/output folders."""
    from unigeo.plugin import model_cache
    from unigeo.plugin.settings import Settings

    s = Settings(
        bundle=str(bundle),
        provider="auto",
        threads=1,
        cache_folder=str(tmp_path / "cache"),
        output_folder=str(tmp_path / "out"),
    )
    monkeypatch.setattr(Settings, "load", classmethod(lambda cls: s))
    model_cache.release_all()
    return s


def wait_for_tasks(app, timeout: float = 30.0) -> None:
    """Let the QGIS task manager finish every UniGeo task (finished() runs on this thread)."""
    from unigeo.plugin.tasks import EngineTask

    end = time.monotonic() + timeout
    while EngineTask.live and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    assert not EngineTask.live, "tasks did not finish in time"


def sync_runner(task) -> None:
    task.finished(task.run())


@pytest.fixture()
def scene(tmp_path, qgis_new_project):
    from qgis.core import QgsProject, QgsRasterLayer

    path = write_scene(tmp_path / "scene.tif")
    layer = QgsRasterLayer(str(path), "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture()
def env(monkeypatch, tmp_path, analytic_bundle, plugin_package):
    return patch_settings(monkeypatch, tmp_path, analytic_bundle)


def _group_layers(name: str) -> list:
    from qgis.core import QgsProject

    group = QgsProject.instance().layerTreeRoot().findGroup(name)
    return [] if group is None else [n.layer() for n in group.findLayers()]


def test_heatmap_through_task_manager(qgis_app, qgis_iface, scene, env, tmp_path):
    import rasterio
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller

    ctl = Controller(qgis_iface)
    warnings = []
    ctl.domainChecked.connect(warnings.append)
    token = ctl.run_query(QuerySpec(texts=("water",)), scene, AreaChoice())
    assert token == 1
    wait_for_tasks(qgis_app)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the store went into the cache
    layers = _group_layers("scene")
    assert [lyr.name() for lyr in layers] == ["text 'water'"]
    path = Path(layers[0].source())
    assert path.parent == tmp_path / "out" and path.suffix == ".tif"
    assert path.name.startswith("text_water_")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32633 and src.count == 2 and src.shape == (4, 4)
        cos, pct = src.read(1), src.read(2)
    assert cos[:, :2].min() > 0.75 and cos[:, 2:].max() < 0.0  # the blue half matches "water"
    # 8 tied tiles per half share their mean rank: (8 + 15) / 2 / 15 and (0 + 7) / 2 / 15
    assert np.allclose(pct[:, :2], 100 * 11.5 / 15) and np.allclose(pct[:, 2:], 100 * 3.5 / 15)
    abstract = layers[0].metadata().abstract()
    assert "query: text 'water'" in abstract and "model_hash:" in abstract
    assert warnings and "outside the model's training domain" in warnings[-1]
    assert qgis_iface.messageBar().get_messages(1)  # Qgis.Warning in the message bar


def test_second_query_reuses_store_and_drops_stale(qgis_iface, scene, env, tmp_path):
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller
    from unigeo.plugin.tasks import EmbedTask, HeatmapTask

    started = []
    ctl = Controller(qgis_iface, runner=lambda t: started.append(t))
    ctl.run_query(QuerySpec(texts=("water",)), scene, AreaChoice())
    assert [type(t) for t in started] == [EmbedTask]
    sync_runner(started[0])  # embedding finished: it queues the heatmap
    assert [type(t) for t in started] == [EmbedTask, HeatmapTask]
    old, new = started[1], None
    ctl.run_query(QuerySpec(texts=("vegetation",)), scene, AreaChoice())  # cache hit
    new = started[2]
    assert isinstance(new, HeatmapTask) and len(started) == 3
    sync_runner(new)
    sync_runner(old)  # finishes last, but was superseded: dropped
    assert old.result.ok and not old.out_path.exists()
    assert [lyr.name() for lyr in _group_layers("scene")] == ["text 'vegetation'"]
    assert new.out_path.exists()


def test_cancelled_tasks_leave_no_output(qgis_iface, scene, env, tmp_path):
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.engine.raster.gdal_reader import GdalReader
    from unigeo.engine.raster.tiling import grid_for_raster
    from unigeo.plugin.model_cache import get_model
    from unigeo.plugin.tasks import EmbedTask, HeatmapTask

    model = get_model()
    reader = GdalReader(scene.source())
    grid = grid_for_raster(reader, model.spec(model.modalities[0]).preprocess)
    store = tmp_path / "s.store"
    results = []
    embed = EmbedTask(model, reader, grid, store, results.append)
    embed.cancel()
    embed.finished(embed.run())
    assert results[-1].cancelled and not results[-1].ok and not store.exists()

    done = EmbedTask(model, reader, grid, store)
    done.finished(done.run())
    assert done.result.ok and store.is_dir()
    out = tmp_path / "heat.tif"
    heat = HeatmapTask(model, store, QuerySpec(texts=("water",)), out, results.append, 7)
    heat.cancel()
    heat.finished(heat.run())
    assert results[-1].cancelled and results[-1].token == 7 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.store", "scene.tif"]  # no temp file


def test_engine_error_becomes_result_message(qgis_iface, scene, env, tmp_path):
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller

    ctl = Controller(qgis_iface, runner=sync_runner)
    far = QuerySpec(points=((0.0, 0.0, "EPSG:4326"),))  # nowhere near the scene
    assert ctl.run_query(far, scene, AreaChoice()) == 1
    msgs = qgis_iface.messageBar().get_messages(2)  # Qgis.Critical
    assert any("Heatmap failed" in m and "outside the embedded area" in m for m in msgs)
    assert _group_layers("scene") == []
    assert list((tmp_path / "out").glob("*.tif")) == []


def test_point_query_over_current_extent(qgis_iface, scene, env):
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller

    ctl = Controller(qgis_iface, runner=sync_runner)
    half = AreaChoice("extent", (ORIGIN[0] + 320, ORIGIN[1] - 640, ORIGIN[0] + 640, ORIGIN[1]), UTM)
    spec = QuerySpec(points=((ORIGIN[0] + 500, ORIGIN[1] - 100, UTM),))
    ctl.run_query(spec, scene, half)
    (layer,) = _group_layers("scene")
    assert layer.name() == "1 point"
    assert layer.width() == 2 and layer.height() == 4  # only the right half was embedded
    ext = layer.extent()
    assert ext.xMinimum() == pytest.approx(ORIGIN[0] + 320)


def test_zero_shot_classification_layers(qgis_iface, scene, env, tmp_path):
    from qgis.core import QgsPalettedRasterRenderer
    from unigeo.engine.pipeline import ClassifySpec
    from unigeo.plugin.controller import AreaChoice, Controller

    ctl = Controller(qgis_iface, runner=sync_runner)
    assert ctl.classify(ClassifySpec(), scene, AreaChoice())
    classes, conf = _group_layers("scene")
    assert classes.name() == "land use zero-shot"
    assert conf.name() == "land use zero-shot (confidence)"
    assert isinstance(classes.renderer(), QgsPalettedRasterRenderer)
    labels = [c.label for c in classes.renderer().classes()]
    assert labels == ["water", "vegetation", "bare", "built"]
    block = classes.dataProvider().block(1, classes.extent(), 4, 4)
    vals = np.array([[block.value(r, c) for c in range(4)] for r in range(4)])
    assert (vals[:, :2] == 0).all() and (vals[:, 2:] == 1).all()  # water | vegetation
    assert Path(conf.source()).is_file() and "method: zero-shot" in conf.metadata().abstract()


def test_few_shot_from_polygons(qgis_iface, scene, env):
    from unigeo.engine.pipeline import ClassifySpec
    from unigeo.plugin.controller import AreaChoice, Controller

    x0, y0 = ORIGIN
    left = f"POLYGON(({x0} {y0},{x0 + 300} {y0},{x0 + 300} {y0 - 640},{x0} {y0 - 640},{x0} {y0}))"
    right = left.replace(f"{x0} ", f"{x0 + 340} ").replace(f"{x0 + 300} ", f"{x0 + 640} ")
    spec = ClassifySpec(examples=((left, "wet"), (right, "green")), examples_crs=UTM)
    ctl = Controller(qgis_iface, runner=sync_runner)
    assert ctl.classify(spec, scene, AreaChoice())
    classes, _ = _group_layers("scene")
    assert [c.label for c in classes.renderer().classes()] == ["green", "wet"]


def test_real_naip_text_query_in_domain(qgis_iface, env, shared_data, qgis_new_project):
    import rasterio
    from qgis.core import QgsProject, QgsRasterLayer
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller

    path = sorted((shared_data / "naip_north_dakota").glob("*.tif"))[-1]
    layer = QgsRasterLayer(str(path), "naip")
    QgsProject.instance().addMapLayer(layer)
    ctl = Controller(qgis_iface, runner=sync_runner)
    warnings = []
    ctl.domainChecked.connect(warnings.append)
    ctl.run_query(QuerySpec(texts=("water",)), layer, AreaChoice())
    (heat,) = _group_layers("naip")
    with rasterio.open(path) as naip:
        b = naip.bounds
    with rasterio.open(heat.source()) as src:
        # 160-m tiles drawn as 8 x 8 pixels of 20 m, cropped to the raster (4.67 x 3.62 km)
        assert src.crs.to_epsg() == 26914 and src.res == (20.0, 20.0)
        o = src.bounds
        assert b.left - 20 < o.left <= b.left and b.right <= o.right < b.right + 20
        assert b.bottom - 20 < o.bottom <= b.bottom and b.top <= o.top < b.top + 20
        cos, pct = src.read(1), src.read(2)
    # NaN: pixels outside the raster; the top tile may tie with another (mean rank)
    assert np.isfinite(cos).mean() > 0.9 and np.nanmax(pct) == pytest.approx(100.0, abs=0.1)
    assert np.nanstd(cos) > 0.01  # the scene is not uniform
    assert warnings == [""]  # North Dakota NAIP at 10 m lies inside the training domain


def test_polygon_area_masks_heatmap(qgis_iface, scene, env):
    import rasterio
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller

    x0, y0 = ORIGIN
    tri = f"POLYGON(({x0} {y0},{x0 + 640} {y0},{x0} {y0 - 320},{x0} {y0}))"
    area = AreaChoice("polygons", (x0, y0 - 320, x0 + 640, y0), UTM, (tri,))
    Controller(qgis_iface, runner=sync_runner).run_query(QuerySpec(texts=("water",)), scene, area)
    (layer,) = _group_layers("scene")
    with rasterio.open(layer.source()) as src:
        cos, pct = src.read(1), src.read(2)
    inside = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)  # tile centres inside the triangle
    assert cos.shape == (2, 4) and (np.isfinite(cos) == inside).all()
    # ranks within the triangle only: the vegetation tile (col 2) last, three tied water tiles
    assert pct[0, 2] == pytest.approx(0.0)
    assert np.allclose(pct[inside & (np.arange(4) < 2)], 100 * 2 / 3)


def test_large_store_heatmap_is_streamed_with_same_scores(qgis_iface, scene, env, monkeypatch):
    """Above CHUNKED_ABOVE_TILES an unmasked heatmap is written chunk by chunk: same cosine band."""
    import rasterio
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.engine.search import streaming
    from unigeo.plugin.controller import AreaChoice, Controller

    outputs = []
    for limit in (10**9, 0):  # in memory, then streamed
        monkeypatch.setattr(streaming, "CHUNKED_ABOVE_TILES", limit)
        started: list = []
        ctl = Controller(qgis_iface, runner=started.append)
        ctl.run_query(QuerySpec(texts=("water",)), scene, AreaChoice())
        while started:
            task = started.pop(0)
            sync_runner(task)
        assert task.result.ok, task.result.message
        with rasterio.open(task.out_path) as src:
            outputs.append((src.read(1), src.read(2)))
    (cos_a, pct_a), (cos_b, pct_b) = outputs
    np.testing.assert_array_equal(cos_a, cos_b)
    # This scene has two tied groups of 8 tiles: both paths give each group its mean rank
    # (the streamed heatmap lists the scores of over-full histogram bins exactly).
    np.testing.assert_array_equal(pct_a, pct_b)
    assert pct_a[0, 0] > pct_a[0, 3]
