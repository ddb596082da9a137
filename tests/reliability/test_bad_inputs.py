"""The bad-input catalogue: every case gives a specific domain error and leaves no partial file.

Each case runs through the CLI (``engine.cli.main`` returns 2 and prints ``error: ...``) or the
Python API, then checks the output folder for leftovers. docs/RELIABILITY.md lists every case.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine
from PIL import Image

from engine.errors import InputError, ModelContractError, RasterInputError, StoreError
from tests.fixtures.analytic_bundle import BREAKAGES, break_bundle, make_analytic_bundle
from tests.reliability.conftest import leftovers, random_uint8, write_raster

GEO = "EPSG:4326"


def _raster_case(name: str, tmp: Path) -> Path:
    """Write the bad raster of case ``name`` into ``tmp``."""
    p = tmp / f"{name}.tif"
    if name == "no_crs":
        return write_raster(p, random_uint8(), crs=None)
    if name == "float_nodata_only":
        return write_raster(p, np.full((4, 64, 64), -9999, np.float32), nodata=-9999)
    if name == "two_bands":  # three would do: the bundle's aerial tower masks a missing NIR
        return write_raster(p, random_uint8(2))
    if name == "seven_bands":
        return write_raster(p, random_uint8(7))
    if name == "complex":
        return write_raster(p, random_uint8().astype(np.complex64))
    if name == "huge_extent":
        return write_raster(p, random_uint8(), transform=Affine(1000.0, 0, 5e5, 0, -1000.0, 5e6))
    if name == "antimeridian_4326":  # 179.5 .. -179.5 written as 179.5 .. 180.5
        return write_raster(p, random_uint8(4, 100), GEO, Affine(0.01, 0, 179.5, 0, -0.01, 45.0))
    if name == "random_bytes":
        p.write_bytes(np.random.default_rng(0).bytes(5000))
        return p
    if name == "truncated_tiff":
        good = write_raster(tmp / "whole.tif", random_uint8())
        p.write_bytes(good.read_bytes()[:2000])
        return p
    if name == "missing_file":
        return p
    raise AssertionError(name)


RASTER_CASES = [
    ("no_crs", (), "has no CRS; assign one"),
    ("float_nodata_only", (), "holds no valid pixels (all no data)"),
    ("two_bands", (), "the model needs 4 band(s)"),
    ("seven_bands", (), "Pick 4 band(s) in the model's order"),
    ("complex", (), "unsupported data type complex64"),
    ("huge_extent", ("--max-tiles", "1000"), "the extent needs 160,000 tiles (> 1,000)"),
    ("antimeridian_4326", (), "extends past the antimeridian"),
    ("random_bytes", (), "is not a raster GDAL can read"),
    ("truncated_tiff", (), "(truncated or corrupt file?)"),
    ("missing_file", (), "does not exist"),
]


@pytest.mark.parametrize(
    ("case", "extra", "fragment"), RASTER_CASES, ids=[c[0] for c in RASTER_CASES]
)
def test_bad_raster_via_cli(case, extra, fragment, analytic_bundle, tmp_path, run_cli):
    src = _raster_case(case, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    rc, err = run_cli(["embed", src, "--model", analytic_bundle, "--out", out / "s.store", *extra])
    assert rc == 2 and "error: " in err and fragment in err
    assert list(out.iterdir()) == []  # neither a store nor a .partial


def test_bad_bands_selection_via_api(good_raster):
    from engine.raster.gdal_reader import GdalReader

    with pytest.raises(RasterInputError, match=r"bands=\[0, 9\] is invalid; the raster has bands"):
        GdalReader(good_raster, bands=[0, 9])
    with pytest.raises(RasterInputError, match="scale must be a positive number"):
        GdalReader(good_raster, scale=-1.0)


def test_extent_outside_raster(analytic_bundle, good_raster, tmp_path, run_cli):
    argv = ["embed", good_raster, "--model", analytic_bundle, "--out", tmp_path / "s.store"]
    rc, err = run_cli([*argv, "--extent", "0,0,10,10"])
    assert rc == 2 and "does not overlap the raster" in err
    rc, err = run_cli([*argv, "--extent", "1,2,3"])
    assert rc == 2 and "--extent must be 4 comma-separated numbers" in err
    assert leftovers(tmp_path) == [] and not (tmp_path / "s.store").exists()


def test_utm_raster_next_to_the_antimeridian_embeds_fully(analytic_bundle, tmp_path, run_cli):
    """A UTM 60N raster reaching east of 180° is tiled in its own CRS: every tile is valid."""
    from engine.store.npy import EmbeddingStore

    # x = 830 km in zone 60 at 45 N lies east of 180°.
    src = write_raster(
        tmp_path / "utm60.tif", random_uint8(), "EPSG:32660", Affine(10, 0, 820_000, 0, -10, 5e6)
    )
    rc, _ = run_cli(["embed", src, "--model", analytic_bundle, "--out", tmp_path / "s.store"])
    store = EmbeddingStore.open(tmp_path / "s.store")
    assert rc == 0 and store.grid.crs == "EPSG:32660" and int(store.valid.sum()) == 16


@pytest.mark.parametrize("size", [1, 8])
def test_tiny_raster_gives_a_store_of_skipped_tiles(size, analytic_bundle, tmp_path, run_cli):
    """Smaller than one tile: one tile, skipped as mostly no data (a valid, empty store)."""
    from engine.store.npy import EmbeddingStore

    src = write_raster(tmp_path / "tiny.tif", random_uint8(4, size))
    rc, _ = run_cli(["embed", src, "--model", analytic_bundle, "--out", tmp_path / "s.store"])
    store = EmbeddingStore.open(tmp_path / "s.store")
    assert rc == 0 and store.grid.n_tiles == 1 and int(store.valid.sum()) == 0
    assert leftovers(tmp_path) == []


def test_uint8_nodata_only_raster_gives_an_all_invalid_store(analytic_bundle, tmp_path, run_cli):
    """uint8 needs no statistics, so an all-nodata file embeds to 0 valid tiles; a heatmap of
    it is all no data (NaN), never made-up scores."""
    src = write_raster(tmp_path / "nd.tif", np.zeros((4, 64, 64), np.uint8), nodata=0)
    store = tmp_path / "s.store"
    rc, _ = run_cli(["embed", src, "--model", analytic_bundle, "--out", store])
    assert rc == 0
    out = tmp_path / "h.tif"
    rc, err = run_cli(
        ["heatmap", store, "--model", analytic_bundle, "--text", "water", "--out", out]
    )
    assert rc == 0, err
    with rasterio.open(out) as r:
        a = r.read()
        assert a.shape == (2, 4, 4) and np.isnan(a).all() and np.isnan(r.nodata)
    assert leftovers(tmp_path) == []


def test_dsm_full_of_nodata(analytic_bundle, tmp_path, run_cli):
    src = write_raster(tmp_path / "dsm.tif", np.full((1, 64, 64), -9999, np.float32), nodata=-9999)
    out = tmp_path / "out"
    out.mkdir()
    rc, err = run_cli(
        ["embed", src, "--model", analytic_bundle, "--modality", "dsm", "--out", out / "d.store"]
    )
    assert rc == 2 and "holds no valid pixels" in err
    assert list(out.iterdir()) == []


# -- queries --------------------------------------------------------------------------------
def _query_case(name: str, tmp: Path) -> list[str]:
    if name in ("photo_not_image", "photo_truncated_jpeg"):
        ok = tmp / "ok.jpg"
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(ok)
        p = tmp / f"{name}.jpg"
        p.write_bytes(b"hello" if name == "photo_not_image" else ok.read_bytes()[:300])
        return ["--photo", str(p)]
    return {
        "text_empty": ["--text", ""],
        "text_blank": ["--text", "   "],
        "gps_nan": ["--gps", "nan,10"],
        "gps_lat_out_of_range": ["--gps", "95,10"],
        "gps_lon_out_of_range": ["--gps", "45,400"],
        "gps_not_numbers": ["--gps", "north,east"],
        "point_outside_store": ["--point", "0,0"],
        "point_nan": ["--point", "nan,nan"],
        "no_query": [],
        "region_missing_file": ["--region", str(tmp / "none.gpkg")],
    }[name]


QUERY_CASES = [
    ("text_empty", "type some text to search for"),
    ("text_blank", "type some text to search for"),
    ("gps_nan", "is not a WGS84 latitude/longitude"),
    ("gps_lat_out_of_range", "(95.0, 10.0) is not a WGS84 latitude/longitude"),
    ("gps_lon_out_of_range", "(45.0, 400.0) is not a WGS84"),
    ("gps_not_numbers", "--gps must be 2 comma-separated numbers"),
    ("point_outside_store", "lies outside the embedded area"),
    ("point_nan", "point (nan, nan) must have finite coordinates"),
    ("no_query", "give a query"),
    ("region_missing_file", "cannot read polygons from"),
    ("photo_not_image", "cannot identify image file"),
    ("photo_truncated_jpeg", "(is it a complete image?)"),
]


@pytest.mark.parametrize(("case", "fragment"), QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_bad_query_via_cli(case, fragment, good_store, analytic_bundle, tmp_path, run_cli):
    out = tmp_path / "h.tif"
    argv = ["heatmap", good_store, "--model", analytic_bundle, "--out", out]
    rc, err = run_cli([*argv, *_query_case(case, tmp_path)])
    assert rc == 2 and "error: " in err and fragment in err, err
    assert not out.exists() and leftovers(tmp_path) == []


def test_very_long_text_is_truncated_not_crashed(good_store, analytic_bundle, tmp_path, run_cli):
    from engine.model import UniGeoModel

    with UniGeoModel.load(analytic_bundle) as model:
        long_vec = model.encode_text(["water " * 5000])
        short_vec = model.encode_text(["water " * 15])
    # the tokenizer keeps the first text_len tokens: 5000 words embed like a short text
    assert long_vec.shape == (1, 8) and np.isfinite(long_vec).all()
    assert float(long_vec[0] @ short_vec[0]) > 0.999
    out = tmp_path / "h.tif"
    argv = ["heatmap", good_store, "--model", analytic_bundle, "--out", out]
    rc, _ = run_cli([*argv, "--text", "water " * 5000])
    assert rc == 0
    with rasterio.open(out) as r:
        assert r.count == 2 and r.crs.to_epsg() == 32633


def test_bad_coordinates_via_api(analytic_bundle):
    from engine.model import UniGeoModel

    with UniGeoModel.load(analytic_bundle) as model:
        for lat, lon in ((float("nan"), 0.0), (0.0, float("inf")), (-91.0, 0.0), (90.5, 0.0)):
            with pytest.raises(InputError, match=r"NaN or infinite|outside \[-90, 90\]"):
                model.encode_gps([lat], [lon])
        with pytest.raises(InputError, match="got 2 latitudes but 1 longitudes"):
            model.encode_gps([1.0, 2.0], [3.0])
        # the Python API wraps longitudes (documented); 181 E is 179 W
        assert np.allclose(model.encode_gps([0.0], [181.0]), model.encode_gps([0.0], [-179.0]))


# -- models ---------------------------------------------------------------------------------
MODEL_FRAGMENTS = {
    "missing_bundle_json": "no bundle.json in",
    "missing_onnx": "as the aerial encoder but it is missing",
    "missing_tokenizer": "its tokenizer 'tokenizer.json' is missing",
    "truncated": "(truncated?)",
    "garbage": "is not a readable ONNX model",
    "missing_spec": "carries no 'unigeo.spec' metadata",
    "bad_spec_json": "spec is not valid JSON",
    "wrong_modality": "holds a streetview encoder but bundle.json lists it as the aerial",
    "wrong_dim": "outputs D=9 but bundle.json says dim=8",
    "inconsistent_version": "the towers are inconsistent",
    "bad_opset": "opset 99 but onnxruntime",
    "bad_ir": "model needs IR 99",
    "wrong_input_name": "has inputs ['renamed'",
}


@pytest.mark.parametrize("how", BREAKAGES)
def test_broken_bundle(how, bundle_copy, good_raster, tmp_path, run_cli):
    break_bundle(bundle_copy, how)
    rc, err = run_cli(["info", bundle_copy])
    assert rc == 2 and MODEL_FRAGMENTS[how] in err, err
    out = tmp_path / "out"
    out.mkdir()
    if how != "missing_tokenizer":  # embedding needs no tokenizer, so that one would succeed
        rc, err = run_cli(["embed", good_raster, "--model", bundle_copy, "--out", out / "s.store"])
        assert rc == 2 and MODEL_FRAGMENTS[how] in err
        assert list(out.iterdir()) == []


def test_broken_bundle_via_api(bundle_copy):
    from engine.model import UniGeoModel

    break_bundle(bundle_copy, "wrong_dim")
    with pytest.raises(ModelContractError, match="export all towers from one checkpoint"):
        UniGeoModel.load(bundle_copy).encoder_session("aerial")


def test_store_from_another_model_is_refused(good_store, tmp_path, run_cli):
    other = make_analytic_bundle(tmp_path / "other", version="2")
    out = tmp_path / "h.tif"
    rc, err = run_cli(["heatmap", good_store, "--model", other, "--text", "water", "--out", out])
    assert rc == 2 and "was embedded with another model" in err
    assert not out.exists()


def test_store_folder_damaged(good_store, tmp_path):
    from engine.store.npy import EmbeddingStore

    with pytest.raises(StoreError):
        EmbeddingStore.open(tmp_path / "nowhere.store")
    broken = Path(shutil.copytree(good_store, tmp_path / "b.store"))
    (broken / "embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(StoreError):
        EmbeddingStore.open(broken)


# -- datasets -------------------------------------------------------------------------------
@pytest.mark.parametrize("ref", ["../outside/x.npy", "/etc/x.npy", "aerial/../../x.npy", "C:x.npy"])
def test_manifest_pointing_outside_the_dataset(ref, tmp_path):
    from training.data.format import DatasetFormatError, check_table

    table = pa.table({"sample_id": ["a"], "aerial": [ref]})
    pq.write_table(table, tmp_path / "samples.parquet")
    with pytest.raises(DatasetFormatError, match="escapes the dataset folder"):
        check_table(pq.read_table(tmp_path / "samples.parquet"), "samples.parquet", False)
