"""Tests of engine/embed.py: the pipeline on generated and real rasters with an analytic encoder."""

from __future__ import annotations

import numpy as np
import pytest

from engine.embed.job import embed_raster
from engine.errors import CancelledError, InputError, ModelContractError, RasterInputError
from engine.grid import TileGrid
from engine.model.contract import Modality
from engine.raster.batch import read_chips
from engine.raster.gdal_reader import GdalReader
from engine.raster.tiling import grid_for_raster
from engine.store.base import partial_path
from engine.store.npy import EmbeddingStore
from tests.engine_geo.conftest import UTM_ORIGIN, FakeModel, fake_embed

RGBN = ("red", "green", "blue", "nir")
RGB = ("red", "green", "blue")


def direct(reader, grid: TileGrid, r: int, c: int, bands) -> np.ndarray:
    """What the store should hold for tile (r, c): the fake encoder on a direct read."""
    chip = reader.read_tile(grid.tile_bounds(r, c), grid.crs, grid.gsd, grid.tile_px, bands)
    return fake_embed(chip[None])[0].astype(np.float16)


def test_embedding_a_raster(utm_tif, tmp_path):
    model = FakeModel(RGBN, 16, 1.0)
    seen: list[float] = []
    with GdalReader(utm_tif) as reader:
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
        assert grid.shape == (12, 16)
        store = embed_raster(
            model, reader, grid, tmp_path / "s", batch_size=5, block_tiles=4, progress=seen.append
        )
        expect_valid = np.ones(grid.shape, bool)
        expect_valid[8:12, 12:16] = False  # nodata region (2, 3)
        expect_valid[8:12, 0:2] = False  # nodata left half of region (2, 0)
        np.testing.assert_array_equal(store.valid, expect_valid)
        assert not store.embeddings[~expect_valid].any()
        for r, c in [(0, 0), (3, 7), (8, 2), (11, 11), (5, 15)]:
            np.testing.assert_array_equal(store.embeddings[r, c], direct(reader, grid, r, c, RGBN))
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) == 12 + 1
    m = store.meta
    assert m["tiles_per_s"] > 0 and m["valid_tiles"] == 192 - 24 and m["tiles_this_run"] == 192
    assert m["modality"] == "aerial" and store.info["bands"] == list(RGBN)
    assert store.info["scaling"] == "uint8/255" and store.info["model_name"] == "fake"
    assert store.source_fingerprint == GdalReader(utm_tif).fingerprint()


def test_nodata_threshold(utm_tif, tmp_path):
    model = FakeModel(RGBN, 16, 1.0)
    y0 = UTM_ORIGIN[1] - 192  # region row 2: its left 32 px are nodata
    with GdalReader(utm_tif) as reader:
        grid = TileGrid.for_extent("EPSG:32633", 1.0, 16, 8, (500_000, y0, 500_064, y0 + 64))
        cells = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
        # what the pipeline reads: tiles over the raster's edge shifted inside (read_chips)
        frac = read_chips(reader, grid, RGBN, cells)[1].reshape(grid.shape)
        # edge tiles are read shifted inside the raster, so only the inner no-data strip
        # gives part-empty tiles here
        assert ((frac > 0) & (frac <= 0.5)).any() and (frac == 1).any()
        for i, t in enumerate((0.0, 0.5, 1.0)):
            store = embed_raster(model, reader, grid, tmp_path / f"s{i}", max_nodata=t)
            np.testing.assert_array_equal(store.valid, (frac <= t) & (frac < 1))


def test_extent_invariance_on_a_reprojected_raster(geo_tif, tmp_path):
    model = FakeModel(RGB, 16, 2.0)
    with GdalReader(geo_tif) as reader:
        pre = model.spec(Modality.AERIAL).preprocess
        full_grid = grid_for_raster(reader, pre)
        sub_grid = grid_for_raster(
            reader, pre, extent=(15.0007, 44.9983, 15.0021, 44.9995), extent_crs="EPSG:4326"
        )
        full = embed_raster(model, reader, full_grid, tmp_path / "full", block_tiles=5, workers=2)
    with GdalReader(geo_tif) as reader:  # a fresh reader: fresh VRTs and statistics
        sub = embed_raster(
            model, reader, sub_grid, tmp_path / "sub", block_tiles=3, workers=1, batch_size=7
        )
    assert 20 <= sub_grid.n_tiles < full_grid.n_tiles
    dr, dc = sub_grid.row0 - full_grid.row0, sub_grid.col0 - full_grid.col0
    part = (slice(dr, dr + sub_grid.rows), slice(dc, dc + sub_grid.cols))
    np.testing.assert_array_equal(sub.valid, full.valid[part])
    np.testing.assert_array_equal(sub.embeddings, full.embeddings[part])
    assert sub.valid.any() and not sub.valid.all()  # it crosses the alpha hole


