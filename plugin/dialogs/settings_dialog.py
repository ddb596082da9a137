"""The UniGeo settings dialog: model bundle, provider, threads, stride, cache, output folder."""

from __future__ import annotations

import dataclasses

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..settings import OUTPUT_FOLDER_HINT, PROVIDERS, Settings


def _folder_widget(value: str, placeholder: str) -> QgsFileWidget:
    w = QgsFileWidget()
    w.setStorageMode(QgsFileWidget.GetDirectory)
    w.setFilePath(value)
    w.lineEdit().setPlaceholderText(placeholder)
    return w


def _spin(value: int, lo: int, hi: int, special: str | None = None, suffix: str = "") -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setSuffix(suffix)
    if special:
        s.setSpecialValueText(special)  # shown for the minimum, which means "automatic"
    return s


def available_providers() -> str:
    """The onnxruntime providers of this installation, for the dialog's hint line."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    short = [p.replace("ExecutionProvider", "") for p in onnxruntime.get_available_providers()]
    return f"onnxruntime {onnxruntime.__version__} offers: {', '.join(short)}"


class SettingsDialog(QDialog):
    """Edits a :class:`~..settings.Settings`; ``accept()`` saves it."""

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("UniGeo settings")
        self.setObjectName("UniGeoSettingsDialog")
        s = settings or Settings.load()
        self.original = s
        form = QFormLayout(self)
        self.bundle = _folder_widget(s.bundle, "the active model of the Model manager")
        form.addRow("Model bundle", self.bundle)
        models = QPushButton("Model manager…")
        models.setToolTip("Install, choose or remove model bundles")
        models.clicked.connect(self.show_model_manager)
        form.addRow("", models)
        self.provider = QComboBox()
        self.provider.addItems(PROVIDERS)
        self.provider.setCurrentText(s.provider)
        self.provider.setToolTip("auto: TensorRT, then CUDA, then CPU, as available")
        form.addRow("Provider", self.provider)
        form.addRow("", QLabel(available_providers()))
        self.threads = _spin(s.threads, 0, 256, "automatic")
        form.addRow("CPU threads", self.threads)
        self.stride = _spin(s.stride_px, 0, 4096, "tile size (no overlap)", " px")
        form.addRow("Tile stride", self.stride)
        self.max_nodata = _spin(s.max_nodata_pct, 0, 100, None, " %")
        self.max_nodata.setToolTip(
            "Queries skip tiles with more no data than this (raster edges, no-data collars): "
            "their heatmap pixels stay empty and they are never top hits"
        )
        form.addRow("Skip tiles with no data above", self.max_nodata)
        self.cache = _folder_widget(s.cache_folder, "<QGIS settings>/unigeo/cache")
        form.addRow("Cache folder", self.cache)
        self.cache_mb = _spin(s.cache_mb, 16, 10_000_000, None, " MB")
        form.addRow("Cache size", self.cache_mb)
        self.output = _folder_widget(s.output_folder, OUTPUT_FOLDER_HINT)
        form.addRow("Output folder", self.output)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def settings(self) -> Settings:
        """The settings as edited (not saved yet); those not shown here are kept."""
        return dataclasses.replace(
            self.original,
            bundle=self.bundle.filePath().strip(),
            provider=self.provider.currentText(),
            threads=self.threads.value(),
            stride_px=self.stride.value(),
            max_nodata_pct=self.max_nodata.value(),
            cache_folder=self.cache.filePath().strip(),
            cache_mb=self.cache_mb.value(),
            output_folder=self.output.filePath().strip(),
        )

    def show_model_manager(self) -> None:
        """Open the Model manager over this dialog (it saves its own choices)."""
        from .model_manager_dialog import ModelManagerDialog

        ModelManagerDialog(parent=self).exec_()
        self.bundle.setFilePath(Settings.load().bundle)  # "Use" may have cleared the folder

    def accept(self) -> None:
        self.settings().save()
        super().accept()
