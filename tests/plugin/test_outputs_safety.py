"""Outputs are never lost: cache overflow, same-second requests, stale drops; classify warns.

Runs the controller on the analytic bundle and small generated rasters (see test_tasks.py).
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.plugin.test_tasks import ORIGIN, UTM, patch_settings, sync_runner, write_scene

pytestmark = pytest.mark.qgis

FROZEN = datetime(2026, 9, 12, 15, 30, 1)  # every request "in the same second"


@pytest.fixture()
def env(monkeypatch, tmp_path, analytic_bundle, plugin_package, qgis_iface):
    qgis_iface.messageBar().clear_messages()
    return patch_settings(monkeypatch, tmp_path, analytic_bundle)


@pytest.fixture()
def same_second(monkeypatch, plugin_package):
    """Output names are stamped with one frozen time."""
    from unigeo.plugin import settings as S

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return FROZEN

    monkeypatch.setattr(S, "datetime", Frozen)


def _layer(path: Path, name: str):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def _sources() -> dict[str, Path]:
    from qgis.core import QgsProject

    return {lyr.name(): Path(lyr.source()) for lyr in QgsProject.instance().mapLayers().values()}


def _old_big_store(folder: Path, age_s: float) -> Path:
    """A finalised 1.3 MB store (300 x 300 tiles, D = 7), last used ``age_s`` seconds ago."""
    from unigeo.engine.grid import TileGrid
    from unigeo.engine.store.npy import EmbeddingStore

    grid = TileGrid("EPSG:32633", 1.0, 16, 16, 0, 0, 300, 300)
    store = EmbeddingStore.create(folder, grid, 7, "old-model", "old-source", block_tiles=300)
    store.mark_done(0)
    store.finalize()
    t = time.time() - age_s
    os.utime(folder / "store.json", (t, t))
    return folder


def test_unsaved_project_outputs_survive_cache_overflow(
    qgis_iface, env, tmp_path, monkeypatch, qgis_new_project
):
    """The reviewer's t5: the first heatmap's file outlives the eviction the second one causes."""
    from qgis.core import QgsProject
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin import settings as S
    from unigeo.plugin.controller import AreaChoice, Controller

    profile_out = tmp_path / "profile" / "unigeo" / "outputs"
    monkeypatch.setattr(S, "default_output_folder", lambda: str(profile_out))
    env.output_folder, env.cache_mb = "", 1  # unsaved project: the fallback folder
    assert QgsProject.instance().absolutePath() == ""
    cache = Path(env.cache_folder)
    assert env.output_path() == profile_out and not profile_out.is_relative_to(cache)
    ctl = Controller(qgis_iface, runner=sync_runner)
    first = _layer(write_scene(tmp_path / "a.tif"), "a")
    assert ctl.run_query(QuerySpec(texts=("water",)), first, AreaChoice()) == 1
    (heat1,) = profile_out.glob("text_water_*.tif")
    info = qgis_iface.messageBar().get_messages(0)
    assert any("not saved yet" in m and str(profile_out) in m for m in info)
    # an old 1.3 MB store and a legacy outputs folder in the cache: the cache is over its cap
    old = _old_big_store(cache / ("0" * 64), age_s=3600)
    legacy = cache / "outputs" / "text_lake_20250101-000000.tif"
    legacy.parent.mkdir()
    legacy.write_bytes(b"\0" * 2_000_000)
    second = _layer(write_scene(tmp_path / "b.tif", origin=(ORIGIN[0] + 640, ORIGIN[1])), "b")
    assert ctl.run_query(QuerySpec(texts=("vegetation",)), second, AreaChoice()) == 2
    assert not old.exists()  # the LRU store was evicted to make room ...
    assert legacy.is_file() and legacy.stat().st_size == 2_000_000  # ... never the outputs
    (heat2,) = profile_out.glob("text_vegetation_*.tif")
    srcs = _sources()
    assert srcs["text 'water'"] == heat1 and srcs["text 'vegetation'"] == heat2
    assert all(p.is_file() and p.stat().st_size > 0 for p in srcs.values())
    stores = [p for p in cache.iterdir() if (p / "store.json").is_file()]
    assert len(stores) == 2  # the two scenes' stores stay: they fit 1 MB


def test_unsaved_output_folder_is_never_inside_the_cache(plugin_package, monkeypatch, tmp_path):
    from unigeo.plugin import settings as S

    unigeo = tmp_path / "profile" / "unigeo"
    monkeypatch.setattr(S, "default_output_folder", lambda: str(unigeo / "outputs"))
    s = S.Settings(cache_folder=str(unigeo / "cache"))
    assert s.unsaved_output_path() == unigeo / "outputs"  # beside the default cache
    s.cache_folder = str(unigeo)  # the cache set to the profile's unigeo folder itself
    assert s.unsaved_output_path() == tmp_path / "profile" / "unigeo-outputs"
    s.cache_folder = str(tmp_path)  # ... or above it
    out = s.unsaved_output_path()
    assert out == tmp_path.parent / f"{tmp_path.name}-outputs" and not out.is_relative_to(tmp_path)
    s.output_folder = str(tmp_path / "mine")
    assert s.output_path() == tmp_path / "mine" and not s.uses_unsaved_output_path()


def test_reserve_output_claims_distinct_names(plugin_package, same_second, tmp_path):
    from unigeo.engine.errors import InputError
    from unigeo.plugin.settings import reserve_output

    a = reserve_output(tmp_path, "text 'lake'")
    b = reserve_output(tmp_path, "text 'lake'")
    assert a.name == "text_lake_20260912-153001.tif" and b.name == "text_lake_20260912-153001_2.tif"
    assert a.is_file() and b.is_file() and a.stat().st_size == 0  # claimed on disk
    (tmp_path / "land_use_20260912-153001_confidence.tif").write_bytes(b"x")  # someone else's
    c = reserve_output(tmp_path, "land use", siblings=("_confidence.tif",))
    assert c.name == "land_use_20260912-153001_2.tif"
    assert (tmp_path / "land_use_20260912-153001_2_confidence.tif").is_file()
    assert not (tmp_path / "land_use_20260912-153001.tif").exists()  # released, not leaked
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(InputError, match="choose another output folder"):
        reserve_output(blocker, "text 'lake'")


def test_same_second_requests_never_share_a_file(qgis_iface, env, tmp_path, same_second):
    """The reviewer's t10b: two clicks in one second, finishing newest first."""
    import rasterio
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller
    from unigeo.plugin.tasks import HeatmapTask

    scene = _layer(write_scene(tmp_path / "scene.tif"), "scene")
    ctl = Controller(qgis_iface, runner=sync_runner)
    ctl.run_query(QuerySpec(texts=("warm-up",)), scene, AreaChoice())  # embeds once
    queued: list[HeatmapTask] = []
    ctl.runner = queued.append
    for x in (ORIGIN[0] + 80, ORIGIN[0] + 560):
        ctl.run_query(QuerySpec(points=((x, ORIGIN[1] - 80, UTM),)), scene, AreaChoice())
    old, new = queued
    assert old.out_path != new.out_path and old.out_path.is_file() and new.out_path.is_file()
    assert new.out_path.name == "1_point_20260912-153001_2.tif"
    sync_runner(new)
    sync_runner(old)  # stale: dropped, and only its own file goes
    assert old.result.ok and not old.out_path.exists()
    live = _sources()["1 point"]
    assert live == new.out_path and live.is_file()
    with rasterio.open(live) as src:
        cos = src.read(1)
    assert cos.shape == (4, 4) and np.argmax(cos) % 4 >= 2  # the right-hand click's heatmap


