"""Fixtures for the scale-out tests: a real NAIP scene, its single-process reference store and a
shared two-worker local Dask cluster (started once per session: start-up costs seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.embed.job import embed_raster
from engine.grid import TileGrid
from engine.model import UniGeoModel
from engine.model.contract import Modality
from engine.raster.gdal_reader import GdalReader
from engine.raster.tiling import grid_for_raster

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "resources" / "models" / "default"
NAIP = "naip_north_dakota/m_4709963_se_14_1_20190904.tif"
BLOCK = 1  # one tile per block (and per inference batch): many small tasks to interrupt
# the south-east part of the scene, at its edges, so some tiles are skipped (no data)
EXTENT = (488000.0, 5205500.0, 490700.0, 5207600.0)


@pytest.fixture(scope="session")
def naip(shared_data) -> Path:
    return shared_data / NAIP


@pytest.fixture(scope="session")
def naip_grid(naip) -> TileGrid:
    """The default bundle's grid over EXTENT: tiles of 320 m."""
    model = UniGeoModel.load(BUNDLE)
    with GdalReader(naip) as reader:
        return grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess, extent=EXTENT)


@pytest.fixture(scope="session")
def reference_store(tmp_path_factory, naip, naip_grid):
    """The single-process npy store of the scene (the distributed stores must equal it)."""
    model = UniGeoModel.load(BUNDLE, threads=1)
    out = tmp_path_factory.mktemp("ref") / "naip.store"
    with GdalReader(naip) as reader:
        return embed_raster(model, reader, naip_grid, out, block_tiles=BLOCK, resume=False)


@pytest.fixture(scope="session")
def dask_cluster():
    """Two worker processes, one thread each, dashboard off (tests need no web server)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


def worker_pids(client) -> dict[str, int]:
    """Worker address -> process id."""
    return client.run(os.getpid)
