"""Adversarial cases beyond issue 16's list, in its spirit: outputs and concurrency. Each asserts the error
(or the correct result) and that nothing the user had, and no earlier output, was damaged.

Defects these cases found, fixed with them (docs/RELIABILITY.md, section 10): an output named
inside a store replaced the store's arrays; ``--confidence`` equal to ``--out`` silently kept
only one of the two rasters; an output equal to an input file (the region, the photo)
replaced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError, StoreError
from tests.reliability.conftest import leftovers, one_error_line, random_uint8, write_raster


def digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def band1(path: Path) -> np.ndarray:
    from osgeo import gdal

    ds = gdal.Open(str(path))  # held while reading: a band does not keep its dataset alive
    return ds.GetRasterBand(1).ReadAsArray()


@pytest.fixture()
def store(store_copy) -> Path:
    return store_copy


def _q(cmd: str, store: Path, bundle: Path, out: Path, *extra) -> list:
    return [cmd, store, "--model", bundle, *extra, "--out", out]


# -- outputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("inside", ["valid.npy", "embeddings.npy", "store.json", "ann/x.gpkg"])
def test_output_inside_a_store_is_refused(inside, run_cli, store, analytic_bundle):
    """``--out s.store/valid.npy`` replaced the store's array with a GeoTIFF (store destroyed)."""
    from engine.store import open_store

    before = digest(store)
    cmd = "hits" if inside.endswith(".gpkg") else "heatmap"
    args = _q(cmd, store, analytic_bundle, store / inside, "--text", "water")
    line = one_error_line(*run_cli(args))
    assert "inside the embedding store" in line and "never writes results into a store" in line
    assert digest(store) == before and open_store(store).valid.all()


def test_output_equal_to_the_store_is_refused(run_cli, store, analytic_bundle):
    before = digest(store)
    line = one_error_line(*run_cli(_q("heatmap", store, analytic_bundle, store, "--text", "water")))
    assert "is a folder, not a file" in line
    assert digest(store) == before


def test_confidence_equal_to_out_is_refused(run_cli, store, analytic_bundle, tmp_path):
    """The confidence raster replaced the class map written a moment before (exit 0)."""
    out = tmp_path / "c.tif"
    out.write_bytes(b"earlier classes")
    line = one_error_line(*run_cli(_q("classify", store, analytic_bundle, out,
                                      "--confidence", out)))  # fmt: skip
    assert "--confidence" in line and "is also --out" in line
    assert out.read_bytes() == b"earlier classes"


def test_output_equal_to_the_region_file_is_refused(run_cli, store, analytic_bundle, tmp_path):
    region = tmp_path / "area.geojson"
    region.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    before = region.read_bytes()
    line = one_error_line(*run_cli(_q("hits", store, analytic_bundle, region, "--region", region)))
    assert "is also --region" in line and region.read_bytes() == before


def test_output_equal_to_a_photo_is_refused(run_cli, store, analytic_bundle, tmp_path):
    from PIL import Image

    photo = tmp_path / "p.tif"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(photo)
    before = photo.read_bytes()
    line = one_error_line(*run_cli(_q("heatmap", store, analytic_bundle, photo, "--photo", photo)))
    assert "is also --photo" in line and photo.read_bytes() == before


def test_output_through_a_symlink_never_writes_into_the_linked_file(
    run_cli, store, analytic_bundle, tmp_path
):
    """The link is replaced by the new file; the file it pointed at stays as it was."""
    elsewhere = tmp_path / "elsewhere.tif"
    elsewhere.write_bytes(b"someone else's file")
    link = tmp_path / "h.tif"
    link.symlink_to(elsewhere)
    assert run_cli(_q("heatmap", store, analytic_bundle, link, "--text", "water"))[0] == 0
    assert elsewhere.read_bytes() == b"someone else's file"
    assert not link.is_symlink() and link.read_bytes()[:2] in (b"II", b"MM")


def test_output_through_a_dangling_symlink(run_cli, store, analytic_bundle, tmp_path):
    link = tmp_path / "h.gpkg"
    link.symlink_to(tmp_path / "nowhere" / "x.gpkg")
    assert run_cli(_q("hits", store, analytic_bundle, link, "--text", "water"))[0] == 0
    assert link.is_file() and not link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_output_that_is_a_symlink_to_a_folder_is_refused(run_cli, store, analytic_bundle, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"jpeg")
    (tmp_path / "h.tif").symlink_to(folder)
    line = one_error_line(*run_cli(_q("heatmap", store, analytic_bundle, tmp_path / "h.tif",
                                      "--text", "water")))  # fmt: skip
    assert "is a folder, not a file" in line
    assert (folder / "a.jpg").read_bytes() == b"jpeg" and (tmp_path / "h.tif").is_symlink()


def test_output_that_is_a_fifo_is_replaced_without_blocking(
    run_cli, store, analytic_bundle, tmp_path
):
    fifo = tmp_path / "h.tif"
    os.mkfifo(fifo)
    assert run_cli(_q("heatmap", store, analytic_bundle, fifo, "--text", "water"))[0] == 0
    assert fifo.is_file() and leftovers(tmp_path) == []