def test_stale_drop_keeps_a_file_a_layer_uses(qgis_iface, env, tmp_path):
    from unigeo.plugin.controller import Controller
    from unigeo.plugin.tasks import HeatmapOutput, TaskResult

    shown = write_scene(tmp_path / "shown.tif")
    _layer(shown, "shown")
    loose = write_scene(tmp_path / "loose.tif")
    ctl = Controller(qgis_iface, runner=sync_runner)
    ctl.tokens.issue("heatmap")
    current = ctl.tokens.issue("heatmap")
    for path in (shown, loose):
        stale = TaskResult(ok=True, value=HeatmapOutput(path, "", None), token=current - 1)
        ctl._heatmap_done(stale, name="old", group="g")
    assert shown.is_file() and not loose.exists()


def test_classify_warns_out_of_domain_like_heatmaps(qgis_iface, env, tmp_path, monkeypatch):
    from unigeo.plugin import tasks as T
    from unigeo.plugin.controller import AreaChoice, Controller

    # the classify task's own warning (zero-shot reliability), set here so the test does not
    # depend on whether the engine finds the analytic classes reliable
    note = [""]
    work = T.ClassifyTask.work

    def with_note(self):
        out = work(self)
        out.warning = note[0]
        return out

    monkeypatch.setattr(T.ClassifyTask, "work", with_note)
    ctl = Controller(qgis_iface, runner=sync_runner)
    warnings: list[str] = []
    ctl.domainChecked.connect(warnings.append)
    europe = _layer(write_scene(tmp_path / "eu.tif"), "eu")  # UTM 33N: outside the domain
    assert ctl.classify(T.ClassifySpec(), europe, AreaChoice())
    assert len(warnings) == 1 and warnings[0].startswith("100 % of the area lies outside")
    assert "training domain" in warnings[0]
    assert any(warnings[0] in m for m in qgis_iface.messageBar().get_messages(1))  # Qgis.Warning
    # inside the domain (North Dakota, UTM 14N, 10 m): the warning is cleared
    nd = _layer(write_scene(tmp_path / "nd.tif", "EPSG:32614", (500_000.0, 5_206_080.0)), "nd")
    assert ctl.classify(T.ClassifySpec(), nd, AreaChoice())
    assert warnings[-1] == ""
    note[0] = "Zero-shot classes overlap."  # joined to the domain warning
    assert ctl.classify(T.ClassifySpec(), europe, AreaChoice())
    assert "training domain" in warnings[-1] and warnings[-1].endswith(
        " Zero-shot classes overlap."
    )
    assert ctl.classify(T.ClassifySpec(), nd, AreaChoice())
    assert warnings[-1] == "Zero-shot classes overlap."
    assert len(warnings) == 4
