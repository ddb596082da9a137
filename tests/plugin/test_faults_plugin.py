"""Issue 16 through Processing and the GUI tasks: the same faults, the same guarantees as the CLI.

Each case runs a Processing algorithm (``processing.run``) or a GUI task (``EmbedTask``,
``HeatmapTask`` and the controller that starts them) into a fault: a store target that is a
folder of the user's files, a store another writer holds, a read-only output folder, the system
refusing the final write, an output path that is a folder or lies inside a store, and a raster
whose pixel size lies far outside the model's training range. It asserts one clear error
(``QgsProcessingException``, ``TaskResult.error``) or warning, and that what was there before is
intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from tests.plugin.conftest import UTM_CRS, UTM_ORIGIN, quadrant_array, write_tif
from tests.reliability.conftest import read_only_folder

pytestmark = pytest.mark.qgis


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def recording_feedback():
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
def utm_store(run, utm_tif, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fault_stores") / "utm.store"
    run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(out))
    return out


@pytest.fixture(scope="module")
def coarse_tif(raster_dir) -> Path:
    """20 x 20 px of 1 km in UTM 33N: far outside the analytic bundle's 5-20 m range."""
    t = Affine(1000.0, 0, UTM_ORIGIN[0], 0, -1000.0, UTM_ORIGIN[1])
    return write_tif(raster_dir / "coarse.tif", quadrant_array(20, 20, 5), UTM_CRS, t)


SMALL_EXTENT = (UTM_ORIGIN[0], UTM_ORIGIN[0] + 640, UTM_ORIGIN[1] - 640, UTM_ORIGIN[1])


def extent_param(box=SMALL_EXTENT) -> str:
    return f"{box[0]},{box[1]},{box[2]},{box[3]} [{UTM_CRS}]"


# -- Processing --------------------------------------------------------------------------------
def test_embedraster_refuses_a_folder_of_user_files(run, utm_tif, tmp_path):
    from qgis.core import QgsProcessingException

    d = tmp_path / "thesis"
    d.mkdir()
    (d / "thesis.docx").write_text("four years")
    before = digest(d)
    with pytest.raises(QgsProcessingException, match="not an embedding store.*never replaces"):
        run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(d))
    assert digest(d) == before and sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_embedraster_into_a_store_another_writer_holds(run, utm_tif, tmp_path):
    from qgis.core import QgsProcessingException
    from unigeo.engine.store.guard import StoreLock

    out = tmp_path / "c.store"
    lock = StoreLock.acquire(out)  # what a running embed (CLI, task, Dask) holds
    try:
        with pytest.raises(QgsProcessingException, match="another UniGeo job"):
            run("embedraster", INPUT=str(utm_tif), OUTPUT_STORE=str(out))
        assert not out.exists() and not (tmp_path / "c.store.partial").exists()
    finally:
        lock.release()


@pytest.mark.parametrize("algorithm", ["heatmap", "tophits"])
def test_query_outputs_in_a_read_only_folder_keep_the_earlier_result(
    algorithm, run, utm_store, tmp_path
):
    from qgis.core import QgsProcessingException

    folder = tmp_path / "ro"
    folder.mkdir()
    name = "h.tif" if algorithm == "heatmap" else "h.gpkg"
    with read_only_folder(folder) as freeze:
        run(algorithm, STORE=str(utm_store), QUERY_TEXT="water", OUTPUT=str(folder / name))
        before = digest(folder)
        freeze()
        with pytest.raises(QgsProcessingException, match=f"cannot write {folder / name}"):
            run(algorithm, STORE=str(utm_store), QUERY_TEXT="trees", OUTPUT=str(folder / name))
        assert digest(folder) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_heatmap_whose_final_write_fails_keeps_the_earlier_output(
    code, run, utm_store, tmp_path, monkeypatch
):
    from qgis.core import QgsProcessingException

    out = tmp_path / "h.tif"
    run("heatmap", STORE=str(utm_store), QUERY_TEXT="water", OUTPUT=str(out))
    before = digest(tmp_path)

    def refuse(src, dst, *a, **k):
        raise OSError(code, os.strerror(code), str(dst))

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", refuse)
        with pytest.raises(QgsProcessingException, match=os.strerror(code)):
            run("heatmap", STORE=str(utm_store), QUERY_TEXT="trees", OUTPUT=str(out))
    assert digest(tmp_path) == before  # byte-identical, and no hidden temporary left


