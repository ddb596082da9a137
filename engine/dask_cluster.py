"""The Dask client of a distributed job: a local cluster it owns, or a running scheduler.

``dask.distributed`` is imported inside :class:`DaskCluster` so that ``engine`` imports
without it; :func:`local_workers` (the scheduler argument's check) needs no Dask at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from typing import Any

from .errors import EngineError, InputError

# records keep the logger name they had before this class moved out of distributed.py
log = logging.getLogger(__name__.rsplit(".", 1)[0] + ".distributed")


def local_workers(scheduler: str) -> int:
    """N for ``"local:N"``, 0 for a scheduler address; InputError for anything else."""
    if scheduler.startswith("local:"):
        n = scheduler[len("local:") :]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"scheduler '{scheduler}': use local:N with N >= 1 workers")
        return int(n)
    if "://" not in scheduler:
        raise InputError(f"scheduler '{scheduler}': use local:N or tcp://HOST:PORT")
    return 0


class DaskCluster:
    """A Dask client for ``"local:N"`` (a LocalCluster it owns) or ``"tcp://host:port"``."""

    def __init__(self, scheduler: str, dashboard_address: str | None) -> None:
        """Start a local cluster of N worker processes or connect to ``scheduler``.

        Raises:
            InputError: ``scheduler`` is neither ``local:N`` nor an address.
            EngineError: Dask is not installed, local workers cannot start, or the scheduler
                cannot be reached.
        """
        try:
            from distributed import Client
        except ImportError:
            raise EngineError(
                "distributed embedding needs dask[distributed]; install the 'scale' extra"
            ) from None
        self.cluster = None
        self._level = logging.getLogger("distributed").level
        n = local_workers(scheduler)
        if n:
            self.client = self._start_local(n, dashboard_address)
        else:
            try:
                self.client = Client(scheduler, timeout="30s")
            except OSError as e:
                raise EngineError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
        self._announce(scheduler, dashboard_address)

    def _start_local(self, n: int, dashboard_address: str | None) -> Any:
        """A client of a new LocalCluster of ``n`` single-threaded worker processes."""
        from distributed import Client, LocalCluster

        # the scheduler and nannies of a local cluster live in this process: keep their
        # start/stop chatter out of the user's terminal
        logging.getLogger("distributed").setLevel(logging.WARNING)
        try:
            self.cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=dashboard_address,
                silence_logs=logging.WARNING,
            )
        except RuntimeError as e:
            raise EngineError(
                f"cannot start {n} local Dask worker process(es) ({e}); from a Python "
                "script, call embed_distributed under `if __name__ == '__main__':`"
            ) from None
        return Client(self.cluster)

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

    def n_workers(self) -> int:
        """Workers connected to the scheduler now."""
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        """Close the client; a local cluster's workers are retired first, then the cluster."""
        if self.cluster is not None:
            # workers first, then the scheduler: closing both at once makes the workers log
            # heartbeat errors against a scheduler that is already gone
            with contextlib.suppress(OSError, TimeoutError):
                self.client.retire_workers(close_workers=True)
            self.client.close()
            self.cluster.close()
            logging.getLogger("distributed").setLevel(self._level)
        else:
            self.client.close()
