"""Safety: no unsafe deserialisation or dynamic code in the sources, no network use by the main
engine paths, and no temporary files left in output folders after success or failure."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.reliability.conftest import leftovers

ROOT = Path(__file__).resolve().parents[2]
# Built from pieces so this file does not match its own patterns.
_P = "pick" + "le"
FORBIDDEN = {
    "pickle (de)serialisation": re.compile(rf"\b{_P}\.(loads?|dumps?|Unpickler|Pickler)\b"),
    "numpy pickles": re.compile(r"allow_" + _P + r"\s*=\s*True"),
    "eval/exec of code": re.compile(r"(?<![\w.])(ev" r"al|ex" r"ec)\s*\("),
    "unsafe yaml": re.compile(r"\byaml\.(load|unsafe_load|full_load)\s*\("),
    "shell commands": re.compile(r"shell\s*=\s*True|\bos\.system\s*\("),
}
TORCH_LOAD = re.compile(r"\btorch\.load\s*\(")


def _tracked_python() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [ROOT / f for f in out] + [p for p in (ROOT / "tests" / "reliability").glob("*.py")]
    return sorted({p for p in files if p.is_file()})


def _call_text(text: str, start: int) -> str:
    """The source of the call that opens at ``start`` (up to its closing parenthesis)."""
    depth, i = 0, text.index("(", start)
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return text[start : j + 1]
    return text[start:]


def test_sources_hold_no_unsafe_deserialisation_or_dynamic_code():
    files = _tracked_python()
    assert len(files) > 50  # the scan really ran over the project
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(ROOT)
        for what, pattern in FORBIDDEN.items():
            found += [f"{rel}: {what}: {m.group(0)}" for m in pattern.finditer(text)]
        for m in TORCH_LOAD.finditer(text):
            if "weights_only=True" not in _call_text(text, m.start()):
                found.append(f"{rel}: torch.load without weights_only=True")
    assert found == []


def test_the_scan_catches_what_it_should():
    bad = "x = ev" "al(s)\ny = " + _P + ".loads(b)\nyaml.load(f)\nnp.load(p, allow_" + _P + "=True)"
    hits = [w for w, p in FORBIDDEN.items() if p.search(bad)]
    assert hits == ["pickle (de)serialisation", "numpy pickles", "eval/exec of code", "unsafe yaml"]
    assert not FORBIDDEN["eval/exec of code"].search("model.ev" "al()\ndlg.ex" "ec()")
    call = "torch.load(p,\n  map_location='cpu', weights_only=True)"
    assert "weights_only=True" in _call_text(call, 0)


@pytest.fixture()
def no_network(monkeypatch) -> list[tuple]:
    """Every attempt to open a network connection raises and is recorded."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_main_engine_paths_work_offline(no_network, analytic_bundle, good_raster, tmp_path):
    from engine.classify import land_use as C
    from engine.embed.job import embed_raster
    from engine.model import UniGeoModel
    from engine.raster.gdal_reader import GdalReader
    from engine.raster.tiling import grid_for_raster
    from engine.search import query as Q
    from engine.search.calibration import calibrate
    from engine.search.hits import top_k, write_hits
    from engine.search.similarity import similarity, write_heatmap

    out = tmp_path / "out"
    out.mkdir()
    with UniGeoModel.load(analytic_bundle, providers="cpu") as model:
        with GdalReader(good_raster) as reader:
            grid = grid_for_raster(reader, model.spec("aerial").preprocess)
            store = embed_raster(model, reader, grid, out / "s.store")
        scores = similarity(store, Q.text_query(model, "water").vector())
        assert np.isfinite(scores).all() and np.nanmax(calibrate(scores)) == 100.0
        write_heatmap(out / "heat.tif", store, scores)
        write_hits(out / "hits.gpkg", top_k(store, scores, 3), store.grid.crs)
        result = C.zero_shot(store, model)
        C.write_classification(out / "cls.tif", out / "conf.tif", store, result)
        gps = model.encode_gps([45.0], [15.0])
        assert gps.shape == (1, 8)
    assert no_network == []
    assert sorted(p.name for p in out.iterdir()) == [
        "cls.tif", "conf.tif", "heat.tif", "hits.gpkg", "s.store",
    ]  # fmt: skip
    with rasterio.open(out / "heat.tif") as r:
        assert r.count == 2 and r.crs.to_epsg() == 32633


def test_blocked_network_really_blocks(no_network):
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    assert no_network


# -- temporary files --------------------------------------------------------------------------
def test_failed_writes_leave_no_temporary_files(good_store, analytic_bundle, tmp_path, monkeypatch):
    """Every writer fails midway (the GDAL/OGR write raises): nothing but the old file remains."""
    from osgeo import gdal, ogr

    from engine.classify import land_use as C
    from engine.model import UniGeoModel
    from engine.search.hits import top_k, write_hits
    from engine.search.similarity import similarity, write_heatmap
    from engine.store.npy import EmbeddingStore

    store = EmbeddingStore.open(good_store)
    scores = similarity(store, np.ones(8, np.float32))
    with UniGeoModel.load(analytic_bundle) as model:
        result = C.zero_shot(store, model)
    (tmp_path / "heat.tif").write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(gdal.Band, "WriteArray", boom)
    monkeypatch.setattr(ogr.Layer, "CreateFeature", boom)
    for call in (
        lambda: write_heatmap(tmp_path / "heat.tif", store, scores),
        lambda: C.write_classification(tmp_path / "c.tif", tmp_path / "f.tif", store, result),
        lambda: write_hits(tmp_path / "hits.gpkg", top_k(store, scores, 2), store.grid.crs),
    ):
        with pytest.raises(OSError, match="disk full"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.tif"]
    assert (tmp_path / "heat.tif").read_bytes() == b"old"


def test_successful_cli_runs_leave_only_their_outputs(
    good_store, analytic_bundle, tmp_path, run_cli
):
    m = analytic_bundle
    assert run_cli(["heatmap", good_store, "--model", m, "--text", "water", "--out",
                    tmp_path / "h.tif"])[0] == 0  # fmt: skip
    assert run_cli(["hits", good_store, "--model", m, "--text", "water", "--k", "3", "--out",
                    tmp_path / "h.gpkg"])[0] == 0  # fmt: skip
    assert run_cli(["classify", good_store, "--model", m, "--out", tmp_path / "c.tif"])[0] == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.tif", "c_confidence.tif", "h.gpkg", "h.tif"]
    assert leftovers(tmp_path) == []
