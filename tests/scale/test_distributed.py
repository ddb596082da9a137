"""Distributed embedding on a two-worker local Dask cluster: the Zarr store equals the
single-process store, the model is loaded once per worker process, a worker killed midway is
replaced and the store still comes out whole and equal."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from engine.scale.distributed import embed_distributed
from engine.scale.worker import model_loads
from engine.store import open_store
from engine.store.zarr import ZarrEmbeddingStore

from .conftest import BLOCK, BUNDLE, worker_pids

pytest.importorskip("distributed")
pytest.importorskip("zarr")

PROVENANCE = ("grid", "crs", "dim", "model_hash", "model_name", "model_version",
              "source_fingerprint", "bands", "scaling", "format_version")  # fmt: skip


def assert_same_store(z: ZarrEmbeddingStore, ref, max_diff: float = 1e-3) -> float:
    """Valid bitwise equal, embeddings within fp16 rounding, same provenance; return max |Δ|."""
    assert z.complete and z.grid == ref.grid and z.crs == ref.crs
    for k in PROVENANCE:
        assert z.info[k] == ref.info[k], k
    for k in ("modality", "max_nodata"):
        assert z.meta[k] == ref.meta[k], k
    assert set(z.info) == set(ref.info)
    assert np.array_equal(z.valid, np.asarray(ref.valid))
    got = np.asarray(z.embeddings).astype(np.float32)
    diff = float(np.abs(got - np.asarray(ref.embeddings, np.float32)).max())
    assert diff <= max_diff, diff
    return diff


def test_two_workers_equal_single_process(
    dask_cluster, naip, naip_grid, reference_store, tmp_path, record_property
):
    cluster, client = dask_cluster
    out = tmp_path / "naip.zarr"
    z = embed_distributed(BUNDLE, naip, naip_grid, out, scheduler=cluster.scheduler_address,
                          block_tiles=BLOCK, progress=False)  # fmt: skip
    diff = assert_same_store(z, reference_store)
    record_property("max_abs_diff", diff)
    assert diff == 0.0  # same batches, same session settings: bitwise identical here
    assert z.meta["blocks_this_run"] == z.info["n_blocks"] == naip_grid.n_tiles
    assert z.meta["workers"] == 2 and z.meta["worker_processes_used"] == 2
    assert z.meta["tiles_this_run"] == naip_grid.n_tiles and z.meta["tiles_per_s"] > 0
    # edge tiles are read shifted inside the raster: every cell of the NAIP grid is embedded
    assert naip_grid.n_tiles >= z.meta["valid_tiles"] == int(z.valid.sum()) > 30
    assert isinstance(open_store(out), ZarrEmbeddingStore)
    # one model per worker process, although each ran several blocks
    loads = dict(client.run(model_loads).values())
    assert len(loads) == 2 and set(loads.values()) == {1}, loads
    # a finished store is returned as is: nothing is recomputed
    again = embed_distributed(BUNDLE, naip, naip_grid, out, scheduler="local:1",
                              block_tiles=BLOCK, progress=False)  # fmt: skip
    assert again.info == z.info and again.folder == z.folder


def _done_files(partial) -> int:
    d = partial / "done" / "c"
    return len(os.listdir(d)) if d.is_dir() else 0


def test_worker_killed_midway(dask_cluster, naip, naip_grid, reference_store, tmp_path):
    cluster, client = dask_cluster
    out = tmp_path / "kill.zarr"
    partial = tmp_path / "kill.zarr.partial"
    result: dict = {}

    def job() -> None:
        try:
            result["store"] = embed_distributed(
                BUNDLE, naip, naip_grid, out, scheduler=cluster.scheduler_address,
                block_tiles=BLOCK, progress=False,
            )  # fmt: skip
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    before = worker_pids(client)
    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 120
    while _done_files(partial) < 4 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    done_at_kill = _done_files(partial)
    victim = next(iter(before.values()))
    os.kill(victim, signal.SIGKILL)  # a worker of our own test cluster
    thread.join(180)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    n_blocks = len(list(naip_grid.iter_blocks(BLOCK)))
    assert 4 <= done_at_kill < n_blocks, "the job ended before the kill; the test proves nothing"
    z = result["store"]
    assert_same_store(z, reference_store, max_diff=0.0)
    after = worker_pids(client)
    assert victim not in after.values()  # the nanny started a fresh process
    # every process loaded the model at most once (a replacement that joined after the last
    # task has loaded none)
    assert set(dict(client.run(model_loads).values()).values()) <= {0, 1}


def test_ctrl_c_keeps_a_resumable_partial(dask_cluster, naip, naip_grid, reference_store, tmp_path):
    from engine.errors import CancelledError

    cluster, _ = dask_cluster
    out = tmp_path / "c.zarr"

    def interrupt(fraction: float) -> None:
        raise KeyboardInterrupt  # as Ctrl+C arrives in the client's main thread

    with pytest.raises(CancelledError, match="run again to resume"):
        embed_distributed(BUNDLE, naip, naip_grid, out, scheduler=cluster.scheduler_address,
                          block_tiles=BLOCK, progress=interrupt)  # fmt: skip
    assert not out.exists() and (tmp_path / "c.zarr.partial" / "zarr.json").is_file()
    z = embed_distributed(BUNDLE, naip, naip_grid, out, scheduler=cluster.scheduler_address,
                          block_tiles=BLOCK, progress=False)  # fmt: skip
    assert 0 < z.meta["blocks_this_run"] < naip_grid.n_tiles
    assert_same_store(z, reference_store, max_diff=0.0)
