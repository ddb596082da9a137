"""The model manager in QGIS: which bundle the plugin uses, the dialog, Processing, the first run.

Bundles are served by a local HTTP server (tests/models/conftest.py); QgsSettings are never
touched (Settings.load/save are replaced), and the models folder is a temporary one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.models.conftest import make_bundle_zip, running_server, visible

pytestmark = pytest.mark.qgis


@pytest.fixture()
def server():
    with running_server() as state:
        yield state


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("bundle_zip")
    return make_bundle_zip(root / "analytic", root / "dist")


@pytest.fixture()
def settings(plugin_package, tmp_path, monkeypatch):
    """Settings with an empty temporary models folder and no model shipped in the plugin."""
    from unigeo.plugin import model_cache
    from unigeo.plugin import settings as S

    s = S.Settings(models_folder=str(tmp_path / "models"), threads=1)
    monkeypatch.setattr(S.Settings, "load", classmethod(lambda cls: s))
    monkeypatch.setattr(S.Settings, "save", lambda self: None)
    monkeypatch.setattr(S, "default_bundle", lambda: str(tmp_path / "no-shipped-model"))
    model_cache.release_all()
    yield s
    model_cache.release_all()


def _sync(task):
    """Run a QgsTask on this thread, as the task manager would (run, then finished)."""
    task.finished(task.run())


def test_bundle_resolution_order_and_first_run_message(settings, bundle_zip, tmp_path, monkeypatch):
    from unigeo.engine.errors import ModelNotInstalledError
    from unigeo.engine.library.install import install_bundle
    from unigeo.plugin import settings as S

    assert settings.resolve_bundle() is None
    with pytest.raises(ModelNotInstalledError) as e:
        settings.bundle_path()
    msg = str(e.value)
    assert "Model manager > Install default model" in msg and "55.0 MB" in msg
    assert f'models install --default --models-dir "{tmp_path / "models"}"' in msg
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "bundle.json").write_text("{}")
    monkeypatch.setattr(S, "default_bundle", lambda: str(shipped))
    assert settings.resolve_bundle() == str(shipped)  # the checkout / offline zip
    install_bundle(bundle_zip[0], settings.models_path())
    assert settings.resolve_bundle() == str(tmp_path / "models" / "analytic-1")  # active wins
    settings.bundle = "/explicit/folder"
    assert settings.bundle_path() == "/explicit/folder"  # an explicit folder wins over both
    monkeypatch.setenv("UNIGEO_MODEL_URL", "https://mirror.example/b.zip")
    assert settings.default_model_url() == "https://mirror.example/b.zip"
    settings.model_url = "https://org.example/m.zip"
    assert settings.default_model_url() == "https://org.example/m.zip"


def test_dialog_installs_lists_uses_and_removes(settings, bundle_zip, tmp_path, qgis_app):
    from unigeo.engine.library.install import install_bundle
    from unigeo.plugin.dialogs.model_manager_dialog import COLUMNS, ModelManagerDialog

    zip_path, sha = bundle_zip
    dlg = ModelManagerDialog(settings, runner=_sync)
    assert dlg.table.rowCount() == 0 and "UniGeo has no model yet" in dlg.where.text()
    dlg.source.setText(str(zip_path))
    dlg.sha.setText(sha)
    changed: list[str] = []
    dlg.activeChanged.connect(changed.append)
    dlg.install_button.click()
    models = tmp_path / "models"
    assert dlg.task is None and dlg.progress.value() == 100
    assert "analytic 1 installed and in use" in dlg.status.text()
    assert changed == [str(models / "analytic-1")]
    row = {COLUMNS[c]: dlg.table.item(0, c).text() for c in range(len(COLUMNS))}
    assert row["Active"] == "✓" and row["Name"] == "analytic" and row["Version"] == "1"
    assert row["Modalities"] == "aerial, streetview, dsm, text, gps"
    assert row["Training domain"] == "2 areas; GSD 5-20 m" and row["Licence"] == "not declared"
    assert row["Declared accuracy"] == "none declared" and row["Size"].endswith("kB")
    assert f"UniGeo uses: {models / 'analytic-1'}" in dlg.where.text()
    other = tmp_path / "o"
    from tests.fixtures.analytic_bundle import make_analytic_bundle

    make_analytic_bundle(other, name="other", version="2", evaluation={
        "zero_shot": {"accuracy": 0.62, "n_test": 50, "classes": 4}})  # fmt: skip
    install_bundle(other, models)
    dlg.refresh()
    dlg.select("other-2")
    assert "declared accuracy: zero-shot land use 62.0 % (n_test 50, classes 4)" in (
        dlg.details.toPlainText()
    )
    dlg.use_button.click()
    assert settings.resolve_bundle() == str(models / "other-2")
    assert "UniGeo now uses other 2" in dlg.status.text()
    dlg.confirm = lambda *a: False
    dlg.remove_button.click()
    assert (models / "other-2").is_dir()  # not confirmed: kept
    dlg.confirm = lambda *a: True
    dlg.select("other-2")
    dlg.remove_button.click()
    assert not (models / "other-2").exists() and dlg.table.rowCount() == 1
    assert settings.resolve_bundle() is None  # the active one was removed
    assert changed[-1] == ""


def test_dialog_refusals_leave_nothing(settings, bundle_zip, server, tmp_path):
    from unigeo.plugin.dialogs.model_manager_dialog import ModelManagerDialog

    zip_path, sha = bundle_zip
    dlg = ModelManagerDialog(settings, runner=_sync)
    dlg.source.setText(str(zip_path))
    dlg.sha.setText("0" * 64)
    dlg.install_button.click()
    assert "was expected" in dlg.status.text() and "nothing was installed" in dlg.status.text()
    dlg.source.setText(server.serve("b.zip", zip_path.read_bytes()))
    dlg.sha.setText(sha)

    def cancel_then_run(task):
        task.cancel()
        _sync(task)

    dlg.runner = cancel_then_run
    dlg.install_button.click()
    assert dlg.status.text() == "Install cancelled; nothing was installed."
    assert dlg.install_button.isEnabled() and not dlg.cancel_button.isEnabled()
    dlg.source.setText("")
    dlg.install_button.click()
    assert "Choose a bundle zip" in dlg.status.text()
    assert visible(tmp_path / "models") == []


@pytest.fixture()
def provider(qgis_processing, plugin_package):
    """The UniGeo provider for one test (the plugin test below registers its own)."""
    from qgis.core import QgsApplication
    from unigeo.plugin.processing.provider import UniGeoProvider

    registry = QgsApplication.processingRegistry()
    p = UniGeoProvider()
    assert registry.addProvider(p)
    yield p
    registry.removeProvider(p)


def test_processing_install_list_use_remove(settings, bundle_zip, provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    zip_path, sha = bundle_zip
    models = tmp_path / "models"

    def run(name, **params):
        return processing.run(f"unigeo:{name}", params, feedback=QgsProcessingFeedback(),
                              context=QgsProcessingContext())  # fmt: skip

    out = run("installmodel", SOURCE=str(zip_path), SHA256=sha)
    assert out["FOLDER"] == str(models / "analytic-1") and out["SHA256"] == sha
    listed = run("models")
    assert [b["key"] for b in json.loads(listed["MODELS"])] == ["analytic-1"]
    assert listed["ACTIVE"] == str(models / "analytic-1")
    with pytest.raises(QgsProcessingException, match="sha256 of .* was expected"):
        run(
            "installmodel", SOURCE=str(zip_path), SHA256="1" * 64, MODELS_FOLDER=str(tmp_path / "x")
        )
    assert visible(tmp_path / "x") == []
    with pytest.raises(QgsProcessingException, match="Give the NAME of the bundle to use"):
        run("models", ACTION=1)
    removed = run("models", ACTION=2, NAME="analytic-1")
    assert json.loads(removed["MODELS"]) == [] and removed["ACTIVE"] == ""
    with pytest.raises(QgsProcessingException, match="UniGeo has no model yet"):
        run("gpsfield", EXTENT="0,1,0,1 [EPSG:4326]", RESOLUTION=0.5, QUERY_GPS="0.5,0.5",
            OUTPUT=str(tmp_path / "g.tif"))  # fmt: skip


def test_first_run_message_installs_the_default_in_one_click(
    settings,
    bundle_zip,
    server,
    qgis_iface,
    qgis_app,
    plugin_package,
    monkeypatch,
    tmp_path,
):
    from qgis.PyQt.QtWidgets import QPushButton
    from unigeo.engine.library.catalog import PinnedBundle
    from unigeo.plugin.dialogs import model_manager_dialog as M

    zip_path, sha = bundle_zip
    pin = PinnedBundle("analytic", "1", "https://unused.example/x.zip", sha,
                       zip_path.stat().st_size)  # fmt: skip
    monkeypatch.setattr(M, "DEFAULT_BUNDLE", pin)
    settings.model_url = server.serve("default.zip", zip_path.read_bytes())
    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert plugin.first_run_item is not None
        button = plugin.first_run_item.findChild(QPushButton, "UniGeoInstallDefaultModel")
        button.click()  # the one click: opens the manager and starts the default install
        dlg = plugin.model_manager
        deadline = time.monotonic() + 60
        while dlg.task is not None and time.monotonic() < deadline:
            qgis_app.processEvents()
            time.sleep(0.02)
        assert dlg.task is None, dlg.status.text()
        assert "analytic 1 installed and in use" in dlg.status.text()
        assert server.requests == [("/default.zip", None)]
        assert settings.resolve_bundle() == str(tmp_path / "models" / "analytic-1")
        assert plugin.first_run_item is None  # the message went away
        assert plugin.controller.model().folder == Path(settings.resolve_bundle())
    finally:
        plugin.unload()


def test_first_run_message_goes_once_a_model_installed_elsewhere_loads(
    settings, bundle_zip, qgis_iface, plugin_package
):
    """Installed through Processing or the shell, not the dialog: the first use drops the message.

    The real QGIS kept offering 'Install default model' after unigeo:installmodel had installed
    it, because only the dialog told the plugin.
    """
    from qgis.PyQt.QtWidgets import QPushButton
    from unigeo.engine.library.install import install_bundle
    from unigeo.plugin.settings import first_run_short

    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    try:
        item = plugin.first_run_item
        assert item is not None and item.text() == first_run_short()
        assert "55.0 MB download" in item.text() and len(item.text()) < 100  # one line in the bar
        assert item.findChild(QPushButton, "UniGeoInstallDefaultModel") is not None
        install_bundle(bundle_zip[0], settings.models_path())  # what unigeo:installmodel runs
        assert plugin.first_run_item is not None  # nothing has told the plugin yet
        model = plugin.controller.model()  # the next tool used
        assert model.folder == settings.models_path() / "analytic-1"
        assert plugin.first_run_item is None
    finally:
        plugin.unload()
