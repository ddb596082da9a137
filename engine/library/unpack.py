"""Model bundle zips: reproducible packing, sha256 files, and a safe, size-limited unzip.

A bundle zip holds one top folder ``<name>-<version>/`` with ``bundle.json`` and the model files
(or, accepted too, those files at the zip's root). Packing is byte-reproducible (sorted names,
fixed dates and modes, files stored uncompressed because zlib builds differ in their output), so
the sha256 of ``resources/models/default`` packed on any machine equals the pinned one.
Unpacking refuses absolute paths, ``..``, links, devices, encrypted or duplicate members and
archives larger than the limits, and writes only regular files under the destination.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..atomic import atomic_path, atomic_write_text
from ..errors import CancelledError, InputError, ModelInstallError
from ..model.bundle_spec import BUNDLE_FILE, BundleSpec

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: no build time leaks in
_SHA_LINE = re.compile(r"^\s*([0-9a-fA-F]{64})\b")


@dataclass(frozen=True)
class UnpackLimits:
    """Upper bounds for an archive, checked before anything is written."""

    max_members: int = 2000  # files and folders in the zip
    max_total_bytes: int = 8 << 30  # sum of the members' uncompressed sizes
    max_member_bytes: int = 4 << 30  # one member's uncompressed size


def sha256_file(
    path: str | Path,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> str:
    """sha256 (hex) of a file, streamed; ``progress`` and ``is_canceled`` per MiB."""
    path = Path(path)
    size = max(path.stat().st_size, 1)
    h, done = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if is_canceled is not None and is_canceled():
                raise CancelledError("model install cancelled; nothing was installed")
            h.update(block)
            done += len(block)
            if progress is not None:
                progress(done / size)
    return h.hexdigest()


def normalise_sha256(text: str) -> str:
    """The lowercase 64-hex digest in ``text`` (a bare digest or a ``sha256sum`` line).

    Raises:
        InputError: ``text`` holds no sha256 digest.
    """
    m = _SHA_LINE.match(text or "")
    if not m:
        raise InputError(
            f"'{(text or '').strip()[:80]}' is not a sha256: give the 64 hexadecimal characters "
            "published with the bundle (the .sha256 file beside its zip)"
        )
    return m.group(1).lower()


def sidecar_sha256(zip_path: str | Path) -> str | None:
    """The digest in ``<zip>.sha256`` beside a zip file, or None when there is no such file."""
    side = Path(f"{zip_path}.sha256")
    if not side.is_file():
        return None
    return normalise_sha256(side.read_text(encoding="utf-8", errors="replace"))


def pack_bundle(folder: str | Path, out_dir: str | Path) -> tuple[Path, str]:
    """Write ``<out_dir>/<name>-<version>.zip`` and its ``.sha256`` file from a bundle folder.

    Every regular file of the folder (hidden ones and caches excepted) goes under the top folder
    ``<name>-<version>/``. The caller validates the bundle first (``load_bundle``).

    Returns:
        ``(zip path, sha256 hex)``.

    Raises:
        ModelContractError: no valid ``bundle.json``.
        InputError: the folder holds a symbolic link.
    """
    folder = Path(folder)
    spec = BundleSpec.read(folder)
    top = bundle_folder_name(spec.name, spec.version)
    files = sorted(_bundle_files(folder), key=lambda p: p.relative_to(folder).as_posix())
    out = Path(out_dir) / f"{top}.zip"
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for p in files:
            info = zipfile.ZipInfo(f"{top}/{p.relative_to(folder).as_posix()}", ZIP_DATE)
            info.create_system = 3  # unix, so the mode below is what unzip tools see
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.file_size = p.stat().st_size  # zipfile picks zip64 from it (files over 2 GB)
            with open(p, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    digest = sha256_file(out)
    atomic_write_text(Path(f"{out}.sha256"), f"{digest}  {out.name}\n")
    return out, digest


def _bundle_files(folder: Path) -> list[Path]:
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") or part == "__pycache__" for part in rel):
            continue
        if p.is_symlink():
            raise InputError(f"{p} is a symbolic link: copy the real file into the bundle")
        if p.is_file():
            out.append(p)
    return out


def bundle_folder_name(name: str, version: str) -> str:
    """``<name>-<version>`` made safe as a single folder name."""
    raw = f"{name}-{version}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-")
    return safe or "bundle"


def _member_path(name: str) -> PurePosixPath:
    """A member's relative path, or raise when it could escape the destination."""
    bad = (
        not name
        or "\\" in name
        or "\0" in name
        or name.startswith("/")
        or re.match(r"^[A-Za-z]:", name) is not None
    )
    parts = PurePosixPath(name).parts
    if bad or any(p in ("..", ".") for p in parts) or not parts:
        raise ModelInstallError(
            f"the zip holds the unsafe path '{name}' (absolute, '..' or backslashes): it is not "
            "a UniGeo bundle made by 'python -m engine models pack'; nothing was installed"
        )
    return PurePosixPath(*parts)


