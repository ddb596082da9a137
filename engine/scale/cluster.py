"""The Dask client of a distributed job: a local cluster it owns, or a running scheduler.

A local cluster listens on 127.0.0.1 only (scheduler, workers, nannies and dashboard) and, when
``cryptography`` is installed, speaks TLS with temporary credentials; a running scheduler is
reached over TLS, or plain TCP on loopback (:mod:`.security` holds those rules).
``dask.distributed`` is imported inside :class:`DaskCluster` so that ``engine`` imports
without it; :func:`local_workers` (the scheduler argument's check) needs no Dask at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from typing import Any

from ..errors import EngineError
from .security import (
    check_address,
    client_security,
    local_dashboard,
    local_security,
    require_distributed,
    warn_if_insecure,
)

_FREE = "127.0.0.1:0"  # a free port on loopback
_HEALTH = "distributed.http.health"  # the scheduler's one HTTP route when there's no dashboard

# records keep the logger name they had before this class moved out of distributed.py
log = logging.getLogger(__name__.rsplit(".", 1)[0] + ".distributed")


class DaskCluster:
    """A Dask client for ``"local:N"`` (a LocalCluster it owns) or a ``tls://``/``tcp://``
    scheduler address."""

    def __init__(
        self,
        scheduler: str,
        dashboard_address: str | None,
        security: Any = None,
        insecure: bool = False,
    ) -> None:
        """Start a local cluster of N worker processes or connect to ``scheduler``.

        Args:
            scheduler: ``"local:N"``, ``"tls://host:port"`` or ``"tcp://127.0.0.1:port"``
                (plain TCP to another host only with ``insecure``).
            dashboard_address: a local cluster's dashboard (``":0"``: a free port on
                127.0.0.1; None: off); ignored for a running scheduler.
            security: a ``distributed.security.Security``: the client's credentials for a
                ``tls://`` scheduler (None: from Dask's configuration), or a local cluster's
                (None: temporary ones).
            insecure: allow plain ``tcp://`` to another host (a warning names the risk).

        Raises:
            InputError: a malformed or refused address, or missing TLS credentials.
            EngineError: Dask is not installed, local workers cannot start, or the scheduler
                cannot be reached.
        """
        require_distributed()
        self.cluster = None
        self._level = logging.getLogger("distributed").level
        n = check_address(scheduler, insecure)
        if n:
            self.client = self._start_local(n, local_dashboard(dashboard_address), security)
        else:
            self.client = self._connect(scheduler, client_security(scheduler, security))
        self._announce(scheduler, dashboard_address)

    @property
    def address(self) -> str:
        """The scheduler's address (``tls://127.0.0.1:port`` for a local TLS cluster)."""
        return self.client.scheduler.address

    @property
    def security(self) -> Any:
        """The client's ``Security`` (a local cluster's temporary credentials included)."""
        return self.client.security

    @staticmethod
    def _connect(scheduler: str, security: Any) -> Any:
        """A client of the running scheduler at ``scheduler``."""
        from distributed import Client

        warn_if_insecure(scheduler)  # only reached with insecure=True
        try:
            return Client(scheduler, timeout="30s", security=security)
        except (OSError, TimeoutError) as e:
            hint = " (are the CA and certificate those of the cluster?)" if security else ""
            raise EngineError(
                f"cannot reach the Dask scheduler at {scheduler} ({e}){hint}"
            ) from None

    def _start_local(self, n: int, dashboard_address: str | None, security: Any) -> Any:
        """A client of a new LocalCluster of ``n`` single-threaded worker processes."""
        import dask
        from distributed import Client, LocalCluster

        security = local_security(security)
        tls = security is not None and bool(security.tls_scheduler_cert)
        # Without a dashboard the scheduler still opens its HTTP server (on 8787 when free):
        # there it serves nothing but a health check, on a free loopback port
        http = {} if dashboard_address else {"distributed.scheduler.http.routes": [_HEALTH]}
        # the scheduler and nannies of a local cluster live in this process: keep their
        # start/stop chatter out of the user's terminal
        logging.getLogger("distributed").setLevel(logging.WARNING)
        try:
            with dask.config.set(http):
                self.cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    # every listener on loopback: scheduler, nannies, workers, HTTP servers
                    host="127.0.0.1",
                    dashboard_address=dashboard_address,
                    scheduler_kwargs=None if dashboard_address else {"dashboard_address": _FREE},
                    worker_dashboard_address=None,
                    protocol="tls://" if tls else "tcp://",
                    security=security,
                    silence_logs=logging.WARNING,
                )
        except RuntimeError as e:
            raise EngineError(
                f"cannot start {n} local Dask worker process(es) ({e}); from a Python "
                "script, call embed_distributed under `if __name__ == '__main__':`"
            ) from None
        return Client(self.cluster, security=security)

    def _announce(self, scheduler: str, dashboard_address: str | None) -> None:
        """Log where the job can be watched."""
        if self.cluster is not None and dashboard_address is not None:
            # WARNING level so that the CLI (quiet by default) shows where to watch the job
            if importlib.util.find_spec("bokeh") is None:
                log.warning("no Dask dashboard: it needs bokeh (in the project's 'scale' extra)")
            else:
                log.warning("Dask dashboard: %s", self.client.dashboard_link)
        else:
            log.info("Dask scheduler %s, dashboard %s", scheduler, self.client.dashboard_link)
        log.info("Dask scheduler at %s (%s)", self.address,
                 "TLS" if self.address.startswith("tls://") else "plain TCP")  # fmt: skip

    def n_workers(self) -> int:
        """Workers connected to the scheduler now."""
        return len(self.client.scheduler_info().get("workers", {}))

    def _await_workers_gone(self, seconds: float = 30.0) -> None:
        """Wait until the local cluster has stopped every worker and its nanny."""
        deadline = time.monotonic() + seconds
        while self.cluster.workers and time.monotonic() < deadline:
            time.sleep(0.02)

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client; a local cluster's workers are retired first, then the cluster."""
        if self.cluster is not None:
            # workers first, then the scheduler: closing both at once makes the workers log
            # heartbeat errors against a scheduler that is already gone. Their nannies stop
            # them (scale to 0): a worker retired from the scheduler instead exits on its own,
            # racing its nanny's stop queue, which distributed logs as "Worker process died
            # unexpectedly" with a traceback
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                self.cluster.scale(0)
                self._await_workers_gone()
            self.client.close()
            self.cluster.close()
            logging.getLogger("distributed").setLevel(self._level)
        else:
            self.client.close()
