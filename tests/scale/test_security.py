"""Secure scale-out: a TLS cluster gives the single-process store (credentials from Python, CLI
files or Dask's configuration), wrong or missing credentials fail clearly, plain tcp:// to
another host is refused before any connection (checked inside a network namespace of its own),
and a ``local:N`` run listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from engine.cli.main import main
from engine.errors import EngineError, InputError
from engine.scale import security as S
from engine.scale.cluster import DaskCluster
from engine.scale.distributed import embed_distributed
from engine.store import open_store

from .conftest import BLOCK, BUNDLE, ROOT
from .test_distributed import assert_same_store

distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")

from distributed.security import Security  # noqa: E402

CLI_EXTENT = "487500,5206000,490500,5208500"
REFUSED = ("tcp://192.0.2.10:8786", "tcp://[2001:db8::10]:8786", "tcp://dask.example.org:8786",
           "tcp://0.0.0.0:8786")  # fmt: skip
LOOPBACK_IPS = ("127.0.0.1", "::1")


@pytest.fixture(scope="module")
def tls_cluster():
    """A two-worker cluster on 127.0.0.1 that speaks TLS only, with temporary credentials."""
    security = Security.temporary()
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        protocol="tls://", security=security, dashboard_address=None,
    )  # fmt: skip
    yield cluster, security
    cluster.close()


def _pem_files(security, folder) -> dict[str, str]:
    """The credentials as PEM files, as a user would hold them (key readable by its owner only)."""
    folder.mkdir()
    files = {}
    for name, text in (("ca", security.tls_ca_file), ("cert", security.tls_client_cert),
                       ("key", security.tls_client_key)):  # fmt: skip
        path = folder / f"{name}.pem"
        path.write_text(text)
        path.chmod(0o600)
        files[name] = str(path)
    return files


# -- address rules --------------------------------------------------------------------------------
def test_address_rules():
    assert S.check_address("local:3") == 3
    for ok in ("tls://dask.example.org:8786", "tls://10.1.2.3:8786", "tcp://127.0.0.1:8786",
               "tcp://127.8.9.10:1", "tcp://localhost:8786", "tcp://[::1]:8786"):  # fmt: skip
        assert S.check_address(ok) == 0, ok
    for address in REFUSED:
        with pytest.raises(InputError, match="unencrypted and unauthenticated.*--insecure"):
            S.check_address(address)
        assert S.check_address(address, insecure=True) == 0
    for bad in ("ucx://10.1.2.3:8786", "tcp://10.1.2.3:port", "tcp://:8786", "tls://", "nope"):
        with pytest.raises(InputError, match="scheduler"):
            S.check_address(bad, insecure=True)
    assert S.local_dashboard(":0") == "127.0.0.1:0" and S.local_dashboard(None) is None
    assert S.local_dashboard("localhost:8787") == "localhost:8787"
    for bad in ("0.0.0.0:8787", "10.1.2.3:0", ":web"):
        with pytest.raises(InputError, match="dashboard address"):
            S.local_dashboard(bad)


def test_insecure_warns_before_it_connects(monkeypatch, caplog):
    calls = []

    def client(address, **kwargs):  # stands in for distributed.Client: no packet leaves
        calls.append((address, kwargs.get("security")))
        raise OSError("connection refused")

    monkeypatch.setattr(distributed, "Client", client)
    with pytest.raises(InputError, match="--insecure"):
        DaskCluster("tcp://192.0.2.10:8786", None)
    assert calls == []
    with caplog.at_level(logging.WARNING), pytest.raises(EngineError, match="cannot reach"):
        DaskCluster("tcp://192.0.2.10:8786", None, insecure=True)
    assert calls == [("tcp://192.0.2.10:8786", None)]
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "neither encrypted nor authenticated" in warning[0]
    assert "run code on the workers" in warning[0]


# -- refusal in a network namespace of its own ---------------------------------------------------
NETNS_SCRIPT = r"""
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args))
    raise OSError("network access is blocked in this test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from engine.cli.main import main
from engine.scale.distributed import embed_distributed
from engine.errors import InputError
from engine.grid import TileGrid
naip, bundle, out, grid = sys.argv[1:5]
rcs, api = {}, {}
for address in sys.argv[5:]:
    rcs[address] = main(["embed", naip, "--model", bundle, "--out", out, "--scheduler", address])
    try:
        embed_distributed(bundle, naip, TileGrid.from_dict(json.loads(grid)), out,
                          scheduler=address, progress=False)
    except InputError as e:
        api[address] = str(e)
interfaces = [name for _, name in socket.if_nameindex()]
print(json.dumps({"rcs": rcs, "api": api, "attempts": attempts, "interfaces": interfaces}))
"""


def _netns_available() -> str | None:
    """None when ``unshare -n`` works here, else why the test is skipped."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"unshare -n failed: {r.stderr.strip()}"


def test_plain_tcp_to_another_host_refused_in_own_netns(naip, naip_grid, tmp_path):
    """Refused without --insecure, by the CLI and the Python API, before any connection."""
    if (why := _netns_available()) is not None:
        pytest.skip(f"network namespaces unavailable ({why}); the refusal is not run here")
    out = tmp_path / "x.zarr"
    cmd = ["unshare", "-n", sys.executable, "-c", NETNS_SCRIPT, str(naip), str(BUNDLE), str(out),
           json.dumps(naip_grid.to_dict()), *REFUSED]  # fmt: skip
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["interfaces"] == ["lo"]  # a namespace of its own: nothing to leave through
    assert res["rcs"] == {a: 2 for a in REFUSED}
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == len(REFUSED)
    for address, line in zip(REFUSED, lines, strict=True):
        assert f"scheduler '{address}': plain tcp:// to another host is unencrypted" in line
        assert "--insecure" in line and res["api"][address] == line[len("error: ") :]
    assert res["attempts"] == []  # no connection and no name lookup was even tried
    assert not any(tmp_path.iterdir())  # no store, no .partial


# -- TLS ------------------------------------------------------------------------------------------
def test_tls_cluster_gives_the_single_process_store(
    tls_cluster, naip, naip_grid, reference_store, tmp_path
):
    cluster, security = tls_cluster
    assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
    z = embed_distributed(BUNDLE, naip, naip_grid, tmp_path / "t.zarr",
                          scheduler=cluster.scheduler_address, security=security,
                          block_tiles=BLOCK, progress=False)  # fmt: skip
    assert_same_store(z, reference_store, max_diff=0.0)
    assert z.meta["tls"] is True and z.meta["workers"] == 2
    assert z.meta["worker_processes_used"] == 2 and z.meta["blocks_this_run"] == naip_grid.n_tiles


def test_cli_tls_from_files_and_from_dask_config(tls_cluster, analytic_bundle, naip, tmp_path):
    import dask

    cluster, security = tls_cluster
    pem = _pem_files(security, tmp_path / "pem")
    base = ["embed", str(naip), "--model", str(analytic_bundle), "--extent", CLI_EXTENT,
            "--block-tiles", "8"]  # fmt: skip
    tls = ["--scheduler", cluster.scheduler_address]
    files = ["--tls-ca-file", pem["ca"], "--tls-cert", pem["cert"], "--tls-key", pem["key"]]
    assert main([*base, "--out", str(tmp_path / "n.store")]) == 0
    assert main([*base, "--out", str(tmp_path / "f.zarr"), *tls, *files]) == 0
    config = {"distributed.comm.tls.ca-file": pem["ca"],
              "distributed.comm.tls.client.cert": pem["cert"],
              "distributed.comm.tls.client.key": pem["key"]}  # fmt: skip
    with dask.config.set(config):
        assert main([*base, "--out", str(tmp_path / "c.zarr"), *tls]) == 0
    n = open_store(tmp_path / "n.store")
    for name in ("f.zarr", "c.zarr"):
        z = open_store(tmp_path / name)
        assert z.meta["tls"] is True and z.meta["scheduler"] == cluster.scheduler_address
        assert_same_store(z, n, max_diff=0.0)


def test_tls_credentials_missing_or_wrong(tls_cluster, analytic_bundle, naip, naip_grid,
                                          tmp_path, capsys):  # fmt: skip
    cluster, security = tls_cluster
    address = cluster.scheduler_address
    with pytest.raises(InputError, match="needs a CA file and a client certificate"):
        embed_distributed(BUNDLE, naip, naip_grid, tmp_path / "a.zarr", scheduler=address)
    assert not any(tmp_path.iterdir())  # refused before any store
    with pytest.raises(EngineError, match="cannot reach.*CA and certificate"):
        embed_distributed(BUNDLE, naip, naip_grid, tmp_path / "b.zarr", scheduler=address,
                          security=Security.temporary(), progress=False)  # fmt: skip
    pem, other = (
        _pem_files(security, tmp_path / "p"),
        _pem_files(Security.temporary(), tmp_path / "o"),
    )
    base = ["embed", str(naip), "--model", str(analytic_bundle), "--out", str(tmp_path / "c.zarr")]
    cases = {
        "are for a tls:// --scheduler (local:N makes": ["--scheduler", "local:2", "--tls-cert", pem["cert"]],
        "are for a tls:// --scheduler": ["--scheduler", "tcp://127.0.0.1:8786", "--tls-cert", pem["cert"]],
        "need --scheduler": ["--insecure"],
        "does not exist": ["--scheduler", address, "--tls-ca-file", str(tmp_path / "none.pem"),
                           "--tls-cert", pem["cert"], "--tls-key", pem["key"]],
        "do not load": ["--scheduler", address, "--tls-ca-file", pem["ca"],
                        "--tls-cert", pem["cert"], "--tls-key", other["key"]],
    }  # fmt: skip
    for message, args in cases.items():
        assert main([*base, *args]) == 2, message
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c.zarr").exists() and not (tmp_path / "c.zarr.partial").exists()


# -- local clusters listen on loopback only -------------------------------------------------------
def _listeners() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of this process and its children."""
    import psutil

    me = psutil.Process()
    return {(c.laddr.ip, c.laddr.port) for p in (me, *me.children(recursive=True))
            for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}  # fmt: skip


def _http_status(url: str) -> int:
    """The HTTP status of a GET of ``url`` (a loopback address), never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_local_run_listens_on_loopback_only(naip, naip_grid, reference_store, tmp_path):
    """A whole ``local:2`` job: every socket it opens listens on 127.0.0.1, the dashboard too."""
    pytest.importorskip("psutil")
    before, seen = _listeners(), {}

    def progress(fraction: float) -> None:  # called while the cluster is up
        if "listeners" not in seen:
            seen["listeners"] = _listeners() - before

    z = embed_distributed(BUNDLE, naip, naip_grid, tmp_path / "l.zarr", scheduler="local:2",
                          block_tiles=BLOCK, progress=progress)  # fmt: skip
    opened = seen["listeners"]
    # scheduler, its HTTP server, two nannies, two workers with an HTTP server each
    assert len(opened) >= 8, opened
    assert {ip for ip, _ in opened} <= set(LOOPBACK_IPS), opened
    assert z.meta["tls"] is True  # temporary credentials: other local users cannot submit work
    assert_same_store(z, reference_store, max_diff=0.0)
    assert _listeners() - before == set()  # all closed again


def test_local_dashboard_on_loopback_or_off(caplog):
    pytest.importorskip("psutil")
    pytest.importorskip("bokeh")
    before = _listeners()
    with caplog.at_level(logging.WARNING), DaskCluster("local:1", ":0") as c:
        opened, link = _listeners() - before, c.client.dashboard_link
        assert link.startswith("http://127.0.0.1:") and ("127.0.0.1", c.client.scheduler_info()[
            "services"]["dashboard"]) in opened  # fmt: skip
        assert {ip for ip, _ in opened} <= set(LOOPBACK_IPS)
        assert _http_status(link) == 200
    assert f"Dask dashboard: {link}" in caplog.text  # the link is still printed
    with DaskCluster("local:1", None) as c:
        opened, link = _listeners() - before, c.client.dashboard_link
        assert {ip for ip, _ in opened} <= set(LOOPBACK_IPS) and len(opened) >= 4
        base = link.rsplit("/", 1)[0]
        # its HTTP server answers a health check and shows nothing: no dashboard, no info pages
        assert _http_status(f"{base}/health") == 200
        assert _http_status(link) == _http_status(f"{base}/info/main/workers.html") == 404
