"""The engine's error hierarchy: every error carries a message a user can act on.

Operating-system errors on outputs become one such line too: an ``OSError`` from writing an
output (a read-only folder, a full disk, a path that is a folder) used to escape as a traceback.
The writers (:mod:`.atomic`, the store's lock and creation) turn it into :class:`OutputError`
with :func:`output_error`, at the place that knows the path; the CLI, Processing and the GUI
use :func:`describe_os_error` for any that still escapes.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelContractError(EngineError):
    """A model bundle or ONNX file is missing, corrupt, or breaks the spec contract."""


class ProviderUnavailableError(EngineError):
    """A requested onnxruntime execution provider cannot be used here."""


class InputError(EngineError):
    """Bad user input: a raster, coordinates, text, a photo or a query."""


class RasterInputError(InputError):
    """A raster cannot be used: no CRS, wrong bands, empty extent, corrupt file, ..."""


class StoreError(EngineError):
    """An embedding store is unreadable, incomplete, or was written by another model."""


class CancelledError(EngineError):
    """The caller cancelled a long job; nothing partial was left behind."""


class OutputError(EngineError):
    """An output file could not be written whole (full disk, no permission, ...); the previous
    file at that path, if any, is left as it was."""


class ModelInstallError(EngineError):
    """A model bundle could not be downloaded, verified or installed; nothing was installed."""


class ModelNotInstalledError(ModelContractError):
    """No model bundle is installed or configured yet (first run of a plugin without a model)."""


# -- operating-system errors on outputs: which path, why, what to do --------------------------
_ADVICE = {
    errno.EACCES: "you have no permission to write there: choose another folder or change its "
    "permissions",
    errno.EPERM: "the system does not allow this write: choose another folder",
    errno.EROFS: "the folder is on a read-only file system: choose another output folder",
    errno.ENOSPC: "the disk is full: free some space or write to another disk",
    errno.EDQUOT: "your disk quota is used up: free some space or write to another disk",
    errno.EFBIG: "the file would be larger than this disk or a system limit allows: write to "
    "another disk",
    errno.EISDIR: "that path is a folder: give a file name (e.g. inside that folder)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.ENOENT: "the folder does not exist: create it or choose another",
    errno.EEXIST: "something with that name is in the way: choose another name",
    errno.EMFILE: "too many files are open: close some programs and try again",
    errno.ENFILE: "too many files are open: close some programs and try again",
    errno.EIO: "the disk reported an input/output error: check the disk and try again",
    errno.EBUSY: "the file is in use: close what uses it and try again",
    errno.ETXTBSY: "the file is in use: close what uses it and try again",
    errno.ELOOP: "the path has a symbolic link loop: choose another path",
}


def os_reason(err: OSError) -> str:
    """The system's words for ``err`` (``"Read-only file system"``), without the path."""
    return err.strerror or type(err).__name__


def advice(err: OSError) -> str:
    """What to do about ``err``, or a generic hint when its errno is not one we know."""
    return _ADVICE.get(err.errno or -1, "check the path and its permissions, then try again")


def output_error(path: str | Path, err: OSError, doing: str = "write") -> OutputError:
    """``OutputError("cannot write P: Read-only file system; ... choose another output folder")``."""
    blocker = _file_in_the_way(Path(path)) if err.errno in (errno.EEXIST, errno.ENOTDIR) else None
    if blocker is not None:
        return OutputError(
            f"cannot {doing} {path}: {blocker} is a file, not a folder; choose an output path "
            "in a folder (nothing was replaced)"
        )
    return OutputError(
        f"cannot {doing} {path}: {os_reason(err)}; {advice(err)} (nothing was replaced)"
    )


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (mkdir fails on it)."""
    with contextlib.suppress(OSError):
        for parent in path.parents:
            if parent.exists():
                return None if parent.is_dir() else parent
    return None


@contextlib.contextmanager
def output_errors(path: str | Path, doing: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` raised in this scope into :func:`output_error` for ``path``."""
    try:
        yield
    except OSError as e:
        raise output_error(path, e, doing) from None


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError`` no writer caught: the path(s) it names, the reason, a hint."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    prefix = f"{where}: " if where else ""
    return f"{prefix}{os_reason(err)}; {advice(err)}"
