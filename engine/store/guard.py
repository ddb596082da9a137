"""What keeps a store write from costing the user data: target checks, one writer, disk space.

- :func:`check_target`: a store is written only where nothing but a store (or nothing at all)
  is: an existing file, a folder of the user's or the input raster itself is refused, before
  anything is written.
- :class:`StoreLock`: one writer per store, across processes and across threads of one process
  (an exclusive ``flock`` on ``.<name>.lock`` beside the store, released when the writer ends or
  dies), so two embeds into the same store cannot interleave their blocks.
- :func:`reserve`: the store's arrays get their disk blocks before they are memory-mapped, so a
  full disk is a clear error at the start rather than a SIGBUS in the middle of the job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..atomic import store_marker
from ..errors import StoreError, output_errors

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]

PARTIAL_MARKER = ".unigeo-partial"
"""Written first into a ``.partial`` folder: the folder is ours even before store.json exists."""


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    return False


def check_target(path: str | Path, sources: Iterable[str | Path | None] = ()) -> None:
    """Refuse a store target that is not ours to replace; never touches anything.

    Args:
        path: the store folder to write (its ``<path>.partial`` sibling is checked too).
        sources: the input files (rasters); the target may be none of them, nor inside one.

    Raises:
        StoreError: the target is an input, an existing file, or a folder that is not an
            embedding store (an empty folder is fine), or its ``.partial`` is someone else's.
    """
    with output_errors(path, "write the store"):  # e.g. a name too long for the system
        _check_target(Path(path), sources)


def _check_target(p: Path, sources: Iterable[str | Path | None]) -> None:
    for s in sources:
        if s is not None and (_same_file(p, Path(s)) or p.resolve() == Path(s).resolve()):
            raise StoreError(
                f"the store target {p} is the input raster itself; choose another output path "
                "(a store is a folder, e.g. scene.store)"
            )
    if p.is_symlink() or p.is_file() or (p.exists() and not p.is_dir()):
        raise StoreError(
            f"{p} exists and is a file, not an embedding store; UniGeo never replaces it: "
            "choose a folder name that does not exist yet (e.g. scene.store)"
        )
    if p.is_dir() and store_marker(p) is None and any(p.iterdir()):
        raise StoreError(
            f"{p} is a folder with other files in it, not an embedding store; UniGeo never "
            "replaces it: choose a new folder name (e.g. scene.store)"
        )
    part = p.with_name(p.name + ".partial")
    if part.is_symlink() or part.is_file():
        raise StoreError(f"{part} exists and is not an unfinished store; move it away first")
    if part.is_dir() and any(part.iterdir()) and not _is_ours(part):
        raise StoreError(
            f"{part} exists and holds files that are not an unfinished UniGeo store; move it "
            "away first"
        )


def input_files(reader: Any) -> list[Path]:
    """The files a raster reader reads (``path``, or ``paths`` for a mosaic), for check_target."""
    paths = list(getattr(reader, "paths", None) or [])
    one = getattr(reader, "path", None)
    return [Path(p) for p in ([one] if one is not None else []) + paths]


def _is_ours(folder: Path) -> bool:
    return (folder / PARTIAL_MARKER).is_file() or store_marker(folder) is not None


def remove_partial(folder: Path) -> None:
    """Delete an unfinished store folder, but only one that is provably ours (or empty)."""
    if not folder.exists():
        return
    if folder.is_dir() and (_is_ours(folder) or not any(folder.iterdir())):
        shutil.rmtree(folder)
        return
    raise StoreError(f"{folder} is not an unfinished UniGeo store; UniGeo will not delete it")


def mark_partial(folder: Path) -> None:
    """Create ``folder`` and its ownership marker (before anything else is written into it)."""
    folder.mkdir(parents=True)
    (folder / PARTIAL_MARKER).write_text("an unfinished UniGeo embedding store\n")


def unmark_partial(folder: Path) -> None:
    """Remove the ownership marker once the store's own description is written."""
    with contextlib.suppress(FileNotFoundError):
        (folder / PARTIAL_MARKER).unlink()


