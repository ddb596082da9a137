"""GDAL's own Python bindings (``osgeo``), imported once, and a scope that turns its errors into ours.

The engine reads, writes, warps and rasterises through GDAL's own bindings: inside QGIS they are
the ones linked against the GDAL, PROJ and GEOS that QGIS itself loaded, so nothing the engine
runs there can clash with the application's libraries (docs/QGIS_LIBRARIES.md says why).

GDAL reports most failures (a full disk while writing, a truncated file while reading) through its
error handler, not through return values. :func:`gdal_errors` installs a handler for the calls in
its scope, on the calling thread only (GDAL's handler stack is per thread), and raises when one of
them failed. It never calls ``gdal.UseExceptions()``, which is process-wide and would change the
behaviour of QGIS and of every other plugin.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

from ..errors import EngineError, InputError

_lock = threading.Lock()
_modules: tuple[ModuleType, ModuleType, ModuleType] | None = None


def osgeo() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``(gdal, ogr, osr)``; a clear InputError when GDAL's Python bindings are not installed."""
    global _modules
    if _modules is None:
        with _lock:
            if _modules is None:
                try:
                    from osgeo import gdal, ogr, osr
                except ImportError as e:
                    raise InputError(
                        "GDAL's Python bindings (osgeo) are missing: they come with QGIS; outside "
                        "QGIS install your system's package (Debian: apt-get install python3-gdal) "
                        f"or 'pip install gdal==<your GDAL version>' ({e})"
                    ) from None
                _modules = (gdal, ogr, osr)
    return _modules


class GdalErrors(list):
    """The ``(class, number, message)`` of every GDAL error raised inside a :func:`gdal_errors`."""

    def failures(self) -> list[str]:
        """The messages of the errors of class CE_Failure or CE_Fatal."""
        gdal = osgeo()[0]
        return [m for c, _, m in self if c in (gdal.CE_Failure, gdal.CE_Fatal)]


@contextlib.contextmanager
def gdal_errors(
    what: str,
    error: Callable[[str], EngineError] = InputError,
    raise_on_failure: bool = True,
    hint: str = "",
) -> Iterator[GdalErrors]:
    """Collect GDAL's errors in this scope and raise ``error`` naming ``what`` if one failed.

    Args:
        what: what the scope does, for the message (``"writing heatmap.tif"``).
        error: the exception class raised with the message.
        raise_on_failure: False only collects (the caller inspects the yielded list).
        hint: what the user can do, appended to the message.

    Yields:
        The list the errors are appended to, as they happen.
    """
    gdal = osgeo()[0]
    seen = GdalErrors()

    def handler(err_class: int, err_no: int, message: str) -> None:
        seen.append((err_class, err_no, str(message)))

    gdal.PushErrorHandler(handler)
    try:
        yield seen
    finally:
        gdal.PopErrorHandler()
    failed = seen.failures()
    if failed and raise_on_failure:
        raise error(failure_message(what, failed[0], hint))  # the first is the cause


def failure_message(what: str, gdal_message: str, hint: str = "") -> str:
    """``"GDAL failed while <what>: <GDAL's message>; <hint>"`` on one line."""
    text = " ".join(str(gdal_message).split()) or "unknown error"
    return f"GDAL failed while {what}: {text}" + (f"; {hint}" if hint else "")


def gdal_path(path: str | Path) -> str | bytes:
    """``path`` as GDAL's Python API takes it: the text, or for a file name that is not valid
    UTF-8 (surrogate-escaped by Python) its raw bytes, which GDAL hands to the system as they are.

    GDAL's bindings refuse such a ``str`` with a bare ``RuntimeError: not a string``.
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def gdal_text(text: object) -> str:
    """``text`` as a string GDAL can store (names, metadata): valid UTF-8, with the bytes of a
    surrogate-escaped file name (or a lone surrogate from JSON) written as ``\\xff`` escapes."""
    s = str(text)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    handler = "surrogateescape" if _escaped(s) else "backslashreplace"
    return s.encode("utf-8", handler).decode("utf-8", "backslashreplace")


def _escaped(s: str) -> bool:
    """True when every surrogate in ``s`` is one Python's file-system decoding made (U+DC80-FF)."""
    return all(0xDC80 <= ord(c) <= 0xDCFF for c in s if 0xD800 <= ord(c) <= 0xDFFF)
