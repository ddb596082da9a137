"""Restart: the whole client (CLI, local cluster and all) is SIGKILLed midway, the rerun computes
only the blocks without a done marker. And the CLI end to end: ``embed --scheduler local:2``
into Zarr, then heatmap and hits on it, equal to the same commands on the npy store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from engine.cli.main import main
from engine.scale.distributed import embed_distributed
from engine.store import open_store
from engine.store.zarr import ZarrEmbeddingStore

from .conftest import BLOCK, BUNDLE, EXTENT, ROOT
from .test_distributed import assert_same_store

pytest.importorskip("distributed")
pytest.importorskip("zarr")

CLI_EXTENT = "487500,5206000,490500,5208500"


def _markers(partial) -> int:
    d = partial / "done" / "c"
    return sum(n.isdigit() for n in os.listdir(d)) if d.is_dir() else 0


def _wait_still(partial, seconds: float = 1.5) -> int:
    """The marker count once it stopped changing (tasks already running finish their block)."""
    n, since = _markers(partial), time.monotonic()
    while time.monotonic() - since < seconds:
        time.sleep(0.05)
        if (m := _markers(partial)) != n:
            n, since = m, time.monotonic()
    return n


@pytest.mark.parametrize(
    "own_cluster",
    [False, pytest.param(True, marks=pytest.mark.slow, id="local-cluster-killed-too")],
)
def test_restart_after_client_killed(
    own_cluster, dask_cluster, naip, naip_grid, reference_store, tmp_path
):
    """The client process dies (with its own local cluster, or leaving a shared cluster up)."""
    cluster, _ = dask_cluster
    out, partial = tmp_path / "r.zarr", tmp_path / "r.zarr.partial"
    sched = "local:2" if own_cluster else cluster.scheduler_address
    cmd = [sys.executable, "-m", "engine", "embed", str(naip), "--model", str(BUNDLE),
           "--out", str(out), "--scheduler", sched, "--block-tiles", str(BLOCK),
           "--threads", "1", "--extent", ",".join(map(str, EXTENT))]  # fmt: skip
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    # its own session: killing the group takes a local cluster's workers down too
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while _markers(partial) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    n_blocks = len(list(naip_grid.iter_blocks(BLOCK)))
    left = n_blocks - _wait_still(partial)
    # a shared cluster may finish the tasks it was given after the client died (it notices the
    # death only at its next heartbeat): then nothing is left, and the rerun must compute nothing
    assert not out.exists() and 0 <= left < n_blocks, left
    z = embed_distributed(BUNDLE, naip, naip_grid, out, scheduler=cluster.scheduler_address,
                          block_tiles=BLOCK, threads_per_worker=1, progress=False)  # fmt: skip
    assert z.meta["blocks_this_run"] == left  # only the unmarked blocks were computed
    assert z.meta["tiles_this_run"] < naip_grid.n_tiles
    assert_same_store(z, reference_store, max_diff=0.0)


def _heat(store, bundle, out, *query) -> np.ndarray:
    assert main(["heatmap", str(store), "--model", str(bundle), *query, "--out", str(out)]) == 0
    with rasterio.open(out) as r:
        assert r.crs.to_epsg() == 26914
        return r.read(1)


def test_cli_dask_embed_then_queries(analytic_bundle, naip, tmp_path, capsys):
    m = str(analytic_bundle)
    zpath, npath = tmp_path / "n.zarr", tmp_path / "n.store"
    base = ["embed", str(naip), "--model", m, "--extent", CLI_EXTENT, "--block-tiles", "8"]
    assert main([*base, "--out", str(zpath), "--scheduler", "local:2"]) == 0
    assert "local:2" in capsys.readouterr().out
    assert main([*base, "--out", str(npath)]) == 0
    z, n = open_store(zpath), open_store(npath)
    assert isinstance(z, ZarrEmbeddingStore) and z.meta["workers"] == 2
    assert_same_store(z, n, max_diff=0.0)
    x, y = z.grid.tile_center(3, 4)
    for query in (["--text", "water"], ["--point", f"{x},{y}"]):
        a = _heat(zpath, m, tmp_path / "z.tif", *query)
        b = _heat(npath, m, tmp_path / "n.tif", *query)
        assert np.array_equal(np.isnan(a), ~z.valid) and np.allclose(a, b, equal_nan=True)
    hits = tmp_path / "hits.geojson"
    args = ["hits", str(zpath), "--model", m, "--text", "water", "--k", "5", "--out", str(hits)]
    assert main(args) == 0
    assert len(json.loads(hits.read_text())["features"]) == 5
    assert main(["heatmap", str(tmp_path / "none.zarr"), "--model", m, "--text", "x",
                 "--out", str(tmp_path / "x.tif")]) == 2  # fmt: skip
    assert "not an embedding store" in capsys.readouterr().err


def test_cli_collection_mosaic(analytic_bundle, shared_data, tmp_path):
    """A STAC-like JSON of two dates: the second fills the first's no-data pixels."""
    d = shared_data / "naip_north_dakota"
    first = d / "m_4709963_se_14_1_20190904.tif"
    feats = [{"id": p.stem, "assets": {"image": {"href": str(p)}}}
             for p in (first, d / "m_4709963_se_14_1_20200831.tif")]  # fmt: skip
    coll = tmp_path / "items.json"
    coll.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    m = str(analytic_bundle)
    base = ["embed", "--model", m, "--extent", CLI_EXTENT, "--grid-crs", "EPSG:26914"]
    assert main([*base[:1], str(coll), *base[1:], "--out", str(tmp_path / "c.store")]) == 0
    assert main([*base[:1], str(first), *base[1:], "--out", str(tmp_path / "f.store")]) == 0
    c, f = open_store(tmp_path / "c.store"), open_store(tmp_path / "f.store")
    assert c.grid == f.grid and c.source_fingerprint != f.source_fingerprint
    assert (np.asarray(c.valid) | ~np.asarray(f.valid)).all()  # a superset of the valid tiles
