"""No data loss: a store write never costs the user a file, a folder or a good earlier store.

Covers issue 16 items 1 (``--out`` naming a folder of the user's, or the input raster), 2 (two
writers into one store) and 4 (a full disk while embedding: memory-mapped writes used to die with
SIGBUS). Each case also checks that what was there before is still intact.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import StoreError
from engine.store import open_store
from engine.store.guard import StoreLock, check_target
from engine.store.npy import EmbeddingStore
from tests.reliability.conftest import leftovers, random_uint8, write_raster

ROOT = Path(__file__).resolve().parents[2]


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _embed(run_cli, raster: Path, bundle: Path, out: Path, *extra: str) -> tuple[int, str]:
    return run_cli(["embed", str(raster), "--model", str(bundle), "--out", str(out), *extra])


def test_out_naming_a_folder_of_user_files_is_refused(
    run_cli, analytic_bundle, good_raster, tmp_path
):
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.docx").write_text("x")
    (d / "sub").mkdir()
    (d / "sub" / "data.csv").write_text("1,2\n")
    before = _digest(d)
    rc, err = _embed(run_cli, good_raster, analytic_bundle, d)
    assert rc != 0
    assert "not an embedding store" in err and "never replaces" in err
    assert _digest(d) == before
    assert not (tmp_path / "d.partial").exists() and leftovers(tmp_path) == []


def test_out_naming_the_input_raster_is_refused(run_cli, analytic_bundle, tmp_path):
    src = write_raster(tmp_path / "scene.tif", random_uint8())
    before = src.read_bytes()
    rc, err = _embed(run_cli, src, analytic_bundle, src)
    assert rc != 0 and "input raster" in err
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_out_naming_another_file_is_refused(run_cli, analytic_bundle, good_raster, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    rc, err = _embed(run_cli, good_raster, analytic_bundle, other)
    assert rc != 0 and "is a file" in err
    assert other.read_text() == "keep me"


def test_an_empty_folder_and_an_old_store_are_valid_targets(
    run_cli, analytic_bundle, good_raster, tmp_path
):
    empty = tmp_path / "empty.store"
    empty.mkdir()
    assert _embed(run_cli, good_raster, analytic_bundle, empty)[0] == 0
    assert open_store(empty).valid.all()
    # re-embedding over a finished store (another source) replaces it only once complete
    other = write_raster(tmp_path / "other.tif", random_uint8(seed=5))
    assert _embed(run_cli, other, analytic_bundle, empty)[0] == 0
    assert len(open_store(empty).source_fingerprint) == 64


def test_a_foreign_partial_folder_is_never_deleted(analytic_bundle, tmp_path):
    from engine.grid import TileGrid

    grid = TileGrid("EPSG:32633", 10.0, 16, 16, 0, 0, 4, 4)
    part = tmp_path / "x.store.partial"
    part.mkdir()
    (part / "mine.txt").write_text("not UniGeo's")
    with pytest.raises(StoreError, match="not an unfinished"):
        EmbeddingStore.create(tmp_path / "x.store", grid, 8, "h", "f")
    assert (part / "mine.txt").read_text() == "not UniGeo's"
    assert not StoreLock.file_for(tmp_path / "x.store").exists()  # the lock was released


def test_a_store_being_written_refuses_a_second_writer(
    run_cli, analytic_bundle, good_raster, tmp_path
):
    out = tmp_path / "c.store"
    lock = StoreLock.acquire(out)  # what a running embed holds
    try:
        rc, err = _embed(run_cli, good_raster, analytic_bundle, out)
        assert rc != 0 and "another UniGeo job" in err and f"pid {os.getpid()}" in err
        assert not out.exists() and not (tmp_path / "c.store.partial").exists()
    finally:
        lock.release()
    assert _embed(run_cli, good_raster, analytic_bundle, out)[0] == 0
    assert not StoreLock.file_for(out).exists()


def test_two_writers_in_one_process_exclude_each_other(tmp_path):
    from engine.grid import TileGrid

    grid = TileGrid("EPSG:32633", 10.0, 16, 16, 0, 0, 4, 4)
    first = EmbeddingStore.create(tmp_path / "s.store", grid, 8, "h", "f", block_tiles=2)
    with pytest.raises(StoreError, match="another UniGeo job"):
        EmbeddingStore.resume(tmp_path / "s.store", grid, 8, "h", "f", block_tiles=2)
    first.done[:] = True
    final = first.finalize()
    assert final.complete
    again = EmbeddingStore.create(tmp_path / "s.store", grid, 8, "h", "f2", block_tiles=2)
    again.close()


def _cli(*argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_concurrent_embed_processes_never_destroy_the_store(analytic_bundle, tmp_path):
    """The issue's reproduction: two `embed --block-tiles 8` into one store, started together."""
    src = write_raster(tmp_path / "big.tif", random_uint8(size=1024, seed=3))
    out = tmp_path / "c.store"
    argv = ("embed", str(src), "--model", str(analytic_bundle), "--out", str(out))
    procs = [_cli(*argv, "--block-tiles", "8") for _ in range(2)]
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    ok = [rc == 0 for rc, _ in results]
    assert any(ok), results
    for rc, err in results:
        if rc != 0:  # the loser says why; it never half-writes anything
            assert "another UniGeo job" in err, err
    store = open_store(out)
    assert store.complete and store.valid.all()
    ref = tmp_path / "ref.store"
    assert _cli(*argv[:-1], str(ref)).wait(300) == 0
    np.testing.assert_array_equal(
        np.asarray(store.embeddings), np.asarray(open_store(ref).embeddings)
    )
    assert leftovers(tmp_path) == []


