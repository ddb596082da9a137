"""The Model manager dialog: installed bundles with their card, install (file, URL, default), use, remove.

Installs run in a background :class:`InstallTask` over ``engine.library.install.install_bundle``
(progress bar, Cancel); listing, choosing and removing call ``engine.library.installed`` directly.
The same functions back ``unigeo:installmodel`` / ``unigeo:models`` and ``python -m engine
models``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...engine.errors import EngineError
from ...engine.library import (
    DEFAULT_BUNDLE,
    InstalledBundle,
    active_bundle,
    human_size,
    install_bundle,
    list_bundles,
    remove_bundle,
    set_active,
)
from .. import model_cache
from ..settings import Settings, first_run_message
from ..tasks import EngineTask, TaskResult

COLUMNS = ("Active", "Name", "Version", "Modalities", "Training domain", "Declared accuracy",
           "Size", "Licence")  # fmt: skip


class InstallTask(EngineTask):
    """Install one bundle in the background; value: the engine's ``InstallResult``."""

    def __init__(
        self,
        source: str,
        models_dir: Path,
        sha256: str | None,
        on_done: Callable[[TaskResult], None] | None = None,
        expected_size: int | None = None,
    ) -> None:
        super().__init__(f"UniGeo: install model {Path(source).name or source}", on_done)
        self.source, self.models_dir, self.sha256 = source, models_dir, sha256
        self.expected_size = expected_size
        self.messages: list[str] = []  # the engine's stage lines, read on the main thread

    def work(self) -> Any:
        return install_bundle(
            self.source,
            self.models_dir,
            self.sha256,
            activate=True,
            expected_size=self.expected_size,
            progress=self.report,
            is_canceled=self.canceled,
            message=self.messages.append,
        )


def _short_domain(domain: str) -> str:
    """``5 areas; GSD 2-90 m`` for the table (the card shows the boxes)."""
    if " (" not in domain or ";" not in domain:
        return domain
    return domain[: domain.index(" (")] + domain[domain.rindex(";") :]


def _ask(parent: QWidget, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text, QMessageBox.Yes | QMessageBox.No)
    return answer == QMessageBox.Yes


