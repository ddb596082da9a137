"""Issue 16, the rest: bad input values as one clear line, and the smaller defects.

- CRS strings that are invalid or unknown, for each option that takes one (generated too);
- store metadata of the wrong type or range (``dim: "abc"``, ``block_tiles: 0``; generated);
- region and example polygons with NaN or infinite coordinates;
- file names that are not valid UTF-8, and an ASCII stdout;
- a raster placed by ground control points (needs gdalwarp, not gdal_edit), a COG in a zip
  read through ``/vsizip/``, and SIGTERM during ``hits`` and ``embed`` (a clean cancellation).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InputError, StoreError
from tests.reliability.conftest import leftovers, one_error_line, random_uint8, write_raster

ROOT = Path(__file__).resolve().parents[2]


# -- CRS strings --------------------------------------------------------------------------------
BAD_CRS = ["EPSG:99999", "hello world", "EPSG:", "+proj=nonsense", "urn:ogc:def:crs:EPSG::0"]


@pytest.mark.parametrize("crs", BAD_CRS)
@pytest.mark.parametrize("option", ["--grid-crs", "--extent-crs", "--point-crs"])
def test_unknown_crs_strings_are_one_line(
    option, crs, run_cli, analytic_bundle, good_raster, good_store, tmp_path
):
    m = ["--model", analytic_bundle]
    if option == "--point-crs":
        args = ["heatmap", good_store, *m, "--point", "500100,4999800", "--out", tmp_path / "h.tif"]
    else:
        args = ["embed", good_raster, *m, "--out", tmp_path / "s.store"]
        args += ["--extent", "500000,4999400,500300,5000000"] if option == "--extent-crs" else []
    line = one_error_line(*run_cli([*args, option, crs]))
    assert f"'{crs}' is not a CRS GDAL/PROJ knows" in line, line
    assert list(tmp_path.iterdir()) == []


def test_grid_crs_in_degrees_or_feet_is_refused(run_cli, analytic_bundle, good_raster, tmp_path):
    """Tiles are sized in metres: a grid in degrees made 10-degree pixels, one in feet 10 ft."""
    for crs in ("EPSG:4326", "EPSG:2263"):
        args = ["embed", good_raster, "--model", analytic_bundle, "--out", tmp_path / "s.store"]
        line = one_error_line(*run_cli([*args, "--grid-crs", crs]))
        assert "not a projected CRS in metres" in line
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=30))
def test_any_crs_text_is_accepted_or_one_input_error(text):
    from engine.geo import crs as C

    try:
        C.check_crs(text)
    except InputError as e:
        assert "not a CRS" in str(e) or "a CRS is missing" in str(e)


# -- store metadata -----------------------------------------------------------------------------
def _store_with(good_store: Path, folder: Path, edit) -> Path:
    s = Path(shutil.copytree(good_store, folder / "s.store"))
    info = json.loads((s / "store.json").read_text())
    edit(info)
    (s / "store.json").write_text(json.dumps(info))
    return s


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("dim", "abc", "dim must be a whole number"),
        ("dim", 8.0, "dim must be a whole number"),
        ("dim", 10**9, "dim must be a whole number"),
        ("block_tiles", 0, "block_tiles must be a whole number >= 1"),
        ("block_tiles", None, "block_tiles must be a whole number >= 1"),
        ("format_version", "1", "format_version must be"),
        ("model_hash", 5, "model_hash must be a non-empty text"),
        ("meta", "fast", "meta must be an object"),
        ("grid.rows", 1.5, "grid.rows must be a whole number"),
        ("grid.gsd", -10, "grid.gsd must be a positive number"),
        ("grid.stride_px", 99, "grid.stride_px must be a whole number from 1 to tile_px"),
        ("grid.crs", "EPSG:99999", "is not a CRS GDAL/PROJ knows"),
    ],
)
def test_store_metadata_of_wrong_type_or_range(
    key, value, fragment, run_cli, good_store, analytic_bundle, tmp_path
):
    def edit(info):
        *parents, last = key.split(".")
        target = info
        for p in parents:
            target = target[p]
        target[last] = value

    s = _store_with(good_store, tmp_path, edit)
    out = tmp_path / "h.tif"
    out.write_bytes(b"an earlier heatmap")
    line = one_error_line(*run_cli(["heatmap", s, "--model", analytic_bundle, "--text", "water",
                                    "--out", out]))  # fmt: skip
    assert "store.json is damaged" in line and fragment in line and "embed" in line, line
    assert out.read_bytes() == b"an earlier heatmap"


def test_store_json_nested_too_deep_is_a_store_error(good_store, tmp_path):
    from engine.store import open_store

    s = Path(shutil.copytree(good_store, tmp_path / "s.store"))
    (s / "store.json").write_text("[" * 100_000)
    with pytest.raises(StoreError, match="unreadable"):
        open_store(s)


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip
_KEYS = ["format_version", "dim", "block_tiles", "n_blocks", "model_hash", "source_fingerprint",
         "complete", "meta", "bands", "grid"] + [f"grid.{k}" for k in (
         "crs", "gsd", "tile_px", "stride_px", "row0", "col0", "rows", "cols", "origin_x")]  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _values), min_size=1, max_size=3))
def test_any_store_json_mutation_opens_or_is_a_store_error(good_store, edits):
    """Whatever is put into store.json, opening and scoring the store gives only StoreError."""
    from engine.search.similarity import similarity
    from engine.store import open_store

    with tempfile.TemporaryDirectory() as d:
        s = Path(shutil.copytree(good_store, Path(d) / "s.store"))
        info = json.loads((s / "store.json").read_text())
        for key, value in edits:
            *parents, last = key.split(".")
            target = info
            for p in parents:
                target = target.get(p) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target[last] = value
        (s / "store.json").write_text(json.dumps(info))
        try:
            store = open_store(s)
        except StoreError:
            return
        # accepted: the values are of the right types, and the store scores normally
        assert isinstance(store.dim, int) and store.dim >= 1 and store.block_tiles >= 1
        q = np.ones(store.dim, np.float32) / np.sqrt(store.dim)
        scores = similarity(store, q)
        assert scores.shape == store.grid.shape


# -- polygons with NaN or infinite coordinates ---------------------------------------------------
def _polygon_file(path: Path, bad: float, corner: int) -> Path:
    """One labelled UTM 33N square over the store whose ``corner`` has x = ``bad``."""
    from osgeo import ogr, osr

    if path.suffix == ".geojson":  # by hand: GDAL writes a null geometry for NaN coordinates
        ring = [[500000, 4999400], [500300, 4999400], [500300, 5000000], [500000, 5000000]]
        ring[corner][0] = bad
        ring.append(list(ring[0]))
        feat = {"type": "Feature", "properties": {"class": "water"},
                "geometry": {"type": "Polygon", "coordinates": [ring]}}  # fmt: skip
        crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
        doc = {"type": "FeatureCollection", "crs": crs, "features": [feat]}
        path.write_text(json.dumps(doc))  # NaN, Infinity, -Infinity tokens, as JS writes them
        return path
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    lyr = ds.CreateLayer("r", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("class", ogr.OFTString))
    g = ogr.CreateGeometryFromWkt(
        "POLYGON ((500000 4999400, 500300 4999400, 500300 5000000, 500000 5000000, "
        "500000 4999400))"
    )
    g.GetGeometryRef(0).SetPoint_2D(corner, bad, 4999400.0)
    f = ogr.Feature(lyr.GetLayerDefn())
    f.SetGeometry(g)
    f.SetField("class", "water")
    lyr.CreateFeature(f)
    ds = None
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
@pytest.mark.parametrize("command", ["heatmap --region", "classify --examples"])
def test_polygons_with_non_finite_coordinates(
    bad, suffix, command, run_cli, good_store, analytic_bundle, tmp_path
):
    poly = _polygon_file(tmp_path / f"r{suffix}", float(bad), corner=1)
    out = tmp_path / "o.tif"
    out.write_bytes(b"earlier")
    cmd, flag = command.split()
    args = [cmd, good_store, "--model", analytic_bundle, flag, poly, "--out", out]
    line = one_error_line(*run_cli(args))
    assert "non-finite" in line or "not finite" in line or "NaN" in line, line
    assert out.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- names that are not valid UTF-8, and an ASCII stdout ------------------------------------------
NOT_UTF8 = os.fsdecode(b"r\xe9sultat\xff")  # Latin-1 bytes: not valid UTF-8


@pytest.mark.parametrize("suffix", [".tif", ".gpkg", ".geojson", ".shp", ".store", "-classes.tif"])
def test_outputs_named_in_another_encoding_are_written(
    suffix, run_cli, good_store, good_raster, analytic_bundle, tmp_path
):
    """GDAL's bindings refused such names ('RuntimeError: not a string'); now they are written
    under exactly those bytes, and their provenance keeps the name as \\x escapes."""
    from osgeo import gdal, ogr

    out = tmp_path / f"{NOT_UTF8}{suffix}"
    m = ["--model", analytic_bundle]
    if suffix == ".store":
        args = ["embed", good_raster, *m, "--out", out]
    elif suffix == "-classes.tif":
        args = ["classify", good_store, *m, "--out", out]
    elif suffix == ".tif":
        args = ["heatmap", good_store, *m, "--text", "water", "--out", out]
    else:
        args = ["hits", good_store, *m, "--text", "water", "--out", out]
    rc, err = run_cli(args)
    assert rc == 0, err
    assert os.fsencode(out.name) in [os.fsencode(p.name) for p in tmp_path.iterdir()]
    raw = os.fsencode(out)
    if suffix.endswith(".tif"):
        assert gdal.Open(raw).RasterXSize == 4
    elif suffix != ".store":
        ds = ogr.Open(raw)  # held: a layer does not keep its dataset alive
        assert ds.GetLayer(0).GetFeatureCount() == 4
    assert leftovers(tmp_path) == []


def test_a_store_named_in_another_encoding_is_queried(
    run_cli, good_store, analytic_bundle, tmp_path
):
    s = Path(shutil.copytree(good_store, tmp_path / f"{NOT_UTF8}.store"))
    out = tmp_path / "h.tif"
    assert (
        run_cli(["heatmap", s, "--model", analytic_bundle, "--text", "water", "--out", out])[0] == 0
    )
    from osgeo import gdal

    assert "\\xe9" in gdal.Open(str(out)).GetMetadataItem("UNIGEO_STORE")


def test_a_raster_named_in_another_encoding_is_refused_by_name(
    run_cli, good_raster, analytic_bundle, tmp_path
):
    src = Path(shutil.copy(good_raster, tmp_path / f"{NOT_UTF8}.tif"))
    line = one_error_line(*run_cli(["embed", src, "--model", analytic_bundle,
                                    "--out", tmp_path / "s.store"]))  # fmt: skip
    assert "not valid UTF-8" in line and "rename the file" in line and "\\xe9" in line, line
    assert not (tmp_path / "s.store").exists() and leftovers(tmp_path) == []


def _cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def test_ascii_stdout_never_crashes(good_store, good_raster, analytic_bundle, tmp_path):
    """'×' in the grid line, a non-ASCII query and a non-UTF-8 output name, on an ASCII stdout:
    each printed as escapes instead of a UnicodeEncodeError traceback."""
    py = [sys.executable, "-m", "engine"]
    m = ["--model", str(analytic_bundle)]
    runs = [
        ["embed", str(good_raster), *m, "--out", str(tmp_path / "s.store")],
        ["heatmap", str(good_store), *m, "--text", "blue water über Äckern", "--out",
         str(tmp_path / "h.tif")],
        ["hits", str(good_store), *m, "--text", "water", "--out", str(tmp_path / f"{NOT_UTF8}.gpkg")],
    ]  # fmt: skip
    for args in runs:
        r = subprocess.run([*py, *args], cwd=ROOT, env=_cli_env(PYTHONIOENCODING="ascii"),
                           capture_output=True)  # fmt: skip
        assert r.returncode == 0, r.stderr.decode("ascii", "replace")[-2000:]
        assert b"Traceback" not in r.stderr
    assert (tmp_path / "s.store" / "store.json").is_file() and (tmp_path / "h.tif").is_file()


# -- the smaller defects ------------------------------------------------------------------------
def test_raster_placed_by_gcps_is_told_to_use_gdalwarp(run_cli, analytic_bundle, tmp_path):
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "gcp.tif"), 64, 64, 4)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    gcps = [gdal.GCP(500000 + x * 10, 5000000 - y * 10, 0, x, y) for x in (0, 64) for y in (0, 64)]
    ds.SetGCPs(gcps, srs.ExportToWkt())
    ds = None
    line = one_error_line(*run_cli(["embed", tmp_path / "gcp.tif", "--model", analytic_bundle,
                                    "--out", tmp_path / "s.store"]))  # fmt: skip
    assert "ground control points" in line and "gdalwarp" in line and "gdal_edit" not in line


def test_cog_inside_a_zip_is_read_through_vsizip(run_cli, analytic_bundle, good_raster, tmp_path):
    from osgeo import gdal

    from engine.store import open_store

    gdal.Translate(str(tmp_path / "cog.tif"), str(good_raster), format="COG")
    with zipfile.ZipFile(tmp_path / "scene.zip", "w") as z:
        z.write(tmp_path / "cog.tif", "inner/cog.tif")
    vsi = f"/vsizip/{tmp_path / 'scene.zip'}/inner/cog.tif"  # '/vsizip//tmp/...': two slashes
    m = ["--model", analytic_bundle]
    assert run_cli(["embed", vsi, *m, "--out", tmp_path / "zip.store"])[0] == 0
    assert run_cli(["embed", tmp_path / "cog.tif", *m, "--out", tmp_path / "plain.store"])[0] == 0
    a, b = open_store(tmp_path / "zip.store"), open_store(tmp_path / "plain.store")
    np.testing.assert_array_equal(np.asarray(a.embeddings), np.asarray(b.embeddings))
    assert a.valid.all()
    # a wrong path inside the archive is a clear error, not "does not exist" for a real file
    line = one_error_line(*run_cli(["embed", vsi.replace("cog", "nope"), *m, "--out",
                                    tmp_path / "x.store"]))  # fmt: skip
    assert "GDAL finds no file at /vsizip/" in line


# Runs the CLI with the writer stopped at a known point (a marker file tells the test), so that
# SIGTERM arrives while the output is being written; argv: marker, then CLI args.
STOPPED = """
import sys, time
from pathlib import Path
marker = Path(sys.argv[1])
import engine.geo.vector as V
def verify(*a, **k):
    marker.write_text("writing")
    time.sleep(120)
