"""The land-use classification dialog: zero-shot with editable class prompts, or labelled polygons.

Which of the two is selected first follows the model bundle's declared zero-shot accuracy
(:func:`engine.classify.prompts.default_classify_mode`), and the dialog says why above the choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qgis.core import QgsFeatureRequest, QgsMapLayerProxyModel, QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...engine.errors import InputError
from ...engine.pipeline import ClassifySpec

PROMPT_SEP = ";"  # prompts of one class are typed in one cell, separated by this
ADVICE_STYLE = "background:#fff3cd;color:#7a4f01;border:1px solid #e0b84c;padding:4px"


class ClassifyDialog(QDialog):
    """Builds a :class:`~engine.pipeline.ClassifySpec`; ``spec()`` raises InputError on bad input."""

    def __init__(
        self,
        class_prompts: Mapping[str, Sequence[str]],
        parent: QWidget | None = None,
        bundle: Any = None,
    ) -> None:
        """``bundle`` (the model's BundleSpec) picks the first mode; None: zero-shot."""
        super().__init__(parent)
        self.setWindowTitle("UniGeo: classify land use")
        self.setObjectName("UniGeoClassifyDialog")
        self.result_spec: ClassifySpec | None = None
        lay = QVBoxLayout(self)
        mode, why = "zero-shot", ""
        if bundle is not None:
            from ...engine.pipeline import default_classify_mode

            mode, why = default_classify_mode(bundle)
        self.advice = QLabel(why)
        self.advice.setWordWrap(True)
        self.advice.setObjectName("UniGeoClassifyAdvice")
        self.advice.setStyleSheet(ADVICE_STYLE if mode == "few-shot" else "")
        self.advice.setVisible(bool(why))
        lay.addWidget(self.advice)
        self.zero = QRadioButton("Zero-shot from class prompts")
        lay.addWidget(self.zero)
        lay.addWidget(self._prompt_table(class_prompts))
        self.few = QRadioButton("From labelled polygons")
        lay.addWidget(self.few)
        lay.addLayout(self._examples_form())
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        (self.few if mode == "few-shot" else self.zero).setChecked(True)
        if mode == "few-shot" and self.layer_combo.count() == 0:
            self.advice.setText(
                why + " No polygon layer is open yet: add one with a class field, then "
                "classify again."
            )
        self.zero.toggled.connect(self._mode_changed)
        self._mode_changed()

    def _prompt_table(self, class_prompts: Mapping[str, Sequence[str]]) -> QWidget:
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(16, 0, 0, 0)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Class", f"Prompts (separated by '{PROMPT_SEP}')"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        for name, prompts in class_prompts.items():
            self.add_class(name, f"{PROMPT_SEP} ".join(prompts))
        lay.addWidget(self.table)
        row = QHBoxLayout()
        add, remove = QPushButton("Add class"), QPushButton("Remove class")
        add.clicked.connect(lambda: self.add_class("", ""))
        remove.clicked.connect(self._remove_selected)
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        lay.addLayout(row)
        self.prompt_box = box
        return box

    def _examples_form(self) -> QFormLayout:
        form = QFormLayout()
        form.setContentsMargins(16, 0, 0, 0)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.field_combo = QgsFieldComboBox()
        self.field_combo.setLayer(self.layer_combo.currentLayer())
        self.layer_combo.layerChanged.connect(self.field_combo.setLayer)
        self.method = QComboBox()
        self.method.addItem("Nearest class prototype", "prototype")
        self.method.addItem("Logistic regression", "logreg")
        form.addRow("Polygon layer", self.layer_combo)
        form.addRow("Class field", self.field_combo)
        form.addRow("Method", self.method)
        form.addRow(QLabel("Each class needs at least two tiles inside its polygons."))
        self.examples_widgets = (self.layer_combo, self.field_combo, self.method)
        return form

    def add_class(self, name: str, prompts: str) -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        self.table.setItem(r, 0, QTableWidgetItem(name))
        self.table.setItem(r, 1, QTableWidgetItem(prompts))

    def _remove_selected(self) -> None:
        for r in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(r)

    def _mode_changed(self) -> None:
        self.prompt_box.setEnabled(self.zero.isChecked())
        for w in self.examples_widgets:
            w.setEnabled(not self.zero.isChecked())

    # -- result -----------------------------------------------------------------------------
    def class_prompts(self) -> dict[str, tuple[str, ...]]:
        """The table as {class: prompts}; rows without a class name are ignored."""
        out: dict[str, tuple[str, ...]] = {}
        for r in range(self.table.rowCount()):
            name = (self.table.item(r, 0).text() if self.table.item(r, 0) else "").strip()
            cell = self.table.item(r, 1).text() if self.table.item(r, 1) else ""
            prompts = tuple(p.strip() for p in cell.split(PROMPT_SEP) if p.strip())
            if name:
                out[name] = prompts or (name,)  # a bare class name is its own prompt
        return out

    def spec(self) -> ClassifySpec:
        """The classification request, validated."""
        from ..controller import crs_string

        if self.zero.isChecked():
            prompts = self.class_prompts()
            if len(prompts) < 2:
                raise InputError("give at least two classes with a name and prompts")
            return ClassifySpec(class_prompts=prompts)
        layer = self.layer_combo.currentLayer()
        field = self.field_combo.currentField()
        if not isinstance(layer, QgsVectorLayer) or not field:
            raise InputError("choose a polygon layer and the field that holds the class names")
        examples = []
        for f in layer.getFeatures(QgsFeatureRequest().setFlags(QgsFeatureRequest.NoFlags)):
            label = f[field]
            if f.hasGeometry() and label not in (None, "") and str(label) != "NULL":
                examples.append((f.geometry().asWkt(), str(label)))
        if len({lab for _, lab in examples}) < 2:
            raise InputError(
                f"'{layer.name()}' needs polygons of at least two classes in '{field}'"
            )
        return ClassifySpec(
            examples=tuple(examples),
            examples_crs=crs_string(layer.crs()),
            method=self.method.currentData(),
        )

    def accept(self) -> None:
        try:
            self.result_spec = self.spec()
        except InputError as e:
            QMessageBox.warning(self, "UniGeo", str(e))
            return
        super().accept()
