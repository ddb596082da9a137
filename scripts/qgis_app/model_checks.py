"""The model as a new user gets it: no bundle at first start, then installed through the manager.

The plugin comes from the slim zip (no model inside, as from the QGIS repository), so QGIS starts
without any bundle: :func:`model_first_run` checks the first-run message and that the tools say
it instead of failing. :func:`model_install_processing` installs the default bundle from the
local zip of ``make package`` (UNIGEO_APP_MODEL_ZIP, with its ``.sha256``) through
``unigeo:installmodel``, as a user can from the toolbox; :func:`gui_model_manager` removes it
and installs it again through the Model manager dialog. Every later check uses that installed
bundle (never a MODEL path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication, QMessageBox, QPushButton

from .harness import CheckFailed, ensure, pause, wait_until
from .processing_checks import run_task

FIRST_RUN = "UniGeo has no model yet"


def model_zip() -> tuple[Path, str]:
    """The default bundle zip of ``make package`` and the sha256 its ``.sha256`` file states."""
    path = Path(os.environ.get("UNIGEO_APP_MODEL_ZIP", ""))
    sha_file = path.with_name(path.name + ".sha256")
    ensure(path.is_file() and sha_file.is_file(), f"no model zip (and .sha256) at '{path}'")
    return path, sha_file.read_text().split()[0]


def _settings() -> Any:
    from unigeo.plugin.settings import Settings

    return Settings.load()


def models_dir() -> Path:
    """Where the manager installs: ``<QGIS profile>/unigeo/models``, never the plugin folder."""
    folder = _settings().models_path()
    want = Path(QgsApplication.qgisSettingsDirPath()) / "unigeo" / "models"
    ensure(folder.resolve() == want.resolve(), f"models folder {folder}, expected {want}")
    return folder


def _first_run_item(ctx) -> Any:
    item = ctx.plugin.first_run_item
    ensure(item is not None, "no first-run message in the message bar")
    return item


def model_first_run(ctx) -> dict:
    """No bundle yet: the message bar says so with a one-click install; tools say it, no crash."""
    ensure(_settings().resolve_bundle() is None, f"a bundle is already there: {models_dir()}")
    item = _first_run_item(ctx)
    ensure(item.text().startswith(FIRST_RUN), f"first-run message reads '{item.text()}'")
    buttons = [b.text() for b in item.findChildren(QPushButton)]
    ensure("Install default model" in buttons, f"first-run message buttons: {buttons}")
    # the Processing toolbox refuses with the same message (not a traceback)
    try:
        run_task(
            "unigeo:heatmap",
            {"INPUT": str(ctx.inputs.raster), "QUERY_TEXT": "lake", "OUTPUT": "TEMPORARY_OUTPUT"},
        )
        raise CheckFailed("unigeo:heatmap ran without any model")
    except CheckFailed as e:
        ensure(FIRST_RUN in str(e), f"unigeo:heatmap without a model: {e}")
    # the dock: the band row and a text search say it too
    from .gui_checks import open_dock

    dock = open_dock(ctx, "extent")
    band_text = dock.band_panel.reason.text()
    ensure(FIRST_RUN in band_text, f"the dock's band row says '{band_text}'")
    ctx.screenshot("first_run", messages=True)
    start = len(ctx.capture.lines)
    dock.prompt.setEditText("open water")
    QTest.mouseClick(dock.text_button, Qt.LeftButton)
    said = [m for m in ctx.capture.lines[start:] if FIRST_RUN in m and "critical" in m]
    ensure(said, f"a text search without a model logged {ctx.capture.lines[start:]}")
    return {"message": item.text()[:200], "buttons": buttons}


def model_install_processing(ctx) -> dict:
    """unigeo:installmodel from the local default zip; the bundle is active and the model loads."""
    zip_path, sha = model_zip()
    res, fb = run_task("unigeo:installmodel", {"SOURCE": str(zip_path), "SHA256": sha})
    folder = Path(res["FOLDER"])
    ensure(folder.parent == models_dir(), f"installed into {folder}, not {models_dir()}")
    ensure((folder / "bundle.json").is_file(), f"{folder} holds no bundle.json")
    ensure(res["SHA256"] == sha, f"verified sha256 {res['SHA256']}, the .sha256 says {sha}")
    used = _settings().resolve_bundle()
    ensure(used is not None and Path(used) == folder, f"UniGeo resolves the bundle {used}")
    listed, _ = run_task("unigeo:models", {"ACTION": 0})
    models = json.loads(listed["MODELS"])
    ensure(
        [(m["key"], m["active"]) for m in models] == [(folder.name, True)],
        f"unigeo:models lists {models}",
    )
    ctx.load_model_facts(folder)
    # a model is in use now: the first-run message is gone (it offered to install one)
    ensure(ctx.plugin.first_run_item is None, "the first-run message stays after the install")
    return {"folder": str(folder), "sha256": sha, "log": [m for m in fb.messages if "info" in m]}


def _answer_yes_to_the_next_question(state: dict) -> None:
    def poll() -> None:
        w = QApplication.activeModalWidget()
        if isinstance(w, QMessageBox):
            state["question"] = w.text()
            w.button(QMessageBox.Yes).click()
        elif state.setdefault("polls", 0) < 100:
            state["polls"] += 1
            QTimer.singleShot(100, poll)

    QTimer.singleShot(100, poll)


def _find_action(ctx, text: str) -> Any:
    found = [a for a in ctx.plugin.actions if a.text() == text]
    ensure(len(found) == 1, f"no toolbar action '{text}'")
    return found[0]


def gui_model_manager(ctx) -> dict:
    """The Model manager: the installed bundle listed active; remove it; install the zip again."""
    zip_path, sha = model_zip()
    _find_action(ctx, "Model manager").trigger()
    dlg = ctx.plugin.model_manager
    wait_until(lambda: dlg is not None and dlg.isVisible(), 10, "the Model manager to open")
    dlg.move(80, 80)
    ensure(dlg.table.rowCount() == 1, f"{dlg.table.rowCount()} bundles listed, expected 1")
    ensure(dlg.table.item(0, 0).text() == "✓", "the installed bundle is not marked active")
    dlg.table.selectRow(0)
    state: dict[str, Any] = {}
    _answer_yes_to_the_next_question(state)
    QTest.mouseClick(dlg.remove_button, Qt.LeftButton)  # returns once the question is answered
    ensure("question" in state, "'Remove selected…' asked nothing")
    ensure(dlg.table.rowCount() == 0, f"{dlg.table.rowCount()} bundles after removing it")
    ensure(FIRST_RUN in dlg.where.text(), f"with no bundle the dialog says '{dlg.where.text()}'")
    ensure(_settings().resolve_bundle() is None, "a bundle still resolves after removing it")
    dlg.source.setText(str(zip_path))
    dlg.sha.setText(sha)
    QTest.mouseClick(dlg.install_button, Qt.LeftButton)
    wait_until(lambda: dlg.task is None, 120, "the Model manager's install to finish")
    status = dlg.status.text()
    ensure("installed and in use" in status, f"the dialog says '{status}'")
    ensure(dlg.table.rowCount() == 1 and dlg.table.item(0, 0).text() == "✓", "not listed active")
    ensure(dlg.progress.value() == 100, f"progress bar at {dlg.progress.value()}")
    dlg.table.selectRow(0)
    pause(0.3)
    dlg.grab().save(str(ctx.screens / "model_manager_dialog.png"))
    card = dlg.details.toPlainText()
    dlg.reject()
    folder = Path(_settings().resolve_bundle() or "")
    ctx.load_model_facts(folder)
    return {"status": status, "card": card.splitlines()[:6]}


CHECKS = [
    ("model_first_run", model_first_run),
    ("model_install_processing", model_install_processing),
    ("gui_model_manager_dialog", gui_model_manager),
]
SETUP = ("model_first_run", "model_install_processing")  # every run needs them (UNIGEO_APP_ONLY)
