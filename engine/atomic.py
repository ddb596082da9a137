"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` atomically.

    On any exception (including cancellation) the temporary file is removed and ``target`` is
    left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or ".part", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            # mkstemp creates 0600 files; outputs get the usual umask-based mode instead.
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask is process-wide, so toggling it later would race other threads.
_UMASK = _read_umask()


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def staging_folder(target: str | Path) -> Iterator[Path]:
    """Yield a new hidden folder next to ``target`` (same file system), removed afterwards with
    whatever is left in it.

    For writers that create files themselves (GDAL, OGR) or several files at once: write into the
    folder, check the files, then :func:`publish` them. A failure anywhere leaves the folder's
    contents behind for removal and every published path as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(parts: Sequence[Path], dest: str | Path, stale: Sequence[str | Path] = ()) -> None:
    """fsync ``parts`` then move each into folder ``dest`` under its own name, in order.

    ``stale`` files in ``dest`` (sidecars that describe the old file, such as a spatial index)
    are removed just before the first move. Each move is atomic; put the file readers open first
    (a Shapefile's ``.shp``) last.
    """
    for part in parts:
        with open(part, "rb") as f:
            os.fsync(f.fileno())
    for old in stale:
        with contextlib.suppress(FileNotFoundError):
            Path(old).unlink()
    for part in parts:
        os.replace(part, Path(dest) / part.name)