def test_output_names_with_spaces_newlines_and_emoji(run_cli, store, analytic_bundle, tmp_path):
    from osgeo import gdal

    out = tmp_path / "my heat\nmap 🌊.tif"
    assert run_cli(_q("heatmap", store, analytic_bundle, out, "--text", "water"))[0] == 0
    assert gdal.Open(str(out)).RasterCount == 2 and leftovers(tmp_path) == []


def test_unknown_vector_extension_is_refused_before_anything(
    run_cli, store, analytic_bundle, tmp_path
):
    out = tmp_path / "hits.txt"
    out.write_text("my notes")
    line = one_error_line(*run_cli(_q("hits", store, analytic_bundle, out, "--text", "water")))
    assert ".gpkg, .geojson or .shp" in line and out.read_text() == "my notes"


# -- concurrency ---------------------------------------------------------------------------------
def test_two_threads_writing_one_heatmap_leave_one_whole_file(good_store, tmp_path):
    from engine.search.similarity import write_heatmap
    from engine.store import open_store

    s = open_store(good_store)
    out = tmp_path / "h.tif"
    a, b = np.full(s.grid.shape, 0.25, np.float32), np.full(s.grid.shape, 0.75, np.float32)
    errors: list[BaseException] = []

    def write(scores):
        try:
            for _ in range(5):
                write_heatmap(out, s, scores)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=write, args=(x,)) for x in (a, b)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert errors == []
    band = band1(out)
    assert np.all(band == 0.25) or np.all(band == 0.75)  # one whole file, never a mixture
    assert leftovers(tmp_path) == []


def test_a_store_replaced_while_open_keeps_scoring_the_old_vectors(
    run_cli, analytic_bundle, tmp_path
):
    from engine.search.similarity import similarity
    from engine.store import open_store

    a = write_raster(tmp_path / "a.tif", random_uint8(seed=31))
    b = write_raster(tmp_path / "b.tif", random_uint8(seed=32))
    out = tmp_path / "s.store"
    assert run_cli(["embed", a, "--model", analytic_bundle, "--out", out])[0] == 0
    old = open_store(out)
    q = np.ones(old.dim, np.float32) / np.sqrt(old.dim)
    first = similarity(old, q)
    assert run_cli(["embed", b, "--model", analytic_bundle, "--out", out])[0] == 0
    np.testing.assert_array_equal(similarity(old, q), first)  # the open store is unharmed
    assert not np.array_equal(similarity(open_store(out), q), first)  # the new one is b's
    assert leftovers(tmp_path) == []


def test_a_stale_lock_file_of_a_killed_writer_does_not_block(
    run_cli, analytic_bundle, good_raster, tmp_path
):
    from engine.store.guard import StoreLock

    out = tmp_path / "s.store"
    StoreLock.file_for(out).write_text("pid 999999 on elsewhere since long ago\n")  # no flock
    assert run_cli(["embed", good_raster, "--model", analytic_bundle, "--out", out])[0] == 0
    assert (out / "store.json").is_file() and leftovers(tmp_path) == []


def test_two_threads_embedding_one_store(analytic_bundle, tmp_path):
    from engine.embed.job import embed_raster
    from engine.model import UniGeoModel
    from engine.raster.gdal_reader import GdalReader
    from engine.raster.tiling import grid_for_raster
    from engine.store import open_store

    src = write_raster(tmp_path / "r.tif", random_uint8(size=512, seed=33))
    out = tmp_path / "s.store"
    results: list[object] = []

    def embed():
        with UniGeoModel.load(analytic_bundle) as m, GdalReader(src) as r:
            try:
                g = grid_for_raster(r, m.spec(m.modalities[0]).preprocess)
                results.append(embed_raster(m, r, g, out, block_tiles=4).complete)
            except EngineError as e:
                results.append(e)

    threads = [threading.Thread(target=embed) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert True in results, results
    for r in results:
        assert r is True or (isinstance(r, StoreError) and "another UniGeo job" in str(r))
    assert open_store(out).valid.all() and leftovers(tmp_path) == []


def test_dask_embed_into_a_store_another_writer_holds(
    run_cli, analytic_bundle, good_raster, tmp_path
):
    """The distributed path takes the same single-writer lock, before any cluster starts."""
    pytest.importorskip("distributed")
    from engine.store.guard import StoreLock

    out = tmp_path / "s.zarr"
    lock = StoreLock.acquire(out)
    try:
        line = one_error_line(*run_cli(["embed", good_raster, "--model", analytic_bundle,
                                        "--scheduler", "local:1", "--out", out]))  # fmt: skip
    finally:
        lock.release()
    assert "another UniGeo job" in line and f"pid {os.getpid()}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_index_builds_at_once_leave_a_valid_index(store):
    from engine.search.ann import AnnIndex, default_folder
    from engine.store import open_store

    s = open_store(store)
    errors: list[BaseException] = []

    def build(kind):
        try:
            AnnIndex.build(s, kind=kind, nlist=2).save(default_folder(s))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=build, args=(k,)) for k in ("flat", "ivf")]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert errors == []
    assert AnnIndex.load(s).info["kind"] in ("flat", "ivf")  # one whole index, checksum valid
    assert leftovers(store) == []