def test_outputs_that_are_folders_or_inside_a_store_are_refused(run, utm_store, tmp_path):
    from qgis.core import QgsProcessingException

    d = tmp_path / "h.tif"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    store_before = digest(utm_store)
    with pytest.raises(QgsProcessingException, match="is a folder, not a file"):
        run("heatmap", STORE=str(utm_store), QUERY_TEXT="water", OUTPUT=str(d))
    inside = utm_store / "valid.npy"
    with pytest.raises(QgsProcessingException, match="inside the embedding store"):
        run("heatmap", STORE=str(utm_store), QUERY_TEXT="water", OUTPUT=str(inside))
    same = tmp_path / "c.tif"
    with pytest.raises(QgsProcessingException, match="both be written to"):
        run("classify", STORE=str(utm_store), OUTPUT_CLASSES=str(same), OUTPUT_CONFIDENCE=str(same))
    assert (d / "keep.txt").read_text() == "mine" and digest(utm_store) == store_before
    assert not same.exists()


def test_embedraster_warns_about_the_pixel_size_with_tiles_and_time(run, coarse_tif, tmp_path):
    fb = recording_feedback()
    out = tmp_path / "coarse.store"
    run("embedraster", fb, INPUT=str(coarse_tif), EXTENT=extent_param(), OUTPUT_STORE=str(out))
    (warning,) = fb.warnings
    assert "'coarse.tif' has 1,000 m pixels, outside the 5-20 m range" in warning
    assert "resampled to 10 m (100x finer), 16 tiles" in warning
    assert any(i.startswith("Estimate: 16 tiles") for i in fb.infos)
    assert (out / "store.json").is_file()


def test_algorithms_that_embed_on_a_cache_miss_warn_too(run, coarse_tif, tmp_path):
    fb = recording_feedback()
    out = tmp_path / "h.tif"
    run("heatmap", fb, INPUT=str(coarse_tif), EXTENT=extent_param(), QUERY_TEXT="water",
        OUTPUT=str(out))  # fmt: skip
    assert any("1,000 m pixels" in w and "16 tiles" in w for w in fb.warnings), fb.warnings
    fb2 = recording_feedback()  # the cached store: nothing is embedded, nothing to warn about
    run("heatmap", fb2, INPUT=str(coarse_tif), EXTENT=extent_param(), QUERY_TEXT="water",
        OUTPUT=str(tmp_path / "h2.tif"))  # fmt: skip
    assert not any("m pixels" in w for w in fb2.warnings)


# -- GUI tasks ---------------------------------------------------------------------------------
@pytest.fixture()
def model(unigeo_settings):
    from unigeo.plugin.model_cache import get_model

    return get_model()


def _grid(model, path: Path, extent=None):
    from unigeo.engine.model.contract import Modality
    from unigeo.engine.raster.gdal_reader import GdalReader
    from unigeo.engine.raster.tiling import grid_for_raster

    reader = GdalReader(path)
    return reader, grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess, extent=extent)


def test_embed_task_into_a_folder_of_user_files_or_a_locked_store(model, utm_tif, tmp_path):
    from unigeo.engine.store.guard import StoreLock
    from unigeo.plugin.tasks import EmbedTask

    reader, grid = _grid(model, utm_tif)
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("mine")
    task = EmbedTask(model, reader, grid, d)
    task.finished(task.run())
    assert not task.result.ok and "not an embedding store" in task.result.error
    assert (d / "a.txt").read_text() == "mine" and sorted(p.name for p in d.iterdir()) == ["a.txt"]

    locked = tmp_path / "l.store"
    lock = StoreLock.acquire(locked)
    try:
        task = EmbedTask(model, reader, grid, locked)
        task.finished(task.run())
    finally:
        lock.release()
    assert not task.result.ok and "another UniGeo job" in task.result.error
    assert not locked.exists() and "Traceback" not in task.result.error