def test_extent_invariance_with_percentile_stretch_and_overlap(geo_dir, tmp_path):
    from affine import Affine

    from tests.engine_geo.conftest import write_tif

    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, (3, 150, 170)).astype(np.uint16)
    data[:, 100:, :60] = 9999  # a bright corner: stretching a sub-extent alone would differ
    t = Affine(1.0, 0, UTM_ORIGIN[0] + 3, 0, -1.0, UTM_ORIGIN[1] - 5)
    path = write_tif(geo_dir / "u16.tif", data, "EPSG:32633", t)
    model = FakeModel(RGB, 16, 1.5)
    with GdalReader(path) as reader:
        assert reader.scaling.startswith("percentile")
        pre = model.spec(Modality.AERIAL).preprocess
        full_grid = grid_for_raster(reader, pre, stride_px=8)
        sub_grid = grid_for_raster(
            reader, pre, stride_px=8, extent=(500_060, 4_999_950, 500_120, 5_000_030)
        )
        full = embed_raster(model, reader, full_grid, tmp_path / "full", block_tiles=4)
        sub = embed_raster(model, reader, sub_grid, tmp_path / "sub", block_tiles=3)
    dr, dc = sub_grid.row0 - full_grid.row0, sub_grid.col0 - full_grid.col0
    part = (slice(dr, dr + sub_grid.rows), slice(dc, dc + sub_grid.cols))
    assert sub_grid.n_tiles >= 25 and sub.valid.all()
    np.testing.assert_array_equal(sub.embeddings, full.embeddings[part])


