"""Glue between the GUI and the engine: store lookup or embedding, heatmaps, classification, layers.

The dock and the map tools describe *what* to find (a :class:`~engine.pipeline.QuerySpec`), *where*
(a raster layer and an :class:`AreaChoice`); the controller finds the embedding store in the
shared cache (embedding it in an :class:`~.tasks.EmbedTask` when missing), then runs a
:class:`~.tasks.HeatmapTask` or :class:`~.tasks.ClassifyTask` and turns the result into styled
layers saved in the output folder, named after the query and grouped under the source layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMessageLog,
    QgsProject,
    QgsRasterLayer,
    QgsTask,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..engine import pipeline
from ..engine.errors import EngineError, InputError, RasterInputError
from ..engine.pipeline import ClassifySpec, QuerySpec
from . import layers as L
from . import source_bands
from .qgis_reader import reader_for_layer
from .settings import Settings, reserve_output
from .tasks import ClassifyTask, EmbedTask, EngineTask, HeatmapTask, RequestTokens, TaskResult

LOG_TAG = "UniGeo"


@dataclass(frozen=True)
class AreaChoice:
    """Where to search: ``kind`` is "extent", "layer" or "polygons"; extent None = whole layer."""

    kind: str = "layer"
    extent: tuple[float, float, float, float] | None = None  # minx, miny, maxx, maxy
    crs: str | None = None  # CRS of ``extent`` and ``polygons`` (authid or WKT)
    polygons: tuple[str, ...] = ()  # WKT; heatmaps are scored only inside them

    def mask(self) -> tuple[tuple[str, str], ...]:
        """The polygons as (WKT, CRS) pairs for :class:`~.tasks.HeatmapTask`."""
        return tuple((wkt, self.crs or "") for wkt in self.polygons)


def crs_string(crs: Any) -> str:
    """A QgsCoordinateReferenceSystem as a string the engine (GDAL's OSR) accepts."""
    return crs.authid() or crs.toWkt()


def device_badge(model: Any = None, provider: str | None = None) -> tuple[str, str]:
    """("GPU" or "CPU", tooltip with the reason) from a loaded model, else from the settings."""
    if model is not None:
        rep = model.provider_report()
        tip = rep.summary()
        if not rep.is_gpu and not rep.fallback_reason:
            tip += f" - {pipeline.resolve_providers(rep.requested)[1]}"
        return ("GPU" if rep.is_gpu else "CPU"), tip
    chain, reason = pipeline.resolve_providers(provider)
    gpu = chain[0] != "CPUExecutionProvider"
    return ("GPU" if gpu else "CPU"), f"{reason} (expected; confirmed when the model loads)"


CONFIDENCE_SUFFIX = "_confidence.tif"  # a class map's confidence raster: <stem>_confidence.tif


def _layer_uses(path: Path) -> bool:
    """True when a layer of the current project reads ``path``."""
    target = path.resolve()
    for layer in QgsProject.instance().mapLayers().values():
        source = layer.source().split("|")[0]
        if source and Path(source).resolve() == target:
            return True
    return False


class Controller(QObject):
    """Runs queries for the dock and the map tools; owns the running tasks."""

    deviceChanged = pyqtSignal(str, str)  # noqa: N815 - badge text, tooltip
    domainChecked = pyqtSignal(str)  # noqa: N815 - out-of-domain warning, "" when none
    layersAdded = pyqtSignal(list)  # noqa: N815 - the QgsMapLayers of a finished result
    modelChanged = pyqtSignal(object)  # noqa: N815 - a newly loaded UniGeoModel

    def __init__(self, iface: Any, runner: Callable[[QgsTask], None] | None = None) -> None:
        super().__init__()
        self.iface = iface
        self.tokens = RequestTokens()
        self.tasks: list[EngineTask] = []
        self.runner = runner or (lambda task: QgsApplication.taskManager().addTask(task))
        self.closed = False
        self._model: Any = None
        self._told_folders: set[Path] = set()  # unsaved-project output folders announced

    # -- helpers ----------------------------------------------------------------------------
    def settings(self) -> Settings:
        return Settings.load()

    def model(self) -> Any:
        """The shared model of the current settings; updates the device badge."""
        from .model_cache import get_model

        model = get_model()
        if model is not self._model:
            self._model = model
            self.deviceChanged.emit(*device_badge(model))
            self.modelChanged.emit(model)
        return model

    def message(self, text: str, level: Any = Qgis.Info) -> None:
        QgsMessageLog.logMessage(text, LOG_TAG, level)
        self.iface.messageBar().pushMessage("UniGeo", text, level=level, duration=10)

    def _start(self, task: EngineTask) -> None:
        self.tasks = [t for t in self.tasks if t in EngineTask.live]
        self.tasks.append(task)
        self.runner(task)

    def cancel_all(self, wait_ms: int = 5000) -> None:
        """Cancel every task and wait (bounded) for running ones; results are then ignored."""
        self.closed = True
        live = [t for t in self.tasks if t in EngineTask.live]
        for task in live:
            task.cancel()
        for task in live:
            if task.status() == QgsTask.Running:
                task.waitForFinished(wait_ms)  # the engine polls is_canceled between batches
        self.tasks = []

    def output_folder(self) -> Path:
        """The output folder, created; says once where outputs go while the project is unsaved.

        Raises:
            InputError: the folder cannot be created (names the folder and what to do).
        """
        s = self.settings()
        folder = s.output_path()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(
                f"cannot create the output folder {folder} ({e.strerror or e}); choose another "
                "output folder in UniGeo Settings"
            ) from None
        if s.uses_unsaved_output_path() and folder not in self._told_folders:
            self._told_folders.add(folder)
            self.message(
                f"The project is not saved yet: UniGeo outputs go to {folder}. Save the project "
                "to keep them beside it, or choose an output folder in UniGeo Settings."
            )
        return folder

    def output_file(self, label: str, suffix: str = ".tif", siblings: tuple[str, ...] = ()) -> Path:
        """Reserve a new file named after the query (see :func:`~.settings.reserve_output`).

        Two requests in the same second never get the same path: the name is claimed by
        creating it exclusively; the task writing it replaces it, or removes it on failure.
        """
        return reserve_output(self.output_folder(), label, suffix, siblings)

    def _reserve(self, label: str, siblings: tuple[str, ...] = ()) -> Path | None:
        """:meth:`output_file`, or None after telling the user why not (for callbacks)."""
        try:
            return self.output_file(label, siblings=siblings)
        except EngineError as e:
            self.message(str(e), Qgis.Critical)
            return None

    # -- the store --------------------------------------------------------------------------
    def with_store(
        self, layer: QgsRasterLayer, area: AreaChoice, model: Any, then: Callable[[str], None]
    ) -> None:
        """Call ``then(store_folder)`` now if the cache holds the store, else after embedding."""
        s = self.settings()
        reader = reader_for_layer(
            layer, bands=self.bands_for(layer, model).mapping, scale=source_bands.scaling(layer)
        )
        grid = pipeline.tile_grid(
            model, reader, stride_px=s.stride_arg(), extent=area.extent, extent_crs=area.crs
        )
        entry = pipeline.cached_store(model, reader, grid, s.cache_path(), s.cache_bytes())
        if entry.store is not None:
            then(str(entry.store.folder))
            return

        def embedded(result: TaskResult) -> None:
            if self._failed("Embedding", result):
                return
            entry.keep()
            then(str(result.value))

        if not self._may_embed(layer, model, reader, grid, entry.cache.root):
            return
        self._start(EmbedTask(model, reader, grid, entry.path, embedded))

    def _may_embed(
        self, layer: QgsRasterLayer, model: Any, reader: Any, grid: Any, cache: Path
    ) -> bool:
        """Show the estimate and any pixel-size or job-size warning; ask before a very large job.

        Returns False when the user declined (nothing is started then).
        """
        plan = pipeline.plan(model, reader, grid, [cache])
        warning = plan.warning()
        if plan.large and not self.confirm("UniGeo: a long embedding", f"{warning}\n\nStart it?"):
            self.message(f"Embedding of '{layer.name()}' not started", Qgis.Info)
            return False
        if warning:
            self.message(warning, Qgis.Warning)
        self.message(
            f"Embedding '{layer.name()}': {plan.summary()} (once per area and model)", Qgis.Info
        )
        return True

    def confirm(self, title: str, text: str) -> bool:
        """Ask the user a yes/no question (a modal dialog); tests replace this method."""
        from qgis.PyQt.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self.iface.mainWindow(), title, text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No
        )
        return answer == QMessageBox.Yes

    def _failed(self, what: str, result: TaskResult) -> bool:
        if self.closed:
            return True
        if result.cancelled:
            self.message(f"{what} cancelled", Qgis.Info)
        elif not result.ok:
            self.message(f"{what} failed: {result.error}", Qgis.Critical)
        return not result.ok

    def bands_for(self, layer: QgsRasterLayer, model: Any) -> Any:
        """The band choice the dock shows for ``layer`` (remembered, else UniGeo's own).

        Raises:
            RasterInputError: UniGeo cannot tell which bands feed the model; says what to pick.
        """
        wanted, optional = source_bands.wanted_bands(model)
        choice = source_bands.current_choice(layer, wanted, optional)
        if not choice.decided:
            raise RasterInputError(
                f"'{layer.name()}': {choice.reason}. Pick them in the UniGeo search dock under "
                "Where › Bands."
            )
        return choice

    def _provenance(self, model: Any, layer: QgsRasterLayer, area: AreaChoice) -> dict:
        bands = self.bands_for(layer, model)
        return {
            "model": f"{model.bundle.name} {model.bundle.version}",
            "model_hash": model.model_hash,
            "source": layer.name(),
            "source_path": layer.source(),
            "bands": f"{bands.text()} ({bands.reason})",
            "scaling": source_bands.scaling(layer),
            "area": area.kind,
            "stride_px": self.settings().stride_px or "tile size",
        }

    # -- queries ----------------------------------------------------------------------------
    def run_query(self, spec: QuerySpec, layer: QgsRasterLayer | None, area: AreaChoice) -> int:
        """Start a heatmap request; returns its token (0 when it could not start)."""
        if layer is None or not layer.isValid():
            self.message("Choose a source raster layer first", Qgis.Warning)
            return 0
        if spec.is_empty():
            self.message("The query is empty: type a text, pick a photo or click places")
            return 0
        token = self.tokens.issue("heatmap")
        try:
            model = self.model()
            self.output_folder()  # an unusable folder fails now, not after embedding
            prov = self._provenance(model, layer, area)

            def heatmap(store_folder: str) -> None:
                if self.closed or not self.tokens.is_current(token, "heatmap"):
                    return  # a newer request superseded this one while it was embedding
                # reserved only now: a request that never runs leaves no file behind
                out = self._reserve(spec.label())
                if out is None:
                    return
                done = partial(self._heatmap_done, name=spec.label(), group=layer.name())
                task = HeatmapTask(
                    model, store_folder, spec, out, done, token, prov, area.mask(),
                    max_nodata=self.settings().max_nodata(),
                )  # fmt: skip
                self._start(task)

            self.with_store(layer, area, model, heatmap)
        except EngineError as e:
            self.message(str(e), Qgis.Critical)
            return 0
        return token

    def _heatmap_done(self, result: TaskResult, name: str, group: str) -> None:
        value = result.value
        if not self.tokens.is_current(result.token, "heatmap"):
            if result.ok:  # stale: a newer query replaced it while it ran
                self._drop_file(Path(value.path))
            QgsMessageLog.logMessage(f"dropped stale heatmap '{name}'", LOG_TAG, Qgis.Info)
            return
        if self._failed("Heatmap", result):
            return
        layer = L.heatmap_layer(value.path, name)
        L.set_provenance(layer, value.provenance)
        L.add_group(QgsProject.instance(), group, [layer])
        self.domainChecked.emit(value.warning or "")
        if value.warning:
            self.message(value.warning, Qgis.Warning)
        self.layersAdded.emit([layer])

    # -- classification ---------------------------------------------------------------------
    def classify(self, spec: ClassifySpec, layer: QgsRasterLayer | None, area: AreaChoice) -> bool:
        """Start a land-use classification of ``layer`` over ``area``; False if it cannot start."""
        if layer is None or not layer.isValid():
            self.message("Choose a source raster layer first", Qgis.Warning)
            return False
        try:
            model = self.model()
            label = "land use zero-shot" if spec.zero_shot else f"land use {spec.method}"
            self.output_folder()  # an unusable folder fails now, not after embedding
            prov = self._provenance(model, layer, area)

            def run(store_folder: str) -> None:
                if self.closed:
                    return
                class_path = self._reserve(label, siblings=(CONFIDENCE_SUFFIX,))
                if class_path is None:
                    return
                conf_path = class_path.with_name(class_path.stem + CONFIDENCE_SUFFIX)
                done = partial(self._classify_done, name=label, group=layer.name())
                self._start(
                    ClassifyTask(
                        model,
                        store_folder,
                        spec,
                        class_path,
                        conf_path,
                        done,
                        prov,
                        max_nodata=self.settings().max_nodata(),
                    )  # fmt: skip
                )

            self.with_store(layer, area, model, run)
        except EngineError as e:
            self.message(str(e), Qgis.Critical)
            return False
        return True

    def _classify_done(self, result: TaskResult, name: str, group: str) -> None:
        if self._failed("Classification", result):
            return
        out = result.value
        classes = L.class_layer(out.class_path, name, out.classes, out.colors)
        conf = L.confidence_layer(out.conf_path, f"{name} (confidence)")
        for lyr in (classes, conf):
            L.set_provenance(lyr, out.provenance)
        L.add_group(QgsProject.instance(), group, [classes, conf])
        # the same out-of-domain warning as heatmaps, plus the task's own (zero-shot reliability)
        warning = " ".join(w for w in (out.domain_warning, out.warning) if w)
        self.domainChecked.emit(warning)
        if warning:
            self.message(warning, Qgis.Warning)
        summary = ", ".join(f"{c}: {n}" for c, n in out.counts.items())
        self.message(f"Land use: {summary} tiles", Qgis.Success)
        self.layersAdded.emit([classes, conf])

    def _drop_file(self, path: Path) -> None:
        """Delete a dropped result's file, unless a layer of the project shows it."""
        if _layer_uses(path):
            QgsMessageLog.logMessage(f"kept {path}: a layer uses it", LOG_TAG, Qgis.Warning)
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            QgsMessageLog.logMessage(f"could not remove {path}: {e}", LOG_TAG, Qgis.Warning)

    # -- photo location ---------------------------------------------------------------------
    def mark_location(self, lat: float, lon: float, name: str) -> QgsVectorLayer:
        """Add a point layer at a photo's EXIF position and centre the map on it."""
        return L.mark_location(self.iface.mapCanvas(), lat, lon, name)