def _check_members(zf: zipfile.ZipFile, limits: UnpackLimits) -> list[zipfile.ZipInfo]:
    """The file members to extract, after every safety check on the whole archive."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ModelInstallError(
            f"the zip holds {len(infos)} entries (limit {limits.max_members}): not a model "
            "bundle; nothing was installed"
        )
    seen: set[PurePosixPath] = set()
    files, total = [], 0
    for info in infos:
        path = _member_path(info.filename)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode) if info.create_system == 3 else 0
        if info.flag_bits & 0x1:
            raise ModelInstallError(f"'{info.filename}' is encrypted; nothing was installed")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if kind == stat.S_IFLNK else "not a regular file"
            raise ModelInstallError(
                f"'{info.filename}' in the zip is {what}: bundles hold regular files only; "
                "nothing was installed"
            )
        if path in seen:
            raise ModelInstallError(f"the zip holds '{info.filename}' twice; nothing was installed")
        seen.add(path)
        if info.is_dir():
            continue
        if info.file_size > limits.max_member_bytes:
            raise ModelInstallError(
                f"'{info.filename}' unpacks to {info.file_size / 1e9:.1f} GB, above the "
                f"{limits.max_member_bytes / 1e9:.1f} GB limit; nothing was installed"
            )
        total += info.file_size
        files.append(info)
    if total > limits.max_total_bytes:
        raise ModelInstallError(
            f"the zip unpacks to {total / 1e9:.1f} GB, above the "
            f"{limits.max_total_bytes / 1e9:.1f} GB limit; nothing was installed"
        )
    return files


def bundle_root(names: list[PurePosixPath]) -> PurePosixPath:
    """The folder inside the zip that holds ``bundle.json``: the root or one top folder.

    Raises:
        ModelInstallError: no ``bundle.json`` at either place.
    """
    if PurePosixPath(BUNDLE_FILE) in names:
        return PurePosixPath(".")
    tops = {n.parts[0] for n in names}
    if len(tops) == 1:
        top = PurePosixPath(next(iter(tops)))
        if top / BUNDLE_FILE in names:
            return top
    raise ModelInstallError(
        f"the zip holds no {BUNDLE_FILE} at its root or in a single top folder: it is not a "
        "UniGeo model bundle; nothing was installed"
    )


def unpack_bundle(
    zip_path: str | Path,
    dest: str | Path,
    limits: UnpackLimits = UnpackLimits(),
    is_canceled: Callable[[], bool] | None = None,
) -> Path:
    """Safely unzip a bundle zip into the new folder ``dest`` (its bundle folder's contents).

    Returns:
        ``dest``.

    Raises:
        ModelInstallError: not a zip, unsafe or oversized members, a CRC error, no bundle.json,
            or a member larger than it declared.
        CancelledError: ``is_canceled()`` returned True.
    """
    dest = Path(dest)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            files = _check_members(zf, limits)
            root = bundle_root([_member_path(i.filename) for i in files])
            _check_free_space(dest.parent, sum(i.file_size for i in files))
            dest.mkdir(parents=True)
            for info in files:
                if is_canceled is not None and is_canceled():
                    raise CancelledError("model install cancelled; nothing was installed")
                rel = _member_path(info.filename)
                rel = rel.relative_to(root) if root.parts else rel
                if not rel.parts:
                    raise ModelInstallError(
                        f"'{info.filename}' is both a file and the bundle folder; nothing was "
                        "installed"
                    )
                _extract_one(zf, info, dest / rel)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise ModelInstallError(
            f"{Path(zip_path).name} is not a readable zip ({e}): the download is damaged or "
            "it is another kind of file; nothing was installed"
        ) from None
    return dest


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Copy one member, never more bytes than it declared (a lying header is refused)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(target, "xb") as dst:
        while block := src.read(1 << 20):
            written += len(block)
            if written > info.file_size:
                raise ModelInstallError(
                    f"'{info.filename}' holds more data than its header declares; nothing was "
                    "installed"
                )
            dst.write(block)


def _check_free_space(folder: Path, need: int) -> None:
    """Refuse to start an unpack that cannot finish for lack of disk space."""
    free = shutil.disk_usage(folder).free
    if free < need + (16 << 20):
        raise ModelInstallError(
            f"the bundle needs {need / 1e6:.0f} MB but only {free / 1e6:.0f} MB are free in "
            f"{folder}: free some space or choose another models folder; nothing was installed"
        )
