"""The UniGeo search dock: text → map, photo → map, example places, area, device badge, warnings.

The dock only gathers what to search for and where; it emits a :class:`~engine.pipeline.QuerySpec`
through ``searchRequested`` and the plugin hands it to the controller with the chosen raster
layer and area. Recent text queries are kept in QgsSettings under ``unigeo/gui/``. UniGeo's own
outputs (heatmaps, class and confidence maps) are never offered as source rasters; the bands
of the source are shown and picked in a :class:`~.band_panel.BandPanel`; clicked example places
are marked on the map until *Clear*.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsMapLayerProxyModel,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapCanvas, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QEvent, QObject, QSize, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...engine.pipeline import QuerySpec
from ..controller import AreaChoice, crs_string
from ..layers import is_unigeo_output
from ..tools.example_markers import ExampleMarkers
from .band_panel import BandPanel

RECENT_KEY = "unigeo/gui/recent_queries"
MAX_RECENT = 12
AREAS = (
    ("extent", "Current map extent"),
    ("layer", "Whole raster layer"),
    ("polygons", "Polygon layer"),
)
BADGE_STYLE = {
    "GPU": "background:#2e7d32;color:white;border-radius:3px;padding:2px 6px;font-weight:bold",
    "CPU": "background:#546e7a;color:white;border-radius:3px;padding:2px 6px;font-weight:bold",
}
WARN_STYLE = "background:#fff3cd;color:#7a4f01;border:1px solid #e0b84c;padding:4px"


class VerticalScroll(QScrollArea):
    """Scrolls its content vertically only, and is never narrower than the content needs.

    A plain QScrollArea hints a small width, so QGIS opened the dock narrower than its rows (the
    band drop-downs, the source combo) and cut them off behind a horizontal scroll bar.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    def _content_width(self) -> int:
        body = self.widget()
        need = body.minimumSizeHint().width() if body is not None else 0
        return need + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        hint = super().minimumSizeHint()
        return QSize(max(hint.width(), self._content_width()), hint.height())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        hint = super().sizeHint()
        return QSize(max(hint.width(), self._content_width()), hint.height())

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        # the content's layout changed (e.g. more band drop-downs): the dock re-reads our hints
        if obj is self.widget() and event.type() == QEvent.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)