class ModelManagerDialog(QDialog):
    """Lists the bundles of the models folder and installs, activates or removes them."""

    activeChanged = pyqtSignal(str)  # noqa: N815 - the new active bundle folder

    def __init__(
        self,
        settings: Settings | None = None,
        parent: QWidget | None = None,
        runner: Callable[[EngineTask], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("UniGeo model manager")
        self.setObjectName("UniGeoModelManagerDialog")
        self.settings = settings or Settings.load()
        self.models_dir = self.settings.models_path()
        self.runner = runner or (lambda task: QgsApplication.taskManager().addTask(task))
        self.confirm: Callable[[QWidget, str, str], bool] = _ask  # replaced in tests
        self.task: InstallTask | None = None
        self.bundles: list[InstalledBundle] = []
        layout = QVBoxLayout(self)
        self.where = QLabel()
        self.where.setWordWrap(True)
        layout.addWidget(self.where)
        layout.addWidget(self._build_table(), 1)
        layout.addWidget(self._build_install())
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        close = QDialogButtonBox(QDialogButtonBox.Close)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        self.resize(960, 640)
        self.refresh()

    # -- layout -----------------------------------------------------------------------------
    def _build_table(self) -> QWidget:
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(150)
        self.table.itemSelectionChanged.connect(self._show_details)
        lay.addWidget(self.table, 1)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(120)
        self.details.setPlaceholderText("Select a model to see its card")
        lay.addWidget(self.details)
        row = QHBoxLayout()
        self.use_button = QPushButton("Use selected")
        self.use_button.clicked.connect(self.use_selected)
        self.remove_button = QPushButton("Remove selected…")
        self.remove_button.clicked.connect(self.remove_selected)
        row.addWidget(self.use_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        lay.addLayout(row)
        return box

    def _build_install(self) -> QWidget:
        box = QGroupBox("Install")
        lay = QVBoxLayout(box)
        self.default_button = QPushButton(
            f"Install default model ({DEFAULT_BUNDLE.name} {DEFAULT_BUNDLE.version}, "
            f"{DEFAULT_BUNDLE.size_label()} download)"
        )
        self.default_button.clicked.connect(self.install_default)
        lay.addWidget(self.default_button)
        row = QHBoxLayout()
        self.source = QLineEdit()
        self.source.setPlaceholderText("bundle .zip, bundle folder, or https:// URL of a zip")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.sha = QLineEdit()
        self.sha.setPlaceholderText("sha256 (required for a URL)")
        self.install_button = QPushButton("Install")
        self.install_button.clicked.connect(self.install_source)
        for w in (self.source, browse, self.sha, self.install_button):
            row.addWidget(w, 3 if w in (self.source, self.sha) else 0)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        lay.addLayout(row)
        return box

    # -- listing ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the models folder and show which bundle UniGeo uses."""
        self.bundles = list_bundles(self.models_dir)
        self.table.setRowCount(len(self.bundles))
        for r, b in enumerate(self.bundles):
            acc = "; ".join(b.accuracies) or "none declared"
            cells = ("✓" if b.active else "", b.name, b.version, ", ".join(b.modalities),
                     _short_domain(b.domain), acc, human_size(b.size_bytes),
                     b.licence or "not declared")  # fmt: skip
            for c, text in enumerate(cells):
                unusable = bool(b.problem) and c == 1
                item = QTableWidgetItem(f"{text} (unusable)" if unusable else text)
                item.setToolTip("\n".join(b.card_lines()))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.where.setText(self._where_text())
        self._show_details()

    def _where_text(self) -> str:
        used = self.settings.resolve_bundle()
        text = f"Models folder: {self.models_dir} (kept when the plugin is updated). "
        if self.settings.bundle:
            return text + f"UniGeo uses the folder set in Settings: {self.settings.bundle}."
        if used is None:
            return text + first_run_message(self.models_dir)
        return text + f"UniGeo uses: {used}."

    def selected(self) -> InstalledBundle | None:
        rows = {i.row() for i in self.table.selectedItems()}
        return self.bundles[rows.pop()] if len(rows) == 1 else None

    def _show_details(self) -> None:
        b = self.selected()
        self.use_button.setEnabled(b is not None and not b.problem)
        self.remove_button.setEnabled(b is not None)
        card = [b.description, *b.card_lines()[1:]] if b is not None else []
        self.details.setPlainText("\n".join(card))

    def select(self, key: str) -> None:
        """Select the row of the bundle folder ``key``."""
        for r, b in enumerate(self.bundles):
            if b.key == key:
                self.table.selectRow(r)

    # -- use / remove -----------------------------------------------------------------------
    def use_selected(self) -> None:
        """Make the selected bundle the active one (and drop an explicit folder in Settings)."""
        b = self.selected()
        if b is None:
            return
        try:
            set_active(self.models_dir, b.key)
        except EngineError as e:
            self._say(str(e), error=True)
            return
        note = ""
        if self.settings.bundle:
            note = f" (the folder set in Settings, {self.settings.bundle}, no longer overrides it)"
            self.settings.bundle = ""
            self.settings.save()
        self._changed(f"UniGeo now uses {b.name} {b.version}{note}.")

    def remove_selected(self) -> None:
        b = self.selected()
        if b is None or not self.confirm(self, "Remove model", f"Delete {b.folder}?"):
            return
        try:
            remove_bundle(self.models_dir, b.key)
        except EngineError as e:
            self._say(str(e), error=True)
            return
        self._changed(f"Removed {b.name} {b.version}.")

    def _changed(self, text: str) -> None:
        model_cache.release_all()  # the next query loads the bundle now in use
        active = active_bundle(self.models_dir)
        self.activeChanged.emit(str(active) if active else "")
        self.refresh()
        self._say(text)

    # -- install ----------------------------------------------------------------------------
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model bundle zip", "", "Bundle zip (*.zip)")
        if path:
            self.source.setText(path)

    def install_default(self) -> None:
        """Download and install the pinned default bundle."""
        url = self.settings.default_model_url()
        self._start(url, DEFAULT_BUNDLE.sha256, DEFAULT_BUNDLE.size)

    def install_source(self) -> None:
        """Install the zip, folder or URL typed in the source box."""
        source = self.source.text().strip()
        if not source:
            self._say("Choose a bundle zip or folder, or type an https URL.", error=True)
            return
        self._start(source, self.sha.text().strip() or None)

    def _start(self, source: str, sha256: str | None, size: int | None = None) -> None:
        if self.task is not None:
            return
        self.task = InstallTask(source, self.models_dir, sha256, self._done, size)
        self.task.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        self._busy(True)
        self._say(f"Installing {source} …")
        self.runner(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _busy(self, busy: bool) -> None:
        for w in (self.default_button, self.install_button, self.use_button, self.remove_button):
            w.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setValue(0)

    def _done(self, result: TaskResult) -> None:
        self.task = None
        self._busy(False)
        if result.ok:
            b = result.value.bundle
            state = "was already installed" if result.value.already_installed else "installed"
            self._changed(f"{b.name} {b.version} {state} and in use: {b.folder}")
            self.select(b.key)
            self.progress.setValue(100)
        elif result.cancelled:
            self.refresh()
            self._say("Install cancelled; nothing was installed.")
        else:
            self.refresh()
            self._say(result.error or "the install failed", error=True)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #b00020;" if error else "")
        self.status.setText(text)

    def reject(self) -> None:
        if self.task is not None:  # closing cancels the install; its result is then ignored
            self.task.on_done = None
            self.task.cancel()
            self.task = None
        super().reject()
