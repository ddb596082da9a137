"""QgsTask adapters around the engine's pipeline: EmbedTask, HeatmapTask, ClassifyTask, request tokens.

Every task captures its inputs (paths, a loaded model, plain query data) on the main thread, runs
one engine function in ``run()`` on a worker thread, catches every exception into a
:class:`TaskResult`, and hands that result to a callback from ``finished()``, which QGIS calls on
the main thread: the GUI is touched only there. Outputs are written atomically by the engine; a
cancelled or failed task also deletes whatever output file it may already have produced, so
cancelling never leaves a half-made layer behind.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask

from ..engine import pipeline
from ..engine.errors import CancelledError, EngineError, InputError, describe_os_error
from ..engine.model import Modality
from ..engine.pipeline import ClassifySpec, QuerySpec

log = logging.getLogger("unigeo.plugin")
LOG_TAG = "UniGeo"


@dataclass
class TaskResult:
    """What a task hands to its callback on the main thread."""

    ok: bool  # True when the work finished and its outputs exist
    value: Any = None  # the task's output (see each task's ``work``)
    error: str | None = None  # a message for the user when the work failed
    cancelled: bool = False  # True when the user (or unload) cancelled it
    token: int | None = None  # request token given at creation, for stale-result checks


class RequestTokens:
    """Numbered requests per channel; only the newest request of a channel is current.

    Interactive heatmaps are requested quickly one after the other (every click); when an older
    request finishes after a newer one was issued, its result is stale and must be dropped.
    """

    def __init__(self) -> None:
        self._latest: dict[str, int] = {}

    def issue(self, channel: str = "heatmap") -> int:
        """A new token for ``channel``; every earlier token of that channel becomes stale."""
        self._latest[channel] = self._latest.get(channel, 0) + 1
        return self._latest[channel]

    def is_current(self, token: int | None, channel: str = "heatmap") -> bool:
        """True when ``token`` is the newest one issued on ``channel``."""
        return token is not None and self._latest.get(channel) == token


class EngineTask(QgsTask):
    """Base adapter: ``work()`` runs in ``run()``; ``on_done(TaskResult)`` runs in ``finished()``."""

    # The task manager owns only the C++ side; the Python object must live until finished().
    live: set[EngineTask] = set()

    def __init__(
        self,
        description: str,
        on_done: Callable[[TaskResult], None] | None = None,
        token: int | None = None,
        outputs: tuple[str | Path, ...] = (),
    ) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.on_done = on_done
        self.token = token
        # deleted when the task does not succeed, but only the task's own: a reserved (empty)
        # file or one that did not exist yet; an earlier result at that path is never deleted
        self.outputs = tuple(Path(p) for p in outputs if not _holds_data(Path(p)))
        self.result: TaskResult | None = None
        self._value: Any = None
        self._error: str | None = None
        EngineTask.live.add(self)

    # -- engine callbacks -------------------------------------------------------------------
    def report(self, fraction: float) -> None:
        """Engine ``progress`` callback: fraction in [0, 1] to the task's percentage."""
        self.setProgress(100.0 * max(0.0, min(1.0, float(fraction))))

    def canceled(self) -> bool:
        """Engine ``is_canceled`` callback."""
        return self.isCanceled()

    def work(self) -> Any:
        """The engine call; runs on a worker thread. Subclasses implement it."""
        raise NotImplementedError

    # -- QgsTask ----------------------------------------------------------------------------
    def run(self) -> bool:
        try:
            self._value = self.work()
            if self.isCanceled():
                raise CancelledError("cancelled")
            return True
        except CancelledError:
            pass
        except EngineError as e:
            self._error = str(e)
        except OSError as e:  # a system error no engine writer named: one line all the same
            self._error = describe_os_error(e)
            log.error("task '%s' failed:\n%s", self.description(), traceback.format_exc())
        except Exception as e:  # noqa: BLE001 - a worker thread must never raise into QGIS
            self._error = f"{type(e).__name__}: {e}"
            log.error("task '%s' failed:\n%s", self.description(), traceback.format_exc())
        self._remove_outputs()
        return False

    def _remove_outputs(self) -> None:
        for p in self.outputs:
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                log.warning("could not remove %s: %s", p, e)

    def finished(self, result: bool) -> None:  # noqa: FBT001 (QGIS API)
        EngineTask.live.discard(self)
        cancelled = not result and (self.isCanceled() or self._error is None)
        if cancelled:
            self._remove_outputs()  # also when cancelled before run() started
        self.result = TaskResult(
            ok=bool(result),
            value=self._value if result else None,
            error=None if result else self._error,
            cancelled=cancelled,
            token=self.token,
        )
        if self._error:
            QgsMessageLog.logMessage(f"{self.description()}: {self._error}", LOG_TAG, Qgis.Warning)
        if self.on_done is not None:
            try:
                self.on_done(self.result)
            except Exception:  # noqa: BLE001 - a failing callback must not take QGIS down
                QgsMessageLog.logMessage(
                    f"{self.description()}: result handler failed:\n{traceback.format_exc()}",
                    LOG_TAG,
                    Qgis.Critical,
                )


