"""The dock's band choice: which band of the source raster feeds each of the model's bands.

Shows UniGeo's choice for the layer (and why), one drop-down per model band to change it, and
*Auto* to go back to UniGeo's choice. Below them, *Scaling* says how raw values become the
model's: automatic (8-bit / 255, other types a 2-98 % stretch) or a sensor's training rule for
raw products (Sentinel-2, Landsat: absolute reflectance). Both are remembered per layer source
(:mod:`..source_bands`); the controller reads the same memory, so every search uses what the
panel shows.
"""

from __future__ import annotations

from collections.abc import Sequence

from qgis.core import QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...engine.errors import RasterInputError
from ...engine.raster import ABSENT, BandChoice, get_sensor, sensor_names, user_choice
from .. import source_bands as SB

PER_ROW = 3  # model bands per row of drop-downs
UNSET = -1  # a drop-down with nothing picked yet (UniGeo could not tell)
WARN = "color:#7a4f01"


class BandPanel(QWidget):
    """Band drop-downs for one raster layer and one model's band names."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layer: QgsRasterLayer | None = None
        self.wanted: tuple[str, ...] = ()
        self.optional: tuple[str, ...] = ()
        self.choice: BandChoice | None = None
        self.combos: list[QComboBox] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.grid = QGridLayout()
        lay.addLayout(self.grid)
        self.reason = QLabel("Choose a source raster")
        self.reason.setWordWrap(True)
        lay.addWidget(self.reason)
        row = QHBoxLayout()
        row.addStretch(1)
        self.use_button = QPushButton("Use these")
        self.use_button.setToolTip("Use and remember the bands shown for this raster")
        self.use_button.clicked.connect(self.apply)
        row.addWidget(self.use_button)
        self.auto_button = QPushButton("Auto")
        self.auto_button.setToolTip("Forget the bands picked by hand; let UniGeo choose")
        self.auto_button.clicked.connect(self.reset_auto)
        row.addWidget(self.auto_button)
        lay.addLayout(row)
        srow = QHBoxLayout()
        srow.addWidget(QLabel("Scaling"))
        self.scaling_combo = QComboBox()
        self.scaling_combo.setObjectName("UniGeoScaling")
        self.scaling_combo.addItem("Automatic (8-bit / 255, else 2-98 % stretch)", SB.AUTO_SCALE)
        for name in sensor_names():
            self.scaling_combo.addItem(name, SB.SENSOR_PREFIX + name)
            self.scaling_combo.setItemData(
                self.scaling_combo.count() - 1, get_sensor(name).description, Qt.ToolTipRole
            )
        self.scaling_combo.setToolTip(
            "How raw pixel values become the model's. A sensor's rule (its training scaling: "
            "absolute reflectance) suits raw Sentinel-2 / Landsat products; automatic stretches "
            "each raster to its own range"
        )
        self.scaling_combo.currentIndexChanged.connect(self._scaling_changed)
        srow.addWidget(self.scaling_combo, 1)
        lay.addLayout(srow)
        self._filling = False
        self._built: tuple = ()

    def set_source(
        self, layer: QgsRasterLayer | None, wanted: Sequence[str], optional: Sequence[str] = ()
    ) -> None:
        """Show the choice for ``layer`` and the model's ``wanted`` bands."""
        self.layer, self.wanted, self.optional = layer, tuple(wanted), tuple(optional)
        self.refresh()

    def set_unavailable(self, why: str) -> None:
        """No model to ask which bands it needs: say why, offer nothing to pick."""
        self.layer, self.wanted, self.choice = None, (), None
        self._build([])
        self.auto_button.setEnabled(False)  # nothing was picked by hand to forget
        self.scaling_combo.setEnabled(False)
        self._show_reason(why, ok=False)

    def refresh(self) -> None:
        """Recompute the choice (remembered, else UniGeo's) and fill the drop-downs."""
        if self.layer is None or not self.wanted:
            self.choice = None
            self._build([])
            self.scaling_combo.setEnabled(False)
            self._show_reason("Choose a source raster", ok=True)
            return
        self.choice = SB.current_choice(self.layer, self.wanted, self.optional)
        self._build(self.wanted)
        shown = self.choice.mapping or (
            self.choice.candidates[0].mapping if self.choice.candidates else ()
        )
        self._filling = True
        for i, combo in enumerate(self.combos):
            combo.setCurrentIndex(max(0, combo.findData(shown[i] if shown else UNSET)))
        self.scaling_combo.setCurrentIndex(
            max(0, self.scaling_combo.findData(SB.scaling(self.layer)))
        )
        self.scaling_combo.setEnabled(True)
        self._filling = False
        self.auto_button.setEnabled(self.choice.source == "user")
        self.use_button.setVisible(not self.choice.decided)
        self._show_reason(_summary(self.choice), ok=self.choice.decided, tip=self.choice.reason)

    def _build(self, wanted: Sequence[str]) -> None:
        """One drop-down per model band; kept as they are while layer and model stay the same."""
        self.use_button.setVisible(False)
        key = (self.layer.id() if self.layer is not None else "", tuple(wanted), self.optional)
        if key == self._built:
            return
        self._built = key
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.combos = []
        count = self.layer.bandCount() if self.layer is not None else 0
        names = SB.provider_bands(self.layer)[1] if self.layer is not None else []
        for i, name in enumerate(wanted):
            combo = QComboBox()
            combo.setObjectName(f"UniGeoBand_{name}")
            combo.addItem("?", UNSET)
            if name in self.optional:
                combo.addItem("absent", ABSENT)
            for b in range(1, count + 1):
                combo.addItem(f"{b}" + (f": {names[b - 1]}" if names[b - 1] else ""), b)
            combo.currentIndexChanged.connect(self._changed)
            r, c = divmod(i, PER_ROW)
            self.grid.addWidget(QLabel(name), r, 2 * c)
            self.grid.addWidget(combo, r, 2 * c + 1)
            self.combos.append(combo)

    def _show_reason(self, text: str, ok: bool, tip: str = "") -> None:
        self.reason.setText(text)
        self.reason.setToolTip(tip or text)
        self.reason.setStyleSheet("" if ok else WARN)

    def mapping(self) -> tuple[int, ...]:
        """The drop-downs' bands in the model's order (:data:`UNSET` where none is picked)."""
        return tuple(int(c.currentData()) for c in self.combos)

    def _changed(self) -> None:
        if not self._filling:
            self.apply()

    def scaling(self) -> str:
        """The scaling drop-down's reader ``scale`` (``"dtype"`` or ``"sensor:<name>"``)."""
        return str(self.scaling_combo.currentData())

    def _scaling_changed(self) -> None:
        if self._filling or self.layer is None:
            return
        SB.remember_scaling(self.layer, self.scaling())

    def apply(self) -> None:
        """Remember the drop-downs' bands for this layer (a complete, valid selection only)."""
        if self.layer is None:
            return
        picked = self.mapping()
        if UNSET in picked:
            self._show_reason("Pick a band for every model band", ok=False)
            return
        try:
            choice = user_choice(self.layer.bandCount(), self.wanted, picked, self.optional)
        except RasterInputError as e:
            self._show_reason(str(e), ok=False)
            return
        SB.remember(self.layer, choice)
        self.refresh()

    def reset_auto(self) -> None:
        """Forget the user's bands for this layer and show UniGeo's choice again."""
        if self.layer is not None:
            SB.forget(self.layer)
        self.refresh()


def _summary(choice: BandChoice) -> str:
    """The reason in a line or two: the drop-downs already show which band goes where."""
    if choice.decided:
        head = choice.reason.split(": ", 1)[0]
        return (
            head[0].upper()
            + head[1:]
            + (f"; absent: {', '.join(choice.absent)}" if choice.absent else "")
        )
    if not choice.candidates:
        return choice.reason
    fits = "; ".join(
        f"{c.reason.split(': ', 1)[0].removesuffix(' band layout')} {c.text()}"
        for c in choice.candidates
    )
    return (
        f"UniGeo cannot tell which sensor this is ({fits}). The first is shown: check it, change "
        "a band or press Use these."
    )