@pytest.fixture()
def small_disk(tmp_path):
    """A 128 KiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()[:80]})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_while_embedding_is_a_clear_error_and_keeps_the_old_store(
    analytic_bundle, tmp_path, small_disk
):
    """The store needs ~256 KiB of memory-mapped arrays on a 128 KiB disk: SIGBUS before."""
    small = write_raster(tmp_path / "small.tif", random_uint8(size=64, seed=1))
    big = write_raster(tmp_path / "big.tif", random_uint8(size=2048, seed=2))
    out = small_disk / "s.store"
    argv = ("--model", str(analytic_bundle), "--out", str(out))
    first = _cli("embed", str(small), *argv)
    assert first.wait(120) == 0, first.stderr.read()
    before = _digest(out)
    proc = _cli("embed", str(big), *argv)
    rc, err = proc.wait(300), proc.stderr.read()
    assert rc > 0, (rc, err)  # an error exit, not a signal (SIGBUS is rc -7)
    assert "not enough disk space" in err and "MB" in err
    assert _digest(out) == before and open_store(out).complete
    assert not (small_disk / "s.store.partial").exists()


def test_disk_reservation_fails_cleanly_when_the_space_goes_away(tmp_path, small_disk):
    """The free-space check passed, then the disk filled: fallocate's ENOSPC, not a SIGBUS."""
    from engine.store.guard import reserve

    f = small_disk / "a.npy"
    f.write_bytes(b"")
    os.truncate(f, 1 << 20)  # sparse, as numpy's open_memmap makes it
    with pytest.raises(StoreError, match="not enough disk space"):
        reserve([(f, 1 << 20)])


def test_check_target_generated_cases(tmp_path):
    """Every kind of existing path: only nothing, an empty folder or a store may be a target."""
    cases = {
        "file": lambda p: p.write_text("x"),
        "folder with a file": lambda p: (p.mkdir(), (p / "a").write_text("x")),
        "folder with a hidden file": lambda p: (p.mkdir(), (p / ".keep").write_text("")),
        "folder with an empty sub-folder": lambda p: (p.mkdir(), (p / "s").mkdir()),
        "symlink to a folder": lambda p: (tmp_path / "real").mkdir()
        or p.symlink_to(tmp_path / "real"),
        "fifo": lambda p: os.mkfifo(p),
    }
    for name, make in cases.items():
        p = tmp_path / name.replace(" ", "_")
        make(p)
        with pytest.raises(StoreError):
            check_target(p)
    ok = tmp_path / "ok"
    check_target(ok)  # absent
    ok.mkdir()
    check_target(ok)  # empty


