"""Every output kind x every fault kind: one clear error line, and what was there before intact.

Issue 16, "clear errors, never a traceback (fix the class)": a read-only output folder, an output
path that is a folder, and other system errors surfaced as raw ``OSError`` tracebacks from
``embed``, ``heatmap``, ``hits`` and ``classify``. The cases here are generated: each output kind
(a store, a heatmap in memory and streamed, hits as GeoPackage, GeoJSON and Shapefile, a class
map, an ANN index) meets each fault kind (a read-only folder, a folder or a file in the way, a
name too long for the system, and the system refusing the write with each of several errnos at
the start or at the final move). Each run must exit 2 with one ``error:`` line that names the
output, says why and what to do, and leave the earlier output byte-identical and no temporary
file (hidden ones included).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.reliability.conftest import leftovers, one_error_line, random_uint8, write_raster

KINDS = {  # kind -> output name (for index: the store whose ann/ folder is written)
    "embed": "s.store",
    "heatmap": "h.tif",
    "heatmap-chunked": "h.tif",
    "hits-gpkg": "h.gpkg",
    "hits-geojson": "h.geojson",
    "hits-shp": "h.shp",
    "classify": "c.tif",
    "index": "s.store",
}
ERRNOS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EFBIG)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, analytic_bundle) -> dict[str, Path]:
    """Two rasters, the store of the first, and the bundle."""
    from engine.cli.main import main

    d = tmp_path_factory.mktemp("fault_inputs")
    a = write_raster(d / "a.tif", random_uint8(size=64, seed=21))
    b = write_raster(d / "b.tif", random_uint8(size=64, seed=22))
    store = d / "in.store"
    assert main(["embed", str(a), "--model", str(analytic_bundle), "--out", str(store)]) == 0
    return {"a": a, "b": b, "store": store, "bundle": analytic_bundle}


def argv(kind: str, out: Path, inputs: dict[str, Path], variant: int) -> list[str]:
    """The CLI call writing ``out``; variant 1 differs from 0 (another raster, another query)."""
    m = ["--model", str(inputs["bundle"])]
    if kind == "embed":
        return ["embed", str(inputs["ab"[variant]]), *m, "--out", str(out)]
    if kind == "index":
        return ["index", str(out), "--kind", ["flat", "ivf"][variant], "--nlist", "2"]
    query = [*m, "--text", ["water", "trees"][variant], "--out", str(out)]
    if kind.startswith("heatmap"):
        return ["heatmap", str(inputs["store"]), *query]
    if kind.startswith("hits"):
        return ["hits", str(inputs["store"]), *query, "--k", str(3 + variant)]
    return ["classify", str(inputs["store"]), *m, "--out", str(out)] + (
        ["--min-confidence", "0.9"] if variant else []
    )


@pytest.fixture()
def run_kind(run_cli, monkeypatch):
    """``run(kind, argv)``: the CLI in this process (streamed heatmaps forced for *-chunked)."""

    def run(kind: str, args: list[str]) -> tuple[int, str]:
        import engine.search.streaming

        with monkeypatch.context() as mp:
            if kind == "heatmap-chunked":
                mp.setattr(engine.search.streaming, "CHUNKED_ABOVE_TILES", 0)
            return run_cli(args)

    return run


def make_earlier(kind: str, folder: Path, inputs: dict[str, Path], run_kind) -> Path:
    """Write ``kind``'s output into ``folder`` once (variant 0): the earlier good output."""
    out = folder / KINDS[kind]
    if kind == "index":
        shutil.copytree(inputs["store"], out)
    rc, err = run_kind(kind, argv(kind, out, inputs, 0))
    assert rc == 0, err
    return out


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_read_only_output_folder(kind, inputs, run_kind, frozen):
    folder, freeze = frozen
    make_earlier(kind, folder, inputs, run_kind)
    before = digest(folder)
    freeze()
    out = folder / KINDS[kind]
    line = one_error_line(*run_kind(kind, argv(kind, out, inputs, 1)))
    assert "cannot write" in line and str(out) in line, line
    assert "Read-only file system" in line or "Permission denied" in line, line
    assert "choose another" in line, line  # what to do
    assert digest(folder) == before


FAULTS = ("folder in the way", "file as a parent", "name too long")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "index"])
def test_paths_that_cannot_be_outputs(kind, fault, inputs, run_kind, tmp_path):
    """An output path that is a folder, lies under a file, or is too long: refused by name."""
    name = KINDS[kind]
    if fault == "folder in the way":
        out = tmp_path / name
        out.mkdir()
        (out / "thesis.docx").write_text("four years of work")
        expect = "not an embedding store" if kind == "embed" else "is a folder, not a file"
    elif fault == "file as a parent":
        (tmp_path / "notes.txt").write_text("keep me")
        out = tmp_path / "notes.txt" / name
        expect = "notes.txt is a file, not a folder"
    else:
        out = tmp_path / ("x" * 300 + name)
        expect = "too long"
    before = digest(tmp_path)
    line = one_error_line(*run_kind(kind, argv(kind, out, inputs, 0)))
    assert expect in line and (out.name[:40] in line), line
    assert digest(tmp_path) == before
    assert leftovers(tmp_path) == []


def _failing(code: int, real):
    """A stand-in for ``real`` that raises OSError(``code``) naming its first argument."""

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(args[0]) if args else None)

    fail.real = real
    return fail


@pytest.mark.parametrize("point", ["start", "final move"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_system_refuses_the_write(kind, point, inputs, run_kind, tmp_path, monkeypatch):
    """The system refuses a write (errno cycled over full disk, I/O error, quota, permission,
    read-only, file too large): at the first write, or at the final move over the target."""
    code = ERRNOS[(list(KINDS).index(kind) * 2 + (point == "final move")) % len(ERRNOS)]
    out = make_earlier(kind, tmp_path, inputs, run_kind)
    before = digest(tmp_path)
    with monkeypatch.context() as mp:
        if point == "start":  # where each writer first touches the disk
            mp.setattr(tempfile, "mkdtemp", _failing(code, tempfile.mkdtemp))
            mp.setattr(tempfile, "mkstemp", _failing(code, tempfile.mkstemp))
            mp.setattr("engine.store.guard.open", _failing(code, open), raising=False)
        else:
            mp.setattr(os, "replace", _failing(code, os.replace))
        rc, err = run_kind(kind, argv(kind, out, inputs, 1))
    line = one_error_line(rc, err)
    # names the output (a Shapefile: the part that failed, h.cpg; a class map: its staged copy)
    named = re.search(rf"{re.escape(str(out.parent))}/\S*{re.escape(out.stem)}\.", line)
    assert os.strerror(code) in line and named, line
    after = digest(tmp_path)
    for name, sha in before.items():  # every earlier file is still there, byte-identical
        assert after.get(name) == sha, name
    new = [n for n in after if n not in before and not n.startswith(f"{out.name}.partial")]
    assert new == [], new
    left = [p for p in leftovers(tmp_path) if not p.startswith(f"{out.name}.partial")]
    assert left == [], left  # an embed keeps its resumable .partial store; nothing else stays
    if (tmp_path / f"{out.name}.partial").exists():  # and the rerun finishes it
        rc, err = run_kind(kind, argv(kind, out, inputs, 1))
        assert rc == 0, err
        assert leftovers(tmp_path) == []
