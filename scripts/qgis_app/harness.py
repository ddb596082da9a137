"""Check runner inside QGIS: JSON report, waits that keep the event loop turning, log capture.

The report (``report.json``) is rewritten atomically after every step, with the name of the
check that is running, so that when QGIS dies the test knows which check killed it and can start
QGIS again to run the checks after it (the checks already in the report are skipped).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsProject
from qgis.PyQt.QtCore import QEventLoop, QTimer


class CheckFailed(AssertionError):
    """A check found something wrong; the message says what and where."""


def ensure(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, poll_ms: int = 50) -> Any:
    """Turn the event loop (never blocking it) until ``cond()`` is truthy; its value.

    Raises:
        CheckFailed: ``timeout`` seconds passed first (names ``what``).
    """
    value = cond()
    if value:
        return value
    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(poll_ms)
    timer.timeout.connect(lambda: (cond() or time.monotonic() > deadline) and loop.quit())
    timer.start()
    loop.exec_()
    timer.stop()
    value = cond()
    if not value:
        raise CheckFailed(f"timed out after {timeout:g} s waiting for {what}")
    return value


def pause(seconds: float) -> None:
    """Let the event loop run for ``seconds`` (repaints, queued signals)."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


# -- geo libraries loaded in this process ----------------------------------------------------------
GEO_LIB = re.compile(r"^lib(geos_c|geos|gdal|proj)(?=[-.])")


def geo_libraries() -> dict[str, str]:
    """``{path: family}`` of every GEOS, GDAL and PROJ shared library mapped into QGIS now."""
    out: dict[str, str] = {}
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                path = parts[5].strip()
                m = GEO_LIB.match(os.path.basename(path))
                if m:
                    out[os.path.realpath(path)] = m.group(1)
    return out


def foreign_libraries(libs: dict[str, str]) -> list[str]:
    """Libraries that a Python package brought, or a second copy of a family QGIS has loaded.

    QGIS links one GEOS, GDAL and PROJ; a wheel that bundles its own (``shapely.libs``,
    ``rasterio.libs``, ``pyproj.libs`` ...) puts a second copy in the process, and the symbols
    of the two get mixed up (the crash this check exists for).
    """
    dirs = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)} - {os.sep}
    roots = [d + os.sep for d in dirs]
    first: dict[str, str] = {}
    bad = []
    for path, family in sorted(
        libs.items(), key=lambda kv: any(kv[0].startswith(r) for r in roots)
    ):
        in_python = any(path.startswith(r) for r in roots)
        if in_python or (family in first and first[family] != path):
            bad.append(path)
        first.setdefault(family, path)
    return sorted(bad)


# -- report ----------------------------------------------------------------------------------------
class Report:
    """``report.json``: one entry per check, the running check, geo libraries, QGIS messages."""

    def __init__(self, path: Path, session: int) -> None:
        self.path = path
        self.data: dict[str, Any] = {"checks": [], "geo_libs": {"foreign": []}, "sessions": []}
        if path.is_file():
            self.data = json.loads(path.read_text())
        self.data["sessions"].append({"session": session, "started": time.time()})
        self.data.update(running=None, finished=False, session=session)
        self.session = session
        self.save()

    def done(self) -> set[str]:
        return {c["name"] for c in self.data["checks"]}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)

    def add(self, name: str, ok: bool, details: Any, seconds: float, log: list[str]) -> None:
        entry = {"name": name, "ok": ok, "details": details, "seconds": round(seconds, 2)}
        entry.update(session=self.session, log=log[-40:])
        self.data["checks"].append(entry)
        self.data["running"] = None
        self.save()

    def note_libraries(self, after: str) -> None:
        """Record libraries that are foreign now and were not before, with the check that ran."""
        libs = geo_libraries()
        self.data["geo_libs"]["loaded"] = sorted(libs)
        known = {f["path"] for f in self.data["geo_libs"]["foreign"]}
        for path in foreign_libraries(libs):
            if path not in known:
                self.data["geo_libs"]["foreign"].append({"path": path, "after": after})
        self.save()


class MessageCapture:
    """QGIS message-log entries and uncaught Python errors, since the last ``take()``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.errors: list[str] = []
        QgsApplication.messageLog().messageReceived.connect(self._message)
        self._hook = sys.excepthook
        sys.excepthook = self._excepthook

    def _message(self, message: str, tag: str, level: Any) -> None:
        names = {Qgis.Info: "info", Qgis.Warning: "warning", Qgis.Critical: "critical"}
        self.lines.append(f"[{tag}] {names.get(level, level)}: {message}"[:2000])

    def _excepthook(self, kind, value, tb) -> None:
        # recorded, printed, and never passed on: QGIS's own hook opens a modal stack-trace
        # dialog, which would block the event loop until the watchdog kills the session
        text = "".join(traceback.format_exception(kind, value, tb))
        self.errors.append(text[-4000:])
        sys.stderr.write(text)

    def critical(self, tag: str = "UniGeo") -> list[str]:
        """The critical messages of ``tag`` since the last ``take()``."""
        return [m for m in self.lines if m.startswith(f"[{tag}] critical")]

    def take(self) -> tuple[list[str], list[str]]:
        lines, errors = self.lines, self.errors
        self.lines, self.errors = [], []
        return lines, errors


class Runner:
    """Runs ``(name, function)`` checks one per event-loop turn, then calls ``finish(code)``."""

    def __init__(self, report: Report, capture: MessageCapture, ctx: Any, checks: list) -> None:
        self.report, self.capture, self.ctx = report, capture, ctx
        self.todo = [(n, f) for n, f in checks if n not in report.done()]
        self.failed = 0

    def start(self) -> None:
        QTimer.singleShot(0, self._next)

    def _next(self) -> None:
        if not self.todo:
            self.report.data["finished"] = True
            self.report.save()
            failed = [c["name"] for c in self.report.data["checks"] if not c["ok"]]
            # Close the project while the window is whole, as File > Exit does: QGIS 3.22 can
            # crash in ~QgisApp when it still holds layers (layer tree -> styling dock).
            QgsProject.instance().clear()
            pause(0.5)
            QgsApplication.exit(3 if failed else 0)
            return
        name, fn = self.todo.pop(0)
        self.run_one(name, fn)
        QTimer.singleShot(0, self._next)

    def run_one(self, name: str, fn: Callable[[Any], Any]) -> None:
        self.report.data["running"] = name
        self.report.save()
        self.capture.take()
        t0 = time.monotonic()
        try:
            details, ok = fn(self.ctx), True
        except CheckFailed as e:
            details, ok = str(e), False
        except Exception:  # noqa: BLE001 - the driver's own bug or an unexpected plugin error
            details, ok = traceback.format_exc()[-4000:], False
        lines, errors = self.capture.take()
        if errors:
            ok = False
            details = {"result": details, "uncaught Python errors": errors}
        self.report.add(name, ok, details, time.monotonic() - t0, lines)
        self.report.note_libraries(after=name)
        print(f"qgis_app: {name}: {'ok' if ok else 'FAILED'}", flush=True)
