"""Installing a model bundle from a zip file, a bundle folder or an https URL into a models folder.

Everything happens in a hidden staging folder inside the models folder (same file system): the
download (resumed over HTTP Range when the connection drops), the sha256 check (before anything
is unpacked), the safe unzip, and the checks that the engine can run the bundle (its contract
with :func:`engine.model.bundle.load_bundle`, then one onnxruntime session and one sample per tower).
Only then is the bundle renamed into place, atomically, as ``<models>/<name>-<version>``. On any
failure or cancel the staging folder is deleted: nothing partial is ever left that looks
installed. Entry points: :func:`install_bundle`, :func:`install_default`, and the CLI
``python -m engine models install SOURCE --sha256 HEX --models-dir DIR``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import staging_folder
from ..errors import CancelledError, EngineError, ModelContractError, ModelInstallError
from ..model.bundle import LoadedBundle, load_bundle
from ..model.contract import Modality
from .catalog import DEFAULT_BUNDLE, default_models_dir
from .download import download
from .installed import InstalledBundle, active_bundle, set_active, summarise
from .unpack import (
    UnpackLimits,
    bundle_folder_name,
    normalise_sha256,
    sha256_file,
    sidecar_sha256,
    unpack_bundle,
)

log = logging.getLogger("unigeo.models")

Progress = Callable[[float], None] | None
STALE_S = 6 * 3600  # hidden staging folders older than this were left by a crash: swept


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_bundle` did."""

    bundle: InstalledBundle  # the installed bundle and its card
    already_installed: bool  # the same files were installed already; nothing was changed
    sha256: str | None  # the digest that was verified (None: a folder, or a file without one)
    activated: bool  # it became the active bundle


def is_url(source: str | Path) -> bool:
    """True when ``source`` is a URL (``scheme://...``) rather than a local path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(source).strip()) is not None


def _scaled(progress: Progress, lo: float, hi: float) -> Progress:
    if progress is None:
        return None
    return lambda f: progress(lo + (hi - lo) * max(0.0, min(1.0, f)))


def _say(message: Callable[[str], None] | None, text: str) -> None:
    log.info(text)
    if message is not None:
        message(text)


def install_default(models_dir: str | Path | None = None, **kwargs) -> InstallResult:
    """Download and install the pinned default bundle (its URL honours ``UNIGEO_MODEL_URL``).

    Keyword arguments go to :func:`install_bundle`.
    """
    pin = DEFAULT_BUNDLE
    return install_bundle(
        pin.resolved_url(), models_dir, pin.sha256, expected_size=pin.size, **kwargs
    )


def install_bundle(
    source: str | Path,
    models_dir: str | Path | None = None,
    sha256: str | None = None,
    *,
    activate: bool | None = None,
    replace: bool = False,
    allow_http: bool = False,
    expected_size: int | None = None,
    limits: UnpackLimits = UnpackLimits(),
    progress: Progress = None,
    is_canceled: Callable[[], bool] | None = None,
    message: Callable[[str], None] | None = None,
) -> InstallResult:
    """Install a bundle from a zip file, a bundle folder or an https URL.

    Args:
        source: a ``.zip`` path, an unpacked bundle folder, or an https URL of a zip.
        models_dir: the models folder (default: :func:`default_models_dir`).
        sha256: the zip's expected sha256; required for a URL. For a local zip without one,
            ``<zip>.sha256`` beside it is used when present.
        activate: make it the active bundle; None = only when no bundle is active yet.
        replace: replace an installed bundle of the same name and version but other files.
        allow_http: allow a plain-http URL to a non-loopback host.
        expected_size: the zip's pinned size in bytes (checked against the server's).
        limits: archive size limits.
        progress: ``progress(fraction)`` over the whole install.
        is_canceled: polled throughout; True stops the install and removes everything.
        message: receives one line per stage (downloading, verifying, unpacking, checking).

    Raises:
        ModelInstallError: anything that prevents the install (each message says why and what
            to do); nothing is left behind.
        CancelledError: cancelled; nothing is left behind.
    """
    root = _models_root(models_dir)
    digest = normalise_sha256(sha256) if sha256 else None
    remote = is_url(source)
    if remote and digest is None:
        raise ModelInstallError(
            "give the bundle's sha256 (published beside its zip) to install from a URL: "
            "without it a damaged or substituted download could not be told apart"
        )
    _sweep_stale(root)
    with staging_folder(root / "install") as stage:
        opts = dict(allow_http=allow_http, expected_size=expected_size, limits=limits)
        digest = _fetch_and_unpack(source, stage, digest, opts, progress, is_canceled, message)
        _say(message, "checking that onnxruntime runs every tower")
        loaded = validate_bundle(stage / "bundle")
        if progress is not None:
            progress(0.98)
        _check_canceled(is_canceled)
        final = root / bundle_folder_name(loaded.spec.name, loaded.spec.version)
        already = _publish(loaded, final, stage, replace)
    activated = activate is True or (activate is None and active_bundle(root) is None)
    if activated:
        set_active(root, final.name)
    if progress is not None:
        progress(1.0)
    verb = "was already installed" if already else "installed"
    _say(message, f"{loaded.spec.name} {loaded.spec.version} {verb} in {final}")
    return InstallResult(summarise(final, active_bundle(root) == final), already, digest, activated)


def _fetch_and_unpack(
    source: str | Path,
    stage: Path,
    digest: str | None,
    opts: dict,
    progress: Progress,
    is_canceled: Callable[[], bool] | None,
    message: Callable[[str], None] | None,
) -> str | None:
    """Download or locate the zip, verify its sha256, unpack it into ``stage/bundle``.

    Returns:
        The digest that was verified (None when there was none to check).
    """
    unpacked = stage / "bundle"
    if is_url(source):
        _say(message, f"downloading {source}")
        archive: Path | None = stage / "download.zip"
        download(str(source), archive, expected_size=opts["expected_size"],
                 allow_http=opts["allow_http"], progress=_scaled(progress, 0.0, 0.7),
                 is_canceled=is_canceled)  # fmt: skip
        spans = (0.7, 0.8, 0.9)
    else:
        archive, digest = _local_source(Path(source), unpacked, digest)
        spans = (0.0, 0.4, 0.7)
    if archive is not None:
        _verify(archive, digest, _scaled(progress, spans[0], spans[1]), is_canceled, message)
        _say(message, "unpacking")
        unpack_bundle(archive, unpacked, opts["limits"], is_canceled)
    if progress is not None:
        progress(spans[2])
    _check_canceled(is_canceled)
    return digest


def _models_root(models_dir: str | Path | None) -> Path:
    root = Path(models_dir) if models_dir else default_models_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelInstallError(
            f"cannot create the models folder {root} ({e.strerror or e}): choose a writable "
            "models folder"
        ) from None
    return root


def _local_source(path: Path, unpacked: Path, digest: str | None) -> tuple[Path | None, str | None]:
    """``(zip to verify and unpack, digest)``; a bundle folder is copied into ``unpacked``."""
    if path.is_dir():
        if digest:
            raise ModelInstallError(
                f"{path} is a folder: a sha256 applies to a zip file; omit it or give the zip"
            )
        _copy_folder(path, unpacked)
        return None, None
    if not path.is_file():
        raise ModelInstallError(f"{path} does not exist: give a bundle zip, folder or https URL")
    return path, digest or sidecar_sha256(path)


def _copy_folder(src: Path, dest: Path) -> None:
    for p in src.rglob("*"):
        if p.is_symlink():
            raise ModelInstallError(
                f"{p} is a symbolic link: bundles hold regular files only; nothing was installed"
            )
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*", "__pycache__"))


def _verify(
    archive: Path,
    digest: str | None,
    progress: Progress,
    is_canceled: Callable[[], bool] | None,
    message: Callable[[str], None] | None,
) -> None:
    """Compare the zip's sha256 with the expected one before anything is unpacked."""
    if digest is None:
        _say(message, f"no sha256 given for {archive.name}: only its contents are checked")
        return
    _say(message, "verifying sha256")
    got = sha256_file(archive, progress, is_canceled)
    if got != digest:
        raise ModelInstallError(
            f"the sha256 of {archive.name} is {got} but {digest} was expected: the file is "
            "damaged, truncated or not the bundle you meant; nothing was installed"
        )


