"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

Also where a result may be written at all: never over a folder, never inside an embedding
store. The files that mark a folder as a store are named here, below every writer, so that the
store package and the output checks read the same marks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import OutputError, output_errors

STORE_JSON = "store.json"
"""The description of an npy embedding store (see :mod:`engine.store.npy`)."""
ZARR_JSON = "zarr.json"
"""A Zarr group's metadata; a UniGeo store's carries its description under :data:`STORE_ATTR`."""
STORE_ATTR = "unigeo"


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` atomically.

    On any exception (including cancellation) the temporary file is removed and ``target`` is
    left exactly as it was.
    """
    target = Path(target)
    check_file_target(target)
    with output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=suffix or ".part", dir=target.parent
        )
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with output_errors(target):
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
    check_output_target(target)
    with output_errors(target):
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
        with output_errors(Path(dest) / part.name), open(part, "rb") as f:
            os.fsync(f.fileno())
    for part in parts:  # nothing is moved unless every part can be: a folder in the way fails here
        check_file_target(Path(dest) / part.name)
    for old in stale:
        with output_errors(old, "remove the stale"), contextlib.suppress(FileNotFoundError):
            Path(old).unlink()
    for part in parts:
        with output_errors(Path(dest) / part.name):
            os.replace(part, Path(dest) / part.name)


def check_file_target(target: Path) -> None:
    """Refuse an output file path that is a folder, before any work.

    ``os.replace`` would fail on a folder only at the very end (or, for an empty folder on some
    systems, replace it): the user named a folder where a file was expected.
    """
    with output_errors(target):  # a name too long for the system fails here already
        if target.is_dir():
            raise OutputError(
                f"{target} is a folder, not a file: give the output a file name (e.g. one inside "
                "that folder); nothing was written"
            )


def check_output_target(target: Path) -> None:
    """:func:`check_file_target`, and refuse a path inside an embedding store folder.

    For results the user names (heatmaps, hits, classes, reports): ``--out scene.store/valid.npy``
    replaced a store's array with a GeoTIFF, and a file inside a Zarr store's chunk folders would
    be read as embeddings. The store writes its own files through :func:`atomic_path`.
    """
    check_file_target(target)
    with output_errors(target):
        store = enclosing_store(target)
    if store is not None:
        raise OutputError(
            f"{target} lies inside the embedding store {store}; UniGeo never writes results "
            "into a store (that would damage it): choose a path outside it (nothing was written)"
        )


def store_marker(folder: Path) -> Path | None:
    """The file that makes ``folder`` an embedding store, else None.

    An npy store's ``store.json``, or a Zarr group's ``zarr.json`` whose attributes carry a
    UniGeo store description; a Zarr group of someone else's is no store of ours.
    """
    meta = folder / STORE_JSON
    if meta.is_file():
        return meta
    zmeta = folder / ZARR_JSON
    if not zmeta.is_file():
        return None
    try:
        doc = json.loads(zmeta.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # not provably a store
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return zmeta if isinstance(attrs, dict) and isinstance(attrs.get(STORE_ATTR), dict) else None


def enclosing_store(path: str | Path) -> Path | None:
    """The embedding store folder ``path`` lies in (at any depth), or None."""
    for parent in Path(path).absolute().parents:
        if store_marker(parent) is not None:
            return parent
    return None
