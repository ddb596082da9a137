"""A full disk while writing an output: a clear error, and the previous good output intact.

Issue 16 item 3: a full disk during ``heatmap`` replaced a good 149 kB GeoTIFF with a truncated
20 kB one and exited 0, because GDAL reports a failed write through its error handler, not by
raising. Here the CLI runs in a subprocess whose file-size limit (``RLIMIT_FSIZE``, with SIGXFSZ
ignored so a write fails with EFBIG as on a full disk) is below the size of the output, for every
kind of output: heatmap GeoTIFF (in memory and streamed), class GeoTIFF, and hits as GeoPackage,
GeoJSON and Shapefile. Each run must exit 2 with one ``error:`` line, leave the previous output
byte-identical and readable, and leave no temporary file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from engine.grid import TileGrid

ROOT = Path(__file__).resolve().parents[2]
ROWS, COLS = 160, 200  # a heatmap of ~250 kB: far above the limits below

# Runs the CLI under a file-size limit; argv: limit in bytes, "chunked" or "-", then CLI args.
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-long write fails with EFBIG instead
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
if sys.argv[2] == "chunked":
    import engine.search.streaming
    engine.search.streaming.CHUNKED_ABOVE_TILES = 0  # the row-band GeoTIFF writer
from engine.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory, analytic_bundle) -> Path:
    """A 160 x 200-tile store of random unit vectors, embedded "with" the analytic bundle."""
    from engine.model import UniGeoModel
    from engine.store.npy import EmbeddingStore

    with UniGeoModel.load(analytic_bundle) as model:
        dim, model_hash = model.dim, model.model_hash
    grid = TileGrid("EPSG:32633", 10.0, 16, 16, -31_250, 3_125, ROWS, COLS)
    path = tmp_path_factory.mktemp("full_disk") / "wide.store"
    store = EmbeddingStore.create(path, grid, dim, model_hash, "fp-full-disk", block_tiles=COLS)
    rng = np.random.default_rng(11)
    emb = rng.standard_normal((ROWS, COLS, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    valid = rng.random((ROWS, COLS)) > 0.1
    for bid, (r0, c0, nr, nc) in enumerate(store.blocks()):
        store.write_block(
            r0, c0, emb[r0 : r0 + nr, c0 : c0 + nc], valid[r0 : r0 + nr, c0 : c0 + nc]
        )
        store.mark_done(bid)
    store.finalize()
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _args(kind: str, store: Path, bundle: Path, out: Path, text: str) -> list[str]:
    common = [str(store), "--model", str(bundle), "--text", text, "--out", str(out)]
    if kind.startswith("heatmap"):
        return ["heatmap", *common]
    if kind == "classes":
        return ["classify", str(store), "--model", str(bundle), "--out", str(out)]
    return ["hits", *common, "--k", "400", "--min-distance", "0"]


CASES = {
    "heatmap": "heat.tif",
    "heatmap-chunked": "heat.tif",
    "classes": "classes.tif",
    "hits-gpkg": "hits.gpkg",
    "hits-geojson": "hits.geojson",
    "hits-shp": "hits.shp",
}


def _still_reads(path: Path, kind: str) -> None:
    if path.suffix == ".tif":
        with rasterio.open(path) as r:
            assert r.shape == (ROWS, COLS) and r.read().shape[0] in (1, 2)
    else:
        assert pyogrio.read_info(path)["features"] == 400


@pytest.mark.parametrize("kind", list(CASES))
def test_full_disk_keeps_the_previous_output(kind, wide_store, analytic_bundle, tmp_path, run_cli):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / CASES[kind]
    rc, err = run_cli(_args(kind, wide_store, analytic_bundle, out, "water"))
    assert rc == 0, err
    before = _snapshot(out_dir)
    biggest = max(len(b) for b in before.values())
    limit = 8192 if kind == "hits-shp" else biggest // 3  # each Shapefile part is small
    assert biggest > 2 * limit  # the new file cannot fit

    # another query: a new file would differ from the old one in every band and feature
    argv = _args(kind, wide_store, analytic_bundle, out, "trees")
    mode = "chunked" if kind == "heatmap-chunked" else "-"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), mode, *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("error: ") and "nothing was replaced" in lines[-1], lines
    assert Path(CASES[kind]).stem in lines[-1]  # names the file (classes: its confidence part)
    assert _snapshot(out_dir) == before  # byte-identical, and no temporary file is left
    _still_reads(out, kind)