def _heatmap_task(model, store: Path, out: Path, text: str):
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.tasks import HeatmapTask

    task = HeatmapTask(model, store, QuerySpec(texts=(text,)), out)
    task.finished(task.run())
    return task.result


def test_heatmap_task_over_an_earlier_output_in_a_read_only_folder(model, utm_store, tmp_path):
    """The task deleted its output path on failure, so a failed rewrite also lost the earlier
    heatmap there; only a file the task reserved (empty) or made is removed now."""
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "h.tif"
    with read_only_folder(folder) as freeze:
        assert _heatmap_task(model, utm_store, out, "water").ok
        before = digest(folder)
        freeze()
        result = _heatmap_task(model, utm_store, out, "trees")
        assert not result.ok and result.error.startswith(f"cannot write {out}")
        assert digest(folder) == before


def test_heatmap_task_whose_final_write_fails(model, utm_store, tmp_path, monkeypatch):
    out = tmp_path / "h.tif"
    assert _heatmap_task(model, utm_store, out, "water").ok
    before = digest(tmp_path)

    def refuse(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", refuse)
        result = _heatmap_task(model, utm_store, out, "trees")
    assert not result.ok and "No space left on device" in result.error
    assert "the disk is full" in result.error
    assert digest(tmp_path) == before


def test_heatmap_task_still_removes_its_own_reserved_file(model, utm_store, tmp_path):
    """The controller reserves an empty file per request; a failed task removes it."""
    out = tmp_path / "reserved.tif"
    out.touch()
    result = _heatmap_task(model, utm_store / "missing", out, "water")
    assert not result.ok and not out.exists()


@pytest.fixture()
def coarse_layer(coarse_tif, qgis_new_project):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(coarse_tif), "coarse")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_controller_warns_and_asks_before_a_very_large_embedding(
    qgis_iface, coarse_layer, unigeo_settings, monkeypatch
):
    import unigeo.engine.embed.plan as plan
    from qgis.core import Qgis
    from unigeo.engine.pipeline import QuerySpec
    from unigeo.plugin.controller import AreaChoice, Controller
    from unigeo.plugin.tasks import EmbedTask

    box = (SMALL_EXTENT[0], SMALL_EXTENT[2], SMALL_EXTENT[1], SMALL_EXTENT[3])
    area = AreaChoice("extent", box, UTM_CRS)
    started, asked = [], []
    ctl = Controller(qgis_iface, runner=started.append)
    qgis_iface.messageBar().clear_messages()
    ctl.run_query(QuerySpec(texts=("water",)), coarse_layer, area)
    (task,) = started
    assert isinstance(task, EmbedTask) and task.grid.n_tiles == 16
    warnings = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert any("1,000 m pixels" in w and "16 tiles" in w for w in warnings), warnings
    assert any("16 tiles" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))

    monkeypatch.setattr(plan, "LARGE_JOB_S", 0.0)  # every job is now "very large"
    ctl.confirm = lambda title, text: asked.append(text) or False
    ctl.run_query(QuerySpec(texts=("water",)), coarse_layer, area)
    assert len(started) == 1 and len(asked) == 1 and "1,000 m pixels" in asked[0]
    assert any("not started" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))
    ctl.confirm = lambda title, text: True
    ctl.run_query(QuerySpec(texts=("water",)), coarse_layer, area)
    assert len(started) == 2
    np.testing.assert_equal(started[1].grid.n_tiles, 16)


@pytest.fixture(autouse=True)
def _no_task_left_behind():
    """Tasks a test started but never ran must not look 'live' to the next module's waits."""
    from unigeo.plugin.tasks import EngineTask

    before = set(EngineTask.live)
    yield
    for task in set(EngineTask.live) - before:
        EngineTask.live.discard(task)