def _check_canceled(is_canceled: Callable[[], bool] | None) -> None:
    if is_canceled is not None and is_canceled():
        raise CancelledError("model install cancelled; nothing was installed")


def validate_bundle(folder: str | Path, consequence: str = "nothing was installed") -> LoadedBundle:
    """Check that this engine can run the bundle: its contract, then each tower on one sample.

    Raises:
        ModelInstallError: the contract is broken or onnxruntime cannot load or run a tower.
    """
    from ..model.core import UniGeoModel

    try:
        loaded = load_bundle(folder)
        with UniGeoModel(loaded, providers="cpu", threads=1) as model:
            for modality in model.modalities:
                _run_one_sample(model, modality)
    except CancelledError:
        raise
    except EngineError as e:
        raise ModelInstallError(f"this engine cannot use the bundle: {e}; {consequence}") from None
    return loaded


def _run_one_sample(model, modality: Modality) -> None:
    """One inference on a neutral sample: shapes, output and finiteness are checked by the model."""
    if modality is Modality.TEXT:
        model.encode_text(["water"])
    elif modality is Modality.GPS:
        model.encode_gps([45.0], [7.0])
    else:
        p = model.spec(modality).preprocess
        if modality is Modality.DSM:
            x = np.linspace(0.0, 10.0, p.size * p.size, dtype=np.float32)
            x = x.reshape(1, 1, p.size, p.size)
        else:
            x = np.full((1, len(p.bands), p.size, p.size), 0.5, np.float32)
        model.encode_tiles(modality, x)


def _publish(loaded: LoadedBundle, final: Path, stage: Path, replace: bool) -> bool:
    """Rename the checked bundle into place; True when identical files were there already."""
    if final.exists():
        try:
            same = load_bundle(final).model_hash == loaded.model_hash
        except ModelContractError:
            same = False
        if same:
            return True
        if not replace:
            raise ModelInstallError(
                f"{final.name} is already installed with other files: remove it first "
                f"(python -m engine models remove {final.name}, or the Model manager) or "
                "install with --replace"
            )
        os.replace(final, stage / "replaced")  # deleted with the staging folder
    try:
        os.replace(loaded.folder, final)
    except OSError as e:
        if (stage / "replaced").is_dir() and not final.exists():
            os.replace(stage / "replaced", final)  # put the previous bundle back
        raise ModelInstallError(
            f"cannot move the bundle into {final} ({e.strerror or e}); nothing was installed"
        ) from None
    return False


def _sweep_stale(root: Path) -> None:
    """Delete hidden staging folders that a crashed install or removal left behind."""
    now = time.time()
    for p in root.glob(".*.*"):
        if p.name.startswith((".install.", ".remove.")) and p.is_dir():
            try:
                if now - p.stat().st_mtime > STALE_S:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                continue