def _holds_data(path: Path) -> bool:
    """True when ``path`` is a file with content (an earlier output), not a reservation."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


class EmbedTask(EngineTask):
    """Embed a raster's tile grid into a store folder (resumable); value: the store path."""

    def __init__(
        self,
        model: Any,
        reader: Any,
        grid: Any,
        store_path: str | Path,
        on_done: Callable[[TaskResult], None] | None = None,
        modality: Any = None,
        batch_size: int = 32,
        workers: int | None = None,  # None: the engine picks reader threads for the cores
        block_tiles: int = 16,  # as the Processing algorithms, so either can resume the other
    ) -> None:
        super().__init__(f"UniGeo: embed {grid.n_tiles} tiles", on_done)
        self.block_tiles = block_tiles
        self.model, self.reader, self.grid = model, reader, grid
        self.store_path = Path(store_path)
        self.modality = modality
        self.batch_size, self.workers = batch_size, workers

    def work(self) -> str:
        store = pipeline.embed(
            self.model,
            self.reader,
            self.grid,
            self.store_path,
            self.modality or Modality.AERIAL,
            block_tiles=self.block_tiles,
            batch_size=self.batch_size,
            workers=self.workers,
            progress=self.report,
            is_canceled=self.canceled,
        )
        return str(store.folder)


@dataclass
class HeatmapOutput:
    """What a finished HeatmapTask produced."""

    path: Path  # the heatmap GeoTIFF (band 1 cosine, band 2 percentile)
    description: str  # the engine's description of the query
    warning: str | None  # out-of-domain warning for the message bar, or None
    provenance: dict[str, Any] = field(default_factory=dict)  # written into the layer metadata


class HeatmapTask(EngineTask):
    """Score every tile of a store against a query and write the heatmap GeoTIFF."""

    def __init__(
        self,
        model: Any,
        store_path: str | Path,
        spec: QuerySpec,
        out_path: str | Path,
        on_done: Callable[[TaskResult], None] | None = None,
        token: int | None = None,
        provenance: dict[str, Any] | None = None,
        mask: tuple[tuple[str, str], ...] = (),
        max_nodata: float | None = None,
    ) -> None:
        super().__init__(f"UniGeo: heatmap for {spec.label()}", on_done, token, (out_path,))
        self.max_nodata = max_nodata  # skip tiles with more no data (None: the engine default)
        self.model, self.spec = model, spec
        self.store_path, self.out_path = Path(store_path), Path(out_path)
        self.provenance = dict(provenance or {})
        self.mask = mask  # (polygon WKT, CRS): score only tiles whose centre lies inside

    def work(self) -> HeatmapOutput:
        if self.spec.is_empty():
            raise InputError(
                "the query is empty: type a text, pick a photo or click example places"
            )
        limit = pipeline.DEFAULT_MAX_NODATA if self.max_nodata is None else self.max_nodata
        store = pipeline.open_store(self.store_path, max_nodata=limit)
        query = pipeline.build_query(self.spec, store, self.model)
        self.report(0.1)
        prov = {**self.provenance, "query": query.description(), "model_hash": store.model_hash}
        pipeline.heatmap(
            self.out_path,
            store,
            query,
            self.mask,
            provenance=prov,
            progress=lambda f: self.report(0.1 + 0.9 * f),
            is_canceled=self.canceled,
        )
        warning = pipeline.domain_warning(store, self.model)
        self.report(1.0)
        return HeatmapOutput(self.out_path, query.description(), warning, prov)


@dataclass
class ClassifyOutput:
    """What a finished ClassifyTask produced."""

    class_path: Path  # paletted uint8 class GeoTIFF (255 = nodata)
    conf_path: Path  # float32 confidence GeoTIFF
    classes: list[str]  # value i is classes[i]
    colors: dict[str, str]  # class -> "#rrggbb"
    counts: dict[str, int]  # tiles per class
    provenance: dict[str, Any] = field(default_factory=dict)
    warning: str = ""  # zero-shot: why the map may not be trusted (for the message bar); "" = none
    domain_warning: str | None = None  # out-of-domain warning, as HeatmapOutput.warning


class ClassifyTask(EngineTask):
    """Zero-shot or few-shot land-use classification of a store into two GeoTIFFs."""

    def __init__(
        self,
        model: Any,
        store_path: str | Path,
        spec: ClassifySpec,
        class_path: str | Path,
        conf_path: str | Path,
        on_done: Callable[[TaskResult], None] | None = None,
        provenance: dict[str, Any] | None = None,
        max_nodata: float | None = None,
    ) -> None:
        super().__init__("UniGeo: land-use classification", on_done, None, (class_path, conf_path))
        self.max_nodata = max_nodata  # skip tiles with more no data (None: the engine default)
        self.model, self.spec = model, spec
        self.store_path = Path(store_path)
        self.class_path, self.conf_path = Path(class_path), Path(conf_path)
        self.provenance = dict(provenance or {})

    def work(self) -> ClassifyOutput:
        import numpy as np

        limit = pipeline.DEFAULT_MAX_NODATA if self.max_nodata is None else self.max_nodata
        store = pipeline.open_store(self.store_path, max_nodata=limit)
        result = pipeline.classify(store, self.model, self.spec, self.report, self.canceled)
        self.report(0.8)
        if self.isCanceled():
            raise CancelledError("cancelled before the class map was written")
        method = "zero-shot" if self.spec.zero_shot else f"few-shot {self.spec.method}"
        prov = {**self.provenance, "classes": ", ".join(result.classes), "method": method}
        if result.warning:  # also in the layers' metadata, where it outlives the message bar
            prov["warning"] = result.warning
        pipeline.write_classification(self.class_path, self.conf_path, store, result, prov)
        raster = np.asarray(result.class_raster)
        counts = {c: int((raster == i).sum()) for i, c in enumerate(result.classes)}
        colors = dict(zip(result.classes, result.colors, strict=False))
        self.report(1.0)
        return ClassifyOutput(
            self.class_path,
            self.conf_path,
            list(result.classes),
            colors,
            counts,
            prov,
            result.warning,
            pipeline.domain_warning(store, self.model),
        )