def _externalise(bundle: Path, tower: str = "aerial.onnx") -> Path:
    """Move the tower's initializers into an external-data file beside it; return that file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(bundle / tower)
    # the float weight matrices become initializers (as an exporter writes them), which ONNX
    # then stores externally; shape-defining constants (axes) stay in the graph
    for node in [n for n in model.graph.node if n.op_type == "Constant"]:
        value = numpy_helper.to_array(node.attribute[0].t)
        if value.dtype == np.float32 and value.ndim == 2:
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            model.graph.node.remove(node)
    onnx.save_model(
        model, bundle / tower, save_as_external_data=True, all_tensors_to_one_file=True,
        location=f"{tower}.data", size_threshold=0,
    )  # fmt: skip
    return bundle / f"{tower}.data"


def test_changed_external_weights_change_the_model_hash_and_reembed(
    run_cli, bundle_copy, good_raster, tmp_path
):
    """Issue 16 item 5: weights in an ONNX external-data file were not hashed; a store made
    with the old weights was silently reused after they changed."""
    from engine.model import UniGeoModel
    from engine.model.bundle import load_bundle

    data = _externalise(bundle_copy)
    h1 = load_bundle(bundle_copy).model_hash
    out = tmp_path / "s.store"
    assert _embed(run_cli, good_raster, bundle_copy, out)[0] == 0
    first = np.asarray(open_store(out).embeddings, dtype=np.float32)
    raw = bytearray(data.read_bytes())
    w = np.frombuffer(bytes(raw), dtype=np.float32).copy()
    w[w != 0] *= -1.0  # flip the sign of every projection weight: a different model
    data.write_bytes(w.tobytes())
    h2 = load_bundle(bundle_copy).model_hash
    assert h1 != h2
    assert _embed(run_cli, good_raster, bundle_copy, out)[0] == 0
    store = open_store(out)
    assert store.model_hash == h2 == UniGeoModel.load(bundle_copy).model_hash
    second = np.asarray(store.embeddings, dtype=np.float32)
    assert not np.allclose(first, second)


def test_external_data_outside_the_bundle_is_refused(bundle_copy, tmp_path):
    import onnx

    from engine.errors import ModelContractError
    from engine.model.bundle import load_bundle

    _externalise(bundle_copy)
    model = onnx.load(bundle_copy / "aerial.onnx", load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.data"
    onnx.save_model(model, bundle_copy / "aerial.onnx")
    (tmp_path / "outside.data").write_bytes(b"\0" * 64)
    with pytest.raises(ModelContractError, match="outside the bundle folder"):
        load_bundle(bundle_copy)


LUND = ROOT.parent / "shared" / "data" / "street_photos" / "lund"


@pytest.mark.skipif(not LUND.is_dir(), reason="needs ../shared/data/street_photos")
@pytest.mark.parametrize("kind", ["png16", "tif_float01", "tif_float255", "tif_int32"])
def test_16_bit_and_float_photos_are_rescaled_not_saturated(kind, tmp_path):
    """Issue 16 item 6: `.convert("RGB")` turned a 16-bit PNG solid white, a float TIFF black."""
    from PIL import Image

    from engine.model.preprocess import prepare_photo

    src = sorted(LUND.glob("*.jpg"))[0]
    gray = np.asarray(Image.open(src).convert("L"), dtype=np.uint8)
    ref_path = tmp_path / "ref.png"
    Image.fromarray(gray, mode="L").save(ref_path)
    g = gray.astype(np.float64)
    if kind == "png16":
        arr, ext = (g * 257).astype(np.uint16), ".png"
    elif kind == "tif_float01":
        arr, ext = (g / 255).astype(np.float32), ".tif"
    elif kind == "tif_float255":
        arr, ext = g.astype(np.float32), ".tif"
    else:
        arr, ext = (g * 257).astype(np.int32), ".tif"
    path = tmp_path / f"photo{ext}"
    Image.fromarray(arr).save(path)
    ref = prepare_photo(ref_path, 64)
    got = prepare_photo(path, 64)
    assert got.std() > 0.05  # not a flat white or black image
    np.testing.assert_allclose(got, ref, atol=1.5 / 255)


def test_photo_with_values_it_cannot_place_is_refused(tmp_path):
    from PIL import Image

    from engine.errors import InputError
    from engine.model.preprocess import prepare_photo

    for name, arr in {
        "neg.tif": np.full((40, 40), -3.0, np.float32),
        "nan.tif": np.full((40, 40), np.nan, np.float32),
        "huge.tif": np.full((40, 40), 1e6, np.float32),
    }.items():
        Image.fromarray(arr).save(tmp_path / name)
        with pytest.raises(InputError, match="photo"):
            prepare_photo(tmp_path / name, 32)


DEFAULT_TOKENIZER = ROOT / "resources" / "models" / "default" / "tokenizer.json"


@pytest.mark.parametrize(
    "text, outcome",
    [
        ("\u200b", "holds no word"),  # zero-width space
        ("\u200b\u200c\ufeff", "holds no word"),
        ("\x01\x02\x7f", "holds no word"),  # control characters
        ("🌊🌊🌊", "knows none"),  # emoji only
        ("a" * 10_000, "knows none"),  # one 10,000-character word
        ("水库 湖泊", "warn"),  # mostly unknown to an English vocabulary
        ("open water", None),
        ("Wetlands next to cropland", None),
    ],
)
def test_text_without_meaning_is_refused_or_warned(text, outcome):
    """Issue 16: meaningless text used to embed silently, all to one vector (cosine 1.0)."""
    from engine.errors import InputError
    from engine.model.preprocess import TextTokenizer, check_text_meaning

    tok = TextTokenizer(DEFAULT_TOKENIZER, 32, lowercase=True)
    if outcome in ("holds no word", "knows none"):
        with pytest.raises(InputError, match=outcome):
            check_text_meaning(tok, text)
    elif outcome == "warn":
        assert "unreliable" in check_text_meaning(tok, text)
    else:
        assert check_text_meaning(tok, text) is None


def test_meaningless_text_query_writes_nothing(run_cli, good_store, analytic_bundle, tmp_path):
    out = tmp_path / "h.tif"
    argv = ["heatmap", good_store, "--model", analytic_bundle, "--out", out]
    rc, err = run_cli([*argv, "--text", "\u200b"])
    # the analytic bundle's word-level tokenizer reads it as one unknown token
    assert rc != 0 and ("holds no word" in err or "knows none" in err) and "\\u200b" in err
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 60000.0])
@pytest.mark.parametrize("command", ["heatmap", "hits", "classify"])
def test_non_finite_store_values_are_refused_not_scored(
    bad, command, run_cli, good_store, analytic_bundle, tmp_path
):
    """Issue 16 item 7: a store holding NaN/Inf gave "cosines" of 143,833 with exit 0."""
    import shutil

    store = Path(shutil.copytree(good_store, tmp_path / "s.store"))
    emb = np.load(store / "embeddings.npy", mmap_mode="r+")
    emb[1, 2, :] = bad  # a damaged tile (a component the query weighs 0 cannot change a score)
    emb.flush()
    del emb
    out = tmp_path / ("o.gpkg" if command == "hits" else "o.tif")
    out.write_bytes(b"an earlier good output")
    argv = [command, store, "--model", analytic_bundle, "--out", out]
    argv += ["--text", "blue"] if command != "classify" else []
    rc, err = run_cli(argv)
    assert rc != 0 and "damaged" in err and "row 1, column 2" in err, err
    assert out.read_bytes() == b"an earlier good output"
    assert leftovers(tmp_path) == []