class SearchDock(QgsDockWidget):
    """Gathers queries; ``searchRequested(QuerySpec)`` when the user asks for a heatmap."""

    searchRequested = pyqtSignal(object)  # noqa: N815 - a QuerySpec
    markPhotoRequested = pyqtSignal(float, float, str)  # noqa: N815 - lat, lon, photo name

    def __init__(self, canvas: QgsMapCanvas, parent: QWidget | None = None) -> None:
        super().__init__("UniGeo search", parent)
        self.setObjectName("UniGeoSearchDock")
        self.canvas = canvas
        self.examples: list[tuple[float, float, str, bool]] = []  # x, y, CRS, negative
        self.markers = ExampleMarkers(canvas)
        self.photo_gps: tuple[float, float] | None = None
        body = QWidget(self)
        lay = QVBoxLayout(body)
        lay.addWidget(self._source_box())
        lay.addWidget(self._text_box())
        lay.addWidget(self._photo_box())
        lay.addWidget(self._examples_box())
        lay.addStretch(1)
        lay.addLayout(self._status_row())
        # scrolling, not squeezing, when the dock is shorter than its content
        scroll = VerticalScroll(self)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self._load_recent()
        project = QgsProject.instance()
        project.layersAdded.connect(self.hide_outputs)
        project.layersRemoved.connect(self.hide_outputs)
        self.hide_outputs()

    def teardown(self) -> None:
        """Disconnect from the project and take the markers off the canvas (plugin unload)."""
        project = QgsProject.instance()
        for signal in (project.layersAdded, project.layersRemoved):
            try:
                signal.disconnect(self.hide_outputs)
            except TypeError:
                pass  # never connected
        self.markers.remove()

    # -- building ---------------------------------------------------------------------------
    def _source_box(self) -> QGroupBox:
        box = QGroupBox("Where")
        form = QFormLayout(box)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Source raster", self.layer_combo)
        self.band_panel = BandPanel()
        form.addRow("Bands", self.band_panel)
        self.area_combo = QComboBox()
        for key, label in AREAS:
            self.area_combo.addItem(label, key)
        form.addRow("Area", self.area_combo)
        self.polygon_combo = QgsMapLayerComboBox()
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.polygon_combo.setAllowEmptyLayer(True)
        form.addRow("Polygon layer", self.polygon_combo)
        self.area_combo.currentIndexChanged.connect(self._area_changed)
        self._area_changed()
        return box

    def _text_box(self) -> QGroupBox:
        box = QGroupBox("Text → map")
        form = QFormLayout(box)
        self.prompt = QComboBox()
        self.prompt.setEditable(True)
        self.prompt.setInsertPolicy(QComboBox.NoInsert)
        self.prompt.lineEdit().setPlaceholderText("e.g. wetlands next to cropland")
        self.prompt.lineEdit().returnPressed.connect(self.search_text)
        form.addRow("Describe", self.prompt)
        self.template_combo = QComboBox()
        self.set_templates(())
        form.addRow("Templates", self.template_combo)
        self.text_button = QPushButton("Search text")
        self.text_button.clicked.connect(self.search_text)
        form.addRow(self.text_button)
        return box

    def _photo_box(self) -> QGroupBox:
        self.photo_group = box = QGroupBox("Photo → map")
        form = QFormLayout(box)
        self.photo_file = QgsFileWidget()
        self.photo_file.setFilter("Photos (*.jpg *.jpeg *.png *.tif *.tiff)")
        self.photo_file.fileChanged.connect(self.set_photo)
        form.addRow("Street photo", self.photo_file)
        self.gps_label = QLabel("No photo")
        self.mark_button = QPushButton("Mark on map")
        self.mark_button.setEnabled(False)
        self.mark_button.clicked.connect(self._mark_photo)
        row = QHBoxLayout()
        row.addWidget(self.gps_label, 1)
        row.addWidget(self.mark_button)
        form.addRow(row)
        self.photo_button = QPushButton("Search photo")
        self.photo_button.clicked.connect(self.search_photo)
        form.addRow(self.photo_button)
        return box

    def _examples_box(self) -> QGroupBox:
        box = QGroupBox("Example places (Find similar tool)")
        lay = QVBoxLayout(box)
        hint = QLabel("Click: new search · Shift+click: add a place · Ctrl+click: avoid a place")
        hint.setWordWrap(True)
        lay.addWidget(hint)
        self.example_list = QListWidget()
        self.example_list.setMinimumHeight(70)
        self.example_list.setMaximumHeight(120)
        lay.addWidget(self.example_list)
        row = QHBoxLayout()
        self.examples_button = QPushButton("Find similar")
        self.examples_button.clicked.connect(self.search_examples)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear_examples)
        row.addWidget(self.examples_button)
        row.addWidget(clear)
        lay.addLayout(row)
        return box

    def _status_row(self) -> QVBoxLayout:
        col = QVBoxLayout()
        row = QHBoxLayout()
        row.addWidget(QLabel("Device"))
        self.badge = QLabel("…")
        self.badge.setSizePolicy(QSizePolicy.Maximum, QSizePolicy.Preferred)
        row.addWidget(self.badge)
        row.addStretch(1)
        col.addLayout(row)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(WARN_STYLE)
        self.warning.setVisible(False)
        col.addWidget(self.warning)
        return col

    # -- state shown ------------------------------------------------------------------------
    def set_device(self, text: str, tooltip: str) -> None:
        """Show the device badge ("GPU"/"CPU") with the reason as tooltip."""
        self.badge.setText(text)
        self.badge.setToolTip(tooltip)
        self.badge.setStyleSheet(BADGE_STYLE.get(text, ""))

    def set_warning(self, text: str) -> None:
        """Show an out-of-domain warning; an empty text hides the label."""
        self.warning.setText(text)
        self.warning.setToolTip(text)
        self.warning.setVisible(bool(text))

    def set_templates(self, templates: tuple[str, ...] | list[str]) -> None:
        """Offer the bundle's prompt templates (all averaged, none, or one of them)."""
        keep = self.template_combo.currentText()
        self.template_combo.clear()
        self.template_combo.addItem("All of the model's templates", None)
        self.template_combo.addItem("None (the text as typed)", ("{}",))
        for t in templates:
            if t != "{}":
                self.template_combo.addItem(t, (t,))
        self.template_combo.setCurrentIndex(max(0, self.template_combo.findText(keep)))

    def _area_changed(self) -> None:
        self.polygon_combo.setEnabled(self.area_combo.currentData() == "polygons")

    def hide_outputs(self, *_: object) -> None:
        """Offer every raster layer as a source except UniGeo's own outputs."""
        layers = QgsProject.instance().mapLayers().values()
        self.layer_combo.setExceptedLayerList([lyr for lyr in layers if is_unigeo_output(lyr)])

    # -- what the user chose ----------------------------------------------------------------
    def source_layer(self) -> QgsRasterLayer | None:
        layer = self.layer_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    def area_choice(self) -> AreaChoice:
        """The search area: the canvas extent, the whole layer, or a polygon layer's extent."""
        kind = self.area_combo.currentData()
        if kind == "extent":
            e = self.canvas.extent()
            crs = crs_string(self.canvas.mapSettings().destinationCrs())
            return AreaChoice(kind, (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()), crs)
        poly = self.polygon_combo.currentLayer()
        if kind == "polygons" and poly is not None:
            e = poly.extent()
            box = (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum())
            wkts = tuple(f.geometry().asWkt() for f in poly.getFeatures() if f.hasGeometry())
            return AreaChoice(kind, box, crs_string(poly.crs()), wkts)
        return AreaChoice("layer")

    def templates(self) -> tuple[str, ...] | None:
        return self.template_combo.currentData()

    # -- text -------------------------------------------------------------------------------
    def search_text(self) -> None:
        text = self.prompt.currentText().strip()
        if not text:
            return
        self.remember(text)
        self.searchRequested.emit(QuerySpec(texts=(text,), templates=self.templates()))

    def remember(self, text: str) -> None:
        """Put ``text`` first in the recent queries (kept across sessions)."""
        recent = [text] + [self.prompt.itemText(i) for i in range(self.prompt.count())]
        recent = list(dict.fromkeys(r for r in recent if r))[:MAX_RECENT]
        QgsSettings().setValue(RECENT_KEY, recent)
        self.prompt.clear()
        self.prompt.addItems(recent)
        self.prompt.setCurrentIndex(0)

    def _load_recent(self) -> None:
        recent = QgsSettings().value(RECENT_KEY, []) or []
        self.prompt.addItems([str(r) for r in ([recent] if isinstance(recent, str) else recent)])
        self.prompt.setCurrentText("")

    # -- photo ------------------------------------------------------------------------------
    def set_photo(self, path: str) -> None:
        """Select a photo; if it carries EXIF GPS, offer to mark it on the map."""
        from ...engine.pipeline import read_exif_latlon

        self.photo_gps = read_exif_latlon(path) if path and Path(path).is_file() else None
        if self.photo_gps:
            lat, lon = self.photo_gps
            self.gps_label.setText(f"EXIF GPS {lat:.5f}, {lon:.5f}")
        else:
            self.gps_label.setText("No GPS in this photo" if path else "No photo")
        self.mark_button.setEnabled(self.photo_gps is not None)

    def _mark_photo(self) -> None:
        if self.photo_gps:
            self.markPhotoRequested.emit(*self.photo_gps, Path(self.photo_file.filePath()).name)

    def search_photo(self) -> None:
        path = self.photo_file.filePath()
        if path:
            self.searchRequested.emit(QuerySpec(photos=(path,)))

    # -- example places ---------------------------------------------------------------------
    def add_example(
        self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem, wgs84: QgsPointXY, mode: str
    ) -> None:
        """Add a clicked place ("replace" starts over) and search with every example."""
        if mode == "replace":
            self.clear_examples()
        negative = mode == "negative"
        self.examples.append((point.x(), point.y(), crs_string(crs), negative))
        self.markers.add(point, crs, negative)
        sign = "−" if negative else "+"
        item = QListWidgetItem(f"{sign} {wgs84.y():.5f}, {wgs84.x():.5f}")
        item.setForeground(Qt.darkRed if negative else Qt.darkGreen)
        self.example_list.addItem(item)
        self.search_examples()

    def clear_examples(self) -> None:
        """Forget the example places and take their markers off the map."""
        self.examples = []
        self.example_list.clear()
        self.markers.clear()

    def examples_spec(self) -> QuerySpec:
        pos = tuple((x, y, c) for x, y, c, neg in self.examples if not neg)
        neg = tuple((x, y, c) for x, y, c, n in self.examples if n)
        return QuerySpec(points=pos, negative_points=neg)

    def search_examples(self) -> None:
        spec = self.examples_spec()
        if not spec.is_empty():
            self.searchRequested.emit(spec)
