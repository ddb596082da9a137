"""Who may talk to a distributed job: scheduler address checks and the client's TLS credentials.

A Dask scheduler runs whatever Python its clients submit, on workers that read the user's
rasters and write their stores, so the engine connects only over TLS with a certificate, or
over plain TCP to this machine's loopback address; plain TCP to another host needs an explicit
``insecure=True`` (``--insecure``) and is logged as a warning. The address checks run before
any connection (and before any name lookup: a host name is never taken for a loopback one
except ``localhost``) and need no Dask; building a ``Security`` imports ``distributed``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from ..errors import EngineError, InputError

log = logging.getLogger(__name__.rsplit(".", 1)[0] + ".distributed")

SCHEMES = ("tcp", "tls")
_USAGE = "use local:N or tcp://127.0.0.1:PORT on this machine, tls://HOST:PORT for another host"
_TLS_HELP = (
    "pass --tls-ca-file, --tls-cert and --tls-key (Python: security=Security(...)), or set "
    "distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and .key in Dask's "
    "configuration"
)


def local_workers(scheduler: str) -> int:
    """N for ``"local:N"``, 0 for a ``tcp://`` or ``tls://`` address; InputError otherwise."""
    if scheduler.startswith("local:"):
        n = scheduler[len("local:") :]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"scheduler '{scheduler}': use local:N with N >= 1 workers")
        return int(n)
    scheme, _, rest = scheduler.partition("://")
    if scheme not in SCHEMES or not rest:
        raise InputError(f"scheduler '{scheduler}': {_USAGE}")
    return 0


def scheduler_host(scheduler: str) -> str:
    """The host part of a ``tcp://`` or ``tls://`` address (brackets of IPv6 removed)."""
    try:
        parts = urlsplit(scheduler)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InputError(f"scheduler '{scheduler}': not a HOST:PORT address; {_USAGE}") from None
    if not parts.hostname:
        raise InputError(f"scheduler '{scheduler}': no host; {_USAGE}")
    return parts.hostname


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; other names are never looked up."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(scheduler: str, insecure: bool = False) -> int:
    """Validate ``scheduler`` before anything connects; N for ``local:N``, else 0.

    Raises:
        InputError: malformed, or plain ``tcp://`` to another host without ``insecure``.
    """
    n = local_workers(scheduler)
    if n:
        return n
    host = scheduler_host(scheduler)
    if scheduler.startswith("tcp://") and not is_loopback(host) and not insecure:
        raise InputError(
            f"scheduler '{scheduler}': plain tcp:// to another host is unencrypted and "
            "unauthenticated (anyone who reaches that port can run code on the workers); "
            f"use tls://{host}:PORT with certificates (README, Scale-out), or pass --insecure "
            "on a network you fully trust"
        )
    return 0


def warn_if_insecure(scheduler: str) -> None:
    """Log the risk of a plain ``tcp://`` connection to another host (allowed by ``insecure``)."""
    if scheduler.startswith("tcp://") and not is_loopback(scheduler_host(scheduler)):
        log.warning(
            "--insecure: %s is plain TCP, neither encrypted nor authenticated; anyone on the "
            "network can read the job's traffic (file paths, tasks) and anyone who reaches the "
            "scheduler can run code on the workers with your files; use tls:// instead",
            scheduler,
        )


def tls_security(
    ca_file: str | None = None, cert: str | None = None, key: str | None = None
) -> Any:
    """A client ``distributed.security.Security`` for a ``tls://`` scheduler, checked now.

    Each value not given comes from Dask's configuration (``distributed.comm.tls.ca-file``,
    ``distributed.comm.tls.client.cert``, ``distributed.comm.tls.client.key``).

    Raises:
        InputError: no CA or certificate, a file missing, or the files do not form a key pair.
    """
    require_distributed()
    from distributed.security import Security

    given = {"tls_ca_file": ca_file, "tls_client_cert": cert, "tls_client_key": key}
    security = Security(require_encryption=True, **{k: v for k, v in given.items() if v})
    check_tls(security)
    return security


def check_tls(security: Any) -> None:
    """InputError unless ``security`` holds a client certificate and a CA that load.

    Raises:
        InputError: credentials missing or unreadable.
    """
    ca, cert = security.tls_ca_file, security.tls_client_cert
    if not ca or not cert:
        raise InputError(
            f"a tls:// scheduler needs a CA file and a client certificate; {_TLS_HELP}"
        )
    for what, value in (("CA file", ca), ("certificate", cert), ("key", security.tls_client_key)):
        # a value holding a newline is the PEM text itself (Security.temporary() keeps those)
        if value and "\n" not in value and not os.path.isfile(value):
            raise InputError(f"TLS {what} '{value}' does not exist; {_TLS_HELP}")
    try:
        security.get_connection_args("client")  # loads CA, certificate and key: fails here
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise InputError(
            f"the TLS credentials do not load ({e}); the key must match the certificate, "
            "all in PEM format"
        ) from None


def client_security(scheduler: str, security: Any) -> Any:
    """The ``Security`` to connect to the address ``scheduler`` with (None: Dask's default).

    Raises:
        InputError: TLS credentials given for a plain ``tcp://`` address, or a ``tls://``
            address without usable credentials.
    """
    if scheduler.startswith("tls://"):
        security = tls_security() if security is None else security
        check_tls(security)
    elif security is not None and security.tls_client_cert:
        raise InputError(
            f"TLS credentials given for '{scheduler}': write the address as tls://, or the "
            "connection would not use them"
        )
    return security


def local_security(security: Any) -> Any:
    """The credentials of a local cluster: ``security``, else temporary in-memory ones.

    Temporary credentials (a key made now, never written to a file that outlives the
    connection set-up) keep other users of this machine, who can reach 127.0.0.1 too, from
    submitting work to the cluster. They need the ``cryptography`` package; without it the
    cluster falls back to plain TCP on 127.0.0.1 and says so.
    """
    if security is not None:
        return security
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError:
        log.warning(
            "local Dask cluster without TLS (the 'cryptography' package is missing): other "
            "users of this machine could submit work to it"
        )
        return None


def local_dashboard(dashboard_address: str | None) -> str | None:
    """A local cluster's dashboard address, bound to 127.0.0.1 (None: no dashboard).

    Raises:
        InputError: the address names a host other than a loopback one.
    """
    if dashboard_address is None:
        return None
    host, _, port = dashboard_address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        raise InputError(f"dashboard address '{dashboard_address}': use :PORT or 127.0.0.1:PORT")
    if host and not is_loopback(host):
        raise InputError(
            f"dashboard address '{dashboard_address}': a local cluster's dashboard listens on "
            "127.0.0.1 only (it shows file paths and task details, without authentication); "
            "reach it from another machine with ssh -L"
        )
    return f"{host or '127.0.0.1'}:{port}"


def require_distributed() -> None:
    """EngineError naming the extra to install when ``dask.distributed`` is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise EngineError(
            "distributed embedding needs dask[distributed]; install the 'scale' extra"
        ) from None
