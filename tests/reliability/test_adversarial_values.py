"""Adversarial cases beyond issue 16's list, in its spirit: damaged files and resources, encodings and numeric edge values. Each asserts the error
(or the correct result) and that nothing the user had, and no earlier output, was damaged.

Defects these cases found, fixed with them (docs/RELIABILITY.md, section 10): ``--bands a,b``,
a lone surrogate in a text or class prompt, and a JSON document nested 100,000 deep were
tracebacks; a float64 raster beyond the 32-bit range embedded as all no data, exit 0.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError, RasterInputError, StoreError
from tests.reliability.conftest import leftovers, one_error_line, write_raster


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


# -- resources and damaged files -----------------------------------------------------------------
def test_truncated_embeddings_array_is_a_store_error(store):
    from engine.store import open_store

    f = store / "embeddings.npy"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(StoreError, match="damaged"):
        open_store(store)


def test_array_replaced_by_a_folder_is_a_store_error(store):
    from engine.store import open_store

    (store / "valid.npy").unlink()
    (store / "valid.npy").mkdir()
    with pytest.raises(StoreError, match="damaged"):
        open_store(store)


def test_store_json_in_latin_1_is_a_store_error(store):
    from engine.store import open_store

    info = (store / "store.json").read_text().replace('"analytic"', '"analytïc"')
    (store / "store.json").write_bytes(info.encode("latin-1"))
    with pytest.raises(StoreError, match="unreadable"):
        open_store(store)


@pytest.mark.parametrize("what", ["classes", "ann index", "collection"])
def test_json_nested_100000_deep(what, store, tmp_path, run_cli, analytic_bundle):
    """json.loads raises RecursionError (not ValueError): it escaped as a traceback."""
    deep = "[" * 100_000
    if what == "classes":
        (tmp_path / "c.json").write_text(deep)
        line = one_error_line(*run_cli(_q("classify", store, analytic_bundle, tmp_path / "c.tif",
                                          "--classes", tmp_path / "c.json")))  # fmt: skip
        assert "--classes must be a JSON file" in line
    elif what == "ann index":
        from engine.search.ann import AnnIndex
        from engine.store import open_store

        (store / "ann").mkdir()
        (store / "ann" / "index.json").write_text(deep)
        with pytest.raises(StoreError, match="unreadable"):
            AnnIndex.load(open_store(store))
    else:
        from engine.raster.mosaic import collection_paths

        (tmp_path / "stac.json").write_text(deep)
        with pytest.raises(RasterInputError, match="cannot read the collection"):
            collection_paths(tmp_path / "stac.json")


def test_float64_raster_beyond_32_bit_range_is_refused(run_cli, analytic_bundle, tmp_path):
    """It read as +-inf, so every tile became no data: an empty store and exit 0."""
    data = np.random.default_rng(34).uniform(1, 2, (4, 64, 64)) * 1e300
    src = write_raster(tmp_path / "huge.tif", data)
    line = one_error_line(*run_cli(["embed", src, "--model", analytic_bundle,
                                    "--out", tmp_path / "s.store"]))  # fmt: skip
    assert "beyond what 32-bit floats carry" in line and "gdal_translate" in line
    assert not (tmp_path / "s.store").exists() and leftovers(tmp_path) == []


# -- encodings ----------------------------------------------------------------------------------
def test_text_with_a_lone_surrogate_is_refused(run_cli, store, analytic_bundle, tmp_path):
    """A text from a terminal in another encoding: 'TextInputSequence must be str' before."""
    out = tmp_path / "h.tif"
    out.write_bytes(b"earlier")
    line = one_error_line(*run_cli(_q("heatmap", store, analytic_bundle, out,
                                      "--text", "wat\udce9r")))  # fmt: skip
    assert "not valid Unicode" in line and "UTF-8" in line and out.read_bytes() == b"earlier"


def test_class_prompt_with_a_lone_surrogate_is_refused(run_cli, store, analytic_bundle, tmp_path):
    (tmp_path / "c.json").write_text('{"water": ["wat\\udce9r"], "forest": ["forest"]}')
    line = one_error_line(*run_cli(_q("classify", store, analytic_bundle, tmp_path / "c.tif",
                                      "--classes", tmp_path / "c.json")))  # fmt: skip
    assert "not valid Unicode" in line and not (tmp_path / "c.tif").exists()


def test_classes_json_in_utf16_is_refused(run_cli, store, analytic_bundle, tmp_path):
    (tmp_path / "c.json").write_bytes(json.dumps(["water", "forest"]).encode("utf-16"))
    line = one_error_line(*run_cli(_q("classify", store, analytic_bundle, tmp_path / "c.tif",
                                      "--classes", tmp_path / "c.json")))  # fmt: skip
    assert "--classes must be a JSON file" in line and "utf-8" in line


def test_region_file_named_in_another_encoding_is_read(run_cli, store, analytic_bundle, tmp_path):
    from osgeo import gdal

    region = tmp_path / os.fsdecode(b"zone\xe9.geojson")
    ring = [[500000, 4999400], [500300, 4999400], [500300, 5000000], [500000, 4999400]]
    geom = {"type": "Polygon", "coordinates": [ring]}
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    feat = {"type": "Feature", "properties": {}, "geometry": geom}
    region.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": [feat]}))
    out = tmp_path / "h.tif"
    assert run_cli(_q("heatmap", store, analytic_bundle, out, "--region", region))[0] == 0
    assert "region of" in gdal.Open(str(out)).GetMetadataItem("UNIGEO_QUERY")


def test_class_labels_in_any_script_survive_into_the_class_map(
    run_cli, store, analytic_bundle, tmp_path
):
    from osgeo import gdal

    (tmp_path / "c.json").write_text(json.dumps({"水 water": ["blue"], "غابة forest": ["green"]}))
    out = tmp_path / "c.tif"
    assert run_cli(_q("classify", store, analytic_bundle, out, "--classes",
                      tmp_path / "c.json"))[0] == 0  # fmt: skip
    ds = gdal.Open(str(out))  # held: a band outlives no dataset in GDAL's bindings
    meta = ds.GetRasterBand(1).GetMetadata()
    assert set(meta.values()) >= {"水 water", "غابة forest"}


# -- numeric edge values ------------------------------------------------------------------------
def test_bands_that_are_not_numbers(run_cli, analytic_bundle, good_raster, tmp_path):
    line = one_error_line(*run_cli(["embed", good_raster, "--model", analytic_bundle,
                                    "--bands", "r,g,b,n", "--out", tmp_path / "s.store"]))  # fmt: skip
    assert "--bands must be comma-separated whole numbers" in line
    assert list(tmp_path.iterdir()) == []


def test_k_far_beyond_the_tile_count_gives_every_tile_once(
    run_cli, store, analytic_bundle, tmp_path
):
    from osgeo import ogr

    out = tmp_path / "h.gpkg"
    args = _q("hits", store, analytic_bundle, out, "--text", "water", "--k", "1000000000")
    assert run_cli([*args, "--min-distance", "0"])[0] == 0
    ds = ogr.Open(str(out))
    assert ds.GetLayer(0).GetFeatureCount() == 16


@pytest.mark.parametrize("extent", ["inf,0,1,1", "nan,nan,nan,nan", "1,2,3", "a,b,c,d"])
def test_extent_that_is_not_four_finite_numbers(
    extent, run_cli, analytic_bundle, good_raster, tmp_path
):
    args = ["embed", good_raster, "--model", analytic_bundle, "--out", tmp_path / "s.store"]
    line = one_error_line(*run_cli([*args, "--extent", extent]))
    assert "extent" in line and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("gps", ["90,180", "-90,-180", "0,0"])
def test_gps_at_the_poles_and_the_antimeridian(gps, run_cli, store, analytic_bundle, tmp_path):
    out = tmp_path / "h.tif"
    assert run_cli(_q("heatmap", store, analytic_bundle, out, f"--gps={gps}"))[0] == 0
    cos = band1(out)
    assert np.isfinite(cos).all() and np.abs(cos).max() <= 1.0 + 1e-5


def test_min_confidence_of_one_marks_every_tile_uncertain(
    run_cli, store, analytic_bundle, tmp_path
):
    out = tmp_path / "c.tif"
    assert run_cli(_q("classify", store, analytic_bundle, out, "--min-confidence", "1"))[0] == 0
    classes = band1(out)
    assert np.unique(classes).size == 1  # every tile: the extra class 'uncertain'


def test_a_uint16_raster_saturated_at_65535(run_cli, analytic_bundle, tmp_path):
    from engine.store import open_store

    src = write_raster(tmp_path / "u16.tif", np.full((4, 64, 64), 65535, np.uint16))
    assert (
        run_cli(["embed", src, "--model", analytic_bundle, "--out", tmp_path / "s.store"])[0] == 0
    )
    s = open_store(tmp_path / "s.store")
    emb = np.asarray(s.embeddings, np.float32)
    assert s.valid.all() and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-3)


def test_stride_of_one_pixel_within_max_tiles(run_cli, analytic_bundle, good_raster, tmp_path):
    """Stride 1 on a 64-px raster: 65 x 65 overlapping tiles; a cap of 1,000 refuses it."""
    args = ["embed", good_raster, "--model", analytic_bundle, "--stride", "1"]
    line = one_error_line(*run_cli([*args, "--max-tiles", "1000", "--out", tmp_path / "a.store"]))
    assert "4,225 tiles (> 1,000)" in line
    assert run_cli([*args, "--out", tmp_path / "b.store"])[0] == 0
    assert json.loads((tmp_path / "b.store" / "store.json").read_text())["grid"]["rows"] == 65


def test_surrogate_text_never_reaches_the_tokenizer(analytic_bundle):
    from engine.model import UniGeoModel

    with UniGeoModel.load(analytic_bundle) as m, pytest.raises(InputError, match="not valid"):
        m.encode_text(["water", "blue\udcff"])
