"""Downloading a model bundle zip: https only, progress, cancel, and resume with HTTP Range.

Used only when the analyst asks to install a bundle from a URL: nothing else in the engine
opens a network connection. A dropped connection is resumed from where it stopped (``Range:
bytes=N-``); a server that ignores Range gets a clean restart. The caller owns the destination
file and deletes it on failure, so a partial download never outlives the install attempt.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..errors import CancelledError, ModelInstallError

log = logging.getLogger("unigeo.models")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CHUNK = 256 * 1024
MAX_DOWNLOAD_BYTES = 4 << 30  # a bundle zip larger than this is refused before download
TIMEOUT_S = 30.0  # per socket operation; a stalled connection counts as a dropped one


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` fetched."""

    path: Path  # the downloaded file
    size: int  # bytes written
    attempts: int  # HTTP requests made (1 = no resume or restart was needed)
    resumed: int  # how many requests continued with a Range header and got 206


def check_url(url: str, allow_http: bool = False) -> str:
    """Return ``url`` when it may be downloaded from, else raise.

    https always; plain http only for a loopback host (a local mirror or a test server) or with
    ``allow_http`` (a mirror on a trusted network: the sha256 check still guards the content).

    Raises:
        ModelInstallError: another scheme, no host, or http to a remote host without the flag.
    """
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("https", "http") or not host:
        raise ModelInstallError(
            f"'{url}' is not an https URL: give an https:// address or a local zip file"
        )
    if scheme == "http" and host not in LOOPBACK_HOSTS and not allow_http:
        raise ModelInstallError(
            f"refusing plain http for {host}: use the https:// address (or allow http "
            "explicitly for a mirror you trust; the sha256 is still checked)"
        )
    return url.strip()


def _open(url: str, start: int, timeout: float) -> Any:
    """One GET, with ``Range: bytes=start-`` when resuming."""
    headers = {"User-Agent": f"UniGeo/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            return None  # the range is past the end: restart from zero
        raise ModelInstallError(
            f"the server answered {e.code} {e.reason} for {url}: check the URL (or the "
            "mirror set in UNIGEO_MODEL_URL); nothing was installed"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ModelInstallError(
            f"cannot reach {urlsplit(url).hostname} ({reason}): check the network or the "
            "URL, or install from a zip file downloaded another way; nothing was installed"
        ) from None


def _total(resp: Any, start: int) -> tuple[int, int | None]:
    """``(offset the body starts at, total size or None)`` from a 200 or 206 response."""
    if resp.status == 206:
        rng = resp.headers.get("Content-Range", "")  # "bytes 100-999/1000"
        try:
            first = int(rng.split()[1].split("-")[0])
            total = rng.rsplit("/", 1)[1]
            return first, None if total == "*" else int(total)
        except (IndexError, ValueError):
            raise ModelInstallError(
                f"the server sent a malformed Content-Range '{rng}'; nothing was installed"
            ) from None
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _check_size(total: int | None, expected: int | None, max_bytes: int, url: str) -> None:
    if total is not None and expected and total != expected:
        raise ModelInstallError(
            f"{url} is {total} bytes but the pinned bundle is {expected} bytes: the server "
            "holds another file; nothing was installed"
        )
    if total is not None and total > max_bytes:
        raise ModelInstallError(
            f"{url} is {total / 1e9:.1f} GB, above the {max_bytes / 1e9:.1f} GB limit for a "
            "model bundle; nothing was installed"
        )


def download(
    url: str,
    dest: str | Path,
    *,
    expected_size: int | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    retries: int = 3,
    timeout: float = TIMEOUT_S,
    allow_http: bool = False,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> DownloadResult:
    """Download ``url`` into ``dest``, resuming a dropped connection up to ``retries`` times.

    Args:
        url: https URL (see :func:`check_url`).
        dest: the file to write (created or truncated; the caller deletes it on failure).
        expected_size: the pinned size in bytes, checked against the server's, when known.
        max_bytes: refuse larger files.
        retries: further requests after a dropped connection (with Range when supported).
        timeout: seconds per socket operation.
        allow_http: allow plain http to a remote host.
        progress: ``progress(fraction)`` while bytes arrive (when the size is known).
        is_canceled: polled between chunks; True stops the download.

    Raises:
        ModelInstallError: bad URL, HTTP error, unreachable host, wrong size, or the download
            kept stopping early.
        CancelledError: ``is_canceled()`` returned True.
    """
    url = check_url(url, allow_http)
    dest = Path(dest)
    dest.write_bytes(b"")
    have, total, attempts, resumed = 0, expected_size, 0, 0
    while True:
        attempts += 1
        resp = _open(url, have, timeout)
        if resp is None:  # 416: our offset is past the end of what the server has
            have = _restart(dest)
            continue
        with resp:
            first, size = _total(resp, have)
            if first != have:
                have = _restart(dest)
                if first:  # a range we did not ask for: ask again for the whole file
                    continue
            elif first:
                resumed += 1
                log.info("resuming %s at byte %d", url, first)
            total = size if size is not None else total
            _check_size(size, expected_size, max_bytes, url)
            have = _copy(resp, dest, have, total, max_bytes, progress, is_canceled)
        if total is None or have >= total:
            return DownloadResult(dest, have, attempts, resumed)
        if attempts > retries:
            raise ModelInstallError(
                f"the download of {url} stopped at {have / 1e6:.1f} of {total / 1e6:.1f} MB "
                f"{attempts} times (connection lost?): try again later; nothing was installed"
            )
        log.warning("download of %s stopped at %d of %d bytes; retrying", url, have, total)


def _restart(dest: Path) -> int:
    dest.write_bytes(b"")
    return 0


def _copy(
    resp: Any,
    dest: Path,
    have: int,
    total: int | None,
    max_bytes: int,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
) -> int:
    """Append the response body to ``dest``; returns the bytes now in the file.

    A connection that drops or stalls ends the copy early (the caller resumes); cancelling
    raises.
    """
    with open(dest, "ab") as f:
        while True:
            if is_canceled is not None and is_canceled():
                raise CancelledError("model download cancelled; nothing was installed")
            try:
                block = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as e:  # reset, stall (timeout), short
                log.info("connection dropped after %d bytes: %s", have, e)
                return have
            if not block:
                return have
            f.write(block)
            have += len(block)
            if have > max_bytes:
                raise ModelInstallError(
                    f"the download passed the {max_bytes / 1e9:.1f} GB limit for a model "
                    "bundle; nothing was installed"
                )
            if progress is not None and total:
                progress(min(1.0, have / total))
