"""The Dask task body run in-process: one model load per process and job key, chunk-aligned
writes then the done marker, and clear errors when a worker's files differ from the client's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.errors import InputError, ModelContractError, RasterInputError
from engine.grid import TileGrid
from engine.model.contract import Modality
from engine.raster.gdal_reader import GdalReader
from engine.raster.mosaic import source_spec
from engine.scale import distributed, security
from engine.scale import worker as W
from engine.store.zarr import ZarrEmbeddingStore

from .conftest import BLOCK, BUNDLE

pytest.importorskip("zarr")


@pytest.fixture
def job(tmp_path, naip, naip_grid):
    from engine.model import UniGeoModel

    model = UniGeoModel.load(BUNDLE, threads=1)
    with GdalReader(naip) as r:
        fp = r.fingerprint()
    store = ZarrEmbeddingStore.create(tmp_path / "w.zarr", naip_grid, model.dim,
                                      model.model_hash, fp, None, BLOCK)  # fmt: skip
    bands = tuple(model.spec(Modality.AERIAL).preprocess.bands)  # the encoder's
    read = ("red", "green", "blue", "nir")  # NAIP's; the encoder masks the rest (if any)
    return W.BlockJob(str(BUNDLE), model.model_hash, None, 1, "aerial", source_spec(naip), fp,
                      naip_grid.to_dict(), str(store.folder), BLOCK, bands, 32, 0.5,
                      read if read != bands else None)  # fmt: skip


def test_blocks_are_the_store_blocks():
    grid = TileGrid("EPSG:32633", 10.0, 16, 16, 0, 0, 7, 10)
    for bt in (1, 3, 4, 32):
        blocks = list(grid.iter_blocks(bt))
        assert [W.block_of(grid, bt, i) for i in range(len(blocks))] == blocks
    with pytest.raises(InputError, match="outside"):
        W.block_of(grid, 4, 6)


def test_run_block_writes_then_marks_and_loads_once(job, tmp_path, reference_store):
    before = W.MODEL_LOADS["count"]
    stats = [W.run_block(job, b) for b in (0, 3, 62)]
    assert W.MODEL_LOADS["count"] - before <= 1  # cached: later blocks reuse the model
    assert W.worker_state(job)[0] is W.worker_state(job)[0]
    grid = TileGrid.from_dict(job.grid)
    z = ZarrEmbeddingStore.resume(tmp_path / "w.zarr", grid, 128, job.model_hash,
                                  job.source_fingerprint, None, BLOCK)  # fmt: skip
    assert z.remaining_blocks() == [b for b in range(grid.n_tiles) if b not in (0, 3, 62)]
    ref_emb, ref_valid = reference_store.embeddings, np.asarray(reference_store.valid)
    for s in stats:
        r0, c0, _, _ = z.blocks()[s["block"]]
        assert s["tiles"] == 1 and s["encoded"] == int(ref_valid[r0, c0])
        assert np.array_equal(z.embeddings[r0, c0], ref_emb[r0, c0])
    # block 62, the corner tile, lies mostly outside the raster: no data, skipped
    assert not ref_valid[6, 8] and not z.embeddings[6, 8].any()


def test_worker_refuses_other_files(job, tmp_path, shared_data):
    bad_model = dataclasses.replace(job, model_hash="0" * 64)
    with pytest.raises(ModelContractError, match="differs from the client"):
        W.run_block(bad_model, 0)
    other = shared_data / "naip_north_dakota" / "m_4709963_se_14_1_20200831.tif"
    bad_src = dataclasses.replace(job, sources=source_spec(other))
    with pytest.raises(RasterInputError, match="differ from the client"):
        W.run_block(bad_src, 0)


def test_scheduler_strings():
    assert (
        security.local_workers("local:3") == 3
        and security.local_workers("tcp://10.0.0.1:8786") == 0
    )
    for bad in ("local:0", "local:x", "localhost:8786"):
        with pytest.raises(InputError, match="scheduler"):
            security.local_workers(bad)


def test_bad_scheduler_fails_before_any_store(naip, naip_grid, tmp_path):
    with pytest.raises(InputError, match="local:N or tcp"):
        distributed.embed_distributed(
            BUNDLE, naip, naip_grid, tmp_path / "x.zarr", scheduler="nope"
        )
    assert not any(tmp_path.iterdir())