def test_cancel_then_resume_is_identical(utm_tif, tmp_path):
    with GdalReader(utm_tif) as reader:
        grid = grid_for_raster(reader, FakeModel(RGBN, 16, 1.0).spec(Modality.AERIAL).preprocess)
        fresh = embed_raster(
            FakeModel(RGBN, 16, 1.0), reader, grid, tmp_path / "fresh", block_tiles=4
        )
        calls: list[float] = []
        with pytest.raises(CancelledError, match="resume"):
            embed_raster(
                FakeModel(RGBN, 16, 1.0), reader, grid, tmp_path / "res", block_tiles=4,
                progress=calls.append, is_canceled=lambda: len(calls) >= 5,
            )  # fmt: skip
        assert not (tmp_path / "res").exists() and partial_path(tmp_path / "res").is_dir()
        done = np.load(partial_path(tmp_path / "res") / "done.npy")
        assert done.sum() == 5 and done[:5].all()
        model = FakeModel(RGBN, 16, 1.0)
        resumed = embed_raster(model, reader, grid, tmp_path / "res", block_tiles=4)
        assert resumed.meta["tiles_this_run"] == 192 - 5 * 16
    for name in ("embeddings.npy", "valid.npy"):
        assert (tmp_path / "res" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    np.testing.assert_array_equal(resumed.embeddings, fresh.embeddings)
    assert not partial_path(tmp_path / "res").exists()


def test_finished_store_is_reused_and_resume_false_restarts(utm_tif, tmp_path):
    with GdalReader(utm_tif) as reader:
        model = FakeModel(RGBN, 16, 1.0)
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
        embed_raster(model, reader, grid, tmp_path / "s")
        n = model.calls
        again = embed_raster(model, reader, grid, tmp_path / "s")
        assert model.calls == n and again.complete
        other = FakeModel(RGBN, 16, 1.0, model_hash="fake-2")
        redo = embed_raster(other, reader, grid, tmp_path / "s", resume=False)
        assert other.calls > 0 and redo.model_hash == "fake-2"
        assert EmbeddingStore.open(tmp_path / "s").model_hash == "fake-2"


def test_bad_inputs_leave_no_store(utm_tif, geo_tif, tmp_path):
    model = FakeModel(RGBN, 16, 1.0)
    with GdalReader(geo_tif) as reader:
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
        with pytest.raises(RasterInputError, match="bands="):
            embed_raster(model, reader, grid, tmp_path / "s")
    assert list(tmp_path.iterdir()) == []
    with GdalReader(utm_tif) as reader:
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
        with pytest.raises(InputError, match="32-px"):
            embed_raster(FakeModel(RGBN, 32, 1.0), reader, grid, tmp_path / "s")
        with pytest.raises(InputError, match="aerial or dsm"):
            embed_raster(model, reader, grid, tmp_path / "s", modality=Modality.TEXT)
        no_aerial = FakeModel(RGBN, 16, 1.0)
        no_aerial.has = lambda m: False
        with pytest.raises(ModelContractError, match="no aerial encoder"):
            embed_raster(no_aerial, reader, grid, tmp_path / "s")
        with pytest.raises(InputError, match="max_nodata"):
            embed_raster(model, reader, grid, tmp_path / "s", max_nodata=2.0)
    assert list(tmp_path.iterdir()) == []


def test_dsm_modality(dsm_tif, tmp_path):
    model = FakeModel(("height",), 16, 2.0)
    with GdalReader(dsm_tif, scale=1.0, resampling="average") as reader:
        grid = grid_for_raster(reader, model.spec(Modality.DSM).preprocess)
        store = embed_raster(model, reader, grid, tmp_path / "d", modality=Modality.DSM)
        assert grid.shape == (6, 6)
        assert not store.valid[:2].any() and store.valid[2:].all()  # top 32 px rows are nodata
        np.testing.assert_array_equal(
            store.embeddings[3, 4], direct(reader, grid, 3, 4, ("height",))
        )
        assert store.info["scaling"] == "divide:1"


def test_real_naip(shared_data, tmp_path):
    tif = shared_data / "naip_north_dakota" / "m_4709963_se_14_1_20200831.tif"
    model = FakeModel(RGBN, 64, 0.0)
    with GdalReader(tif) as reader:
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
        assert grid.crs == "EPSG:26914" and grid.gsd == 5.0
        store = embed_raster(model, reader, grid, tmp_path / "naip", block_tiles=4)
        assert store.valid.mean() > 0.6 and store.meta["tiles_per_s"] > 0
        r, c = grid.rows // 2, grid.cols // 2  # an inner tile (edge tiles are read shifted in)
        np.testing.assert_array_equal(store.embeddings[r, c], direct(reader, grid, r, c, RGBN))
        norms = np.linalg.norm(store.embeddings[store.valid].astype(np.float32), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=2e-3)


def test_real_swellendam_rgba_in_epsg4326(shared_data, tmp_path):
    tif = shared_data / "swellendam" / "3320D_2010_315_RGB_LATLNG.tif"
    model = FakeModel(RGB, 64, 0.0)
    with GdalReader(tif) as reader:
        assert reader.check_bands(RGB) == [1, 2, 3]  # alpha is a mask, not a data band
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
        assert grid.crs == "EPSG:32734" and 2.2 < grid.gsd < 2.5
        store = embed_raster(model, reader, grid, tmp_path / "sw", block_tiles=6)
        # the UTM box around a lat/lon rectangle: edge tiles at least half inside are read
        # shifted inside the raster (full chips); those mostly outside are skipped, and outputs
        # are drawn inside the outline
        assert store.valid.mean() > 0.8
        assert float(np.asarray(store.nodata)[store.valid].max()) <= 0.5
        assert store.meta["footprint_wkt"].startswith("POLYGON")
        assert store.valid[grid.rows // 2, grid.cols // 2]
        emb = store.embeddings[store.valid].astype(np.float32)
        assert np.isfinite(emb).all() and emb.std(axis=0).max() > 0.01  # not a constant image


@pytest.mark.slow
def test_peak_memory_on_a_large_sparse_raster(tmp_path):
    """bench/embed_memory.py on a 12000 x 12000 x 3 raster stays far below 1.5 GB peak RSS."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "bench" / "embed_memory.py"), "--size", "12000"]
    out = subprocess.run(
        cmd + ["--workdir", str(tmp_path)], capture_output=True, text=True, check=True
    )
    figures = json.loads(out.stdout)
    assert figures["tiles"] == 54 * 54 and 0 < figures["valid_tiles"] < figures["tiles"]
    assert figures["peak_rss_mb"] < 1500
