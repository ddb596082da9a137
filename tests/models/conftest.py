"""Fixtures for the model-manager tests: bundle zips and a local HTTP server that serves them.

The server (http.server in a thread on 127.0.0.1) can truncate a response, honour or ignore
``Range`` and answer 404, so downloads are tested against real sockets without any network.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

PAD_BYTES = 600_000  # a bundle zip big enough to be cut in the middle of a transfer


@dataclass
class ServerState:
    """What the handler serves and how; the requests it got."""

    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    mode: str = "ok"  # ok | truncate_always | truncate_once | truncate_once_no_range
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    sent: int = 0  # body bytes written over all requests
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def serve(self, name: str, data: bytes) -> str:
        self.files["/" + name] = data
        return self.url(name)


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_GET(self):  # noqa: N802 (http.server API)
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404, "Not Found")
                return
            first = len(state.requests) == 1
            if state.mode == "truncate_always" or (
                state.mode.startswith("truncate_once") and first
            ):
                self._send(200, data, 0, cut=len(data) // 2)
            elif rng and state.mode != "truncate_once_no_range":
                start = int(rng.split("=")[1].split("-")[0])
                self._send(206, data, start)
            else:
                self._send(200, data, 0)

        def _send(self, code: int, data: bytes, start: int, cut: int | None = None):
            self.send_response(code)
            self.send_header("Content-Length", str(len(data) - start))
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            body = data[start:cut] if cut is not None else data[start:]
            self.wfile.write(body)
            state.sent += len(body)
            self.close_connection = True

    return Handler


@contextlib.contextmanager
def running_server() -> Iterator[ServerState]:
    """A fresh :class:`ServerState` served on 127.0.0.1 until the block ends."""
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture()
def server():
    """A local HTTP server for one test."""
    with running_server() as state:
        yield state


def make_bundle_zip(folder: Path, out: Path, pad: int = PAD_BYTES, **overrides) -> tuple[Path, str]:
    """An analytic bundle (plus ``pad`` random bytes in a notes file) packed into ``out``."""
    from engine.library.unpack import pack_bundle
    from tests.fixtures.analytic_bundle import make_analytic_bundle

    make_analytic_bundle(folder, **overrides)
    if pad:
        rng = np.random.default_rng(0)
        (folder / "notes.bin").write_bytes(rng.integers(0, 256, pad, dtype=np.uint8).tobytes())
    return pack_bundle(folder, out)


@pytest.fixture(scope="session")
def bundle_zip(tmp_path_factory) -> tuple[Path, str]:
    """``(zip, sha256)`` of a valid analytic bundle (name 'analytic', version '1')."""
    root = tmp_path_factory.mktemp("bundle_zip")
    return make_bundle_zip(root / "analytic", root / "dist")


def visible(folder: Path) -> list[str]:
    """Every entry of ``folder`` (hidden ones included), sorted; [] when it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