class StoreLock:
    """An exclusive lock on one store path; one writer at a time, released on process death.

    Use :meth:`acquire`; call :meth:`release` when the writing ends (the store does this on
    finalize and close).
    """

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle: IO[str] | None = handle

    @staticmethod
    def file_for(store_path: str | Path) -> Path:
        """The lock file of a store: ``.<name>.lock`` beside it."""
        p = Path(store_path)
        return p.with_name(f".{p.name}.lock")

    @classmethod
    def acquire(cls, store_path: str | Path) -> StoreLock:
        """Lock ``store_path`` for writing, or raise StoreError naming the current writer."""
        lock = cls.file_for(store_path)
        for _ in range(5):
            # the store's first write: a read-only or missing folder fails here, with the path
            with output_errors(store_path, "write the store"):
                lock.parent.mkdir(parents=True, exist_ok=True)
                handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 - held while writing
            if not _try_lock(handle):
                holder = _holder(handle)
                handle.close()
                raise StoreError(
                    f"another UniGeo job ({holder}) is writing the store {Path(store_path)}; "
                    "wait for it to finish (or stop it), then run again: two writers would "
                    "destroy the store"
                )
            # the file may have been unlinked by the previous holder between open and lock
            with contextlib.suppress(OSError):
                if os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino:
                    handle.seek(0)
                    handle.truncate()
                    handle.write(
                        f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n"
                    )
                    handle.flush()
                    return cls(lock, handle)
            _unlock(handle)
            handle.close()
        raise StoreError(f"cannot lock {lock}: it keeps changing; is another job starting?")

    def release(self) -> None:
        """Unlock and remove the lock file (idempotent)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        _unlock(handle)
        handle.close()

    @property
    def held(self) -> bool:
        return self._handle is not None


@contextlib.contextmanager
def folder_lock(folder: str | Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive lock on the existing folder ``folder``, waiting for another holder.

    For short writes of several files that must stay together (an ANN index), where a second
    writer should wait rather than fail. The folder itself is locked (``flock`` on its
    descriptor), so no lock file is left behind; without ``flock`` (Windows) it does nothing.
    Raises StoreError after ``timeout_s``.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise StoreError(f"{folder} stayed locked for {timeout_s:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _try_lock(handle: IO[str]) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
    if msvcrt is not None:  # pragma: no cover - Windows
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    return True  # pragma: no cover - no locking primitive: best effort


def _unlock(handle: IO[str]) -> None:
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        elif msvcrt is not None:  # pragma: no cover - Windows
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def _holder(handle: IO[str]) -> str:
    with contextlib.suppress(OSError):
        handle.seek(0)
        text = handle.read().strip()
        if text:
            return text
    return "another process or task"


def reserve(paths_sizes: Iterable[tuple[Path, int]]) -> None:
    """Give each file its full size in disk blocks now; StoreError when the disk is too small.

    ``numpy.lib.format.open_memmap`` makes sparse files: pages written later through the memory
    map need blocks the disk may no longer have, and the kernel answers that with SIGBUS, which
    kills the process (and QGIS with it). Reserving the blocks first turns a full disk into an
    ENOSPC error here, before any work is done.
    """
    items = [(Path(p), int(n)) for p, n in paths_sizes]
    if not items:
        return
    folder = items[0][0].parent
    need = sum(max(n - _allocated(p), 0) for p, n in items)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise StoreError(no_space_message(folder, need, free))
    for p, n in items:
        try:
            _allocate(p, n)
        except OSError as e:
            raise StoreError(
                no_space_message(folder, need, shutil.disk_usage(folder).free, e)
            ) from None


def _allocated(p: Path) -> int:
    with contextlib.suppress(OSError, AttributeError):
        return os.stat(p).st_blocks * 512
    return 0


def _allocate(p: Path, size: int) -> None:
    fd = os.open(p, os.O_RDWR)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def no_space_message(folder: Path, need: int, free: int, err: Any = None) -> str:
    """One line for a store that does not fit the disk: how much it needs, how much is free."""
    why = f" ({err.strerror})" if err is not None and getattr(err, "strerror", None) else ""
    return (
        f"not enough disk space for the embedding store in {folder}: it needs "
        f"{need / 1e6:,.1f} MB more, {free / 1e6:,.1f} MB are free{why}; free some space or "
        "write the store to another disk"
    )