V._verify = verify
import engine.store.npy as S
real_done = S.EmbeddingStore.mark_done
def mark_done(self, block_id):
    real_done(self, block_id)
    marker.write_text("block done")
    time.sleep(120)
S.EmbeddingStore.mark_done = mark_done
from engine.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _stopped(marker: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", STOPPED, str(marker), *args], cwd=ROOT,
                            env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _terminate_at(proc: subprocess.Popen, marker: Path) -> tuple[int, str]:
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 120, "the run never reached the write"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    return rc, proc.stderr.read().decode()


def test_sigterm_during_hits_cleans_up_and_keeps_the_earlier_output(
    run_cli, good_store, analytic_bundle, tmp_path
):
    """SIGTERM used to end the process at once, leaving the hidden staging folder
    (``.hits.gpkg.xxxx/``) beside the output; now it unwinds like Ctrl+C."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "hits.gpkg"
    args = ["hits", str(good_store), "--model", str(analytic_bundle), "--out", str(out)]
    assert run_cli([*args, "--text", "water"])[0] == 0
    before = out.read_bytes()
    rc, err = _terminate_at(_stopped(tmp_path / "m", *args, "--text", "trees"), tmp_path / "m")
    assert rc == 143, err
    assert "terminated: no output was written or changed" in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in out_dir.iterdir()) == ["hits.gpkg"]  # no hidden leftovers


def test_sigterm_during_embed_keeps_a_resumable_store_and_frees_the_lock(analytic_bundle, tmp_path):
    from engine.store import open_store
    from engine.store.guard import StoreLock

    src = write_raster(tmp_path / "big.tif", random_uint8(size=1024, seed=4))
    out = tmp_path / "s.store"
    args = ["embed", str(src), "--model", str(analytic_bundle), "--out", str(out)]
    rc, err = _terminate_at(_stopped(tmp_path / "m", *args, "--block-tiles", "8"), tmp_path / "m")
    assert rc == 143 and "terminated: a resumable partial store is kept" in err, err
    assert (tmp_path / "s.store.partial").is_dir() and not out.exists()
    assert not StoreLock.file_for(out).exists()  # released: the rerun is not "another job"
    r = subprocess.run([sys.executable, "-m", "engine", *args, "--block-tiles", "8"], cwd=ROOT,
                       env=_cli_env(), capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert open_store(out).valid.all() and leftovers(tmp_path) == []
