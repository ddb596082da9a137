"""Tests of the split of the raster reader: each name in its own module, and the pieces moved out.

The reader's behaviour is covered by test_raster_io.py and test_window_read.py; these tests pin
what the split itself could break: where importers find names, and the helpers now called across
module boundaries (band helpers, value scaling, the warped read path).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from osgeo import gdal

from engine.errors import RasterInputError
from engine.raster import bands, gdal_reader, reader, scaling, tiling, warped
from tests.engine_geo.conftest import UTM_CRS, UTM_ORIGIN, write_tif

ROOT = Path(__file__).resolve().parents[2]
MOVED = {
    "canonical_band": bands,
    "resolve_bands": bands,
    "choose_grid_crs": tiling,
    "raster_gsd_m": tiling,
    "grid_for_raster": tiling,
}


def test_moved_names_live_in_their_own_modules():
    for name, home in MOVED.items():
        assert getattr(home, name).__module__ == home.__name__, name
    assert gdal_reader.GdalReader.__module__ == "engine.raster.gdal_reader"
    assert reader.RasterReader.__module__ == "engine.raster.reader"


def _defined_at_top(path: Path) -> set[str]:
    """Names a module defines itself (functions, classes, assignments), not ones it imports."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _raster_stem(node: ast.ImportFrom, path: Path) -> str | None:
    """The engine.raster module an import reads from (its file stem), or None."""
    mod = node.module or ""
    if not node.level:
        head, _, stem = mod.removeprefix("unigeo.").rpartition(".")
        return stem if head == "engine.raster" else None
    if path.parent.name == "raster" and node.level == 1:
        return mod or None
    head, _, stem = mod.rpartition(".")
    return stem if head == "raster" else None


def _names_imported_from_raster() -> dict[str, set[str]]:
    """``{module file stem: names}`` that engine, plugin, tests and bench import from engine.raster."""
    names: dict[str, set[str]] = {}
    for top in ("engine", "plugin", "tests", "bench"):
        for p in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (stem := _raster_stem(node, p)):
                    names.setdefault(stem, set()).update(a.name for a in node.names)
    return names


def test_every_name_the_code_imports_from_a_raster_module_is_defined_there():
    imported = _names_imported_from_raster()
    # the known importers (mosaic, embed, the QGIS reader, tests, benchmarks) use these
    assert {"GdalReader"} <= imported["gdal_reader"] and {"RasterReader"} <= imported["reader"]
    assert {"grid_for_raster"} <= imported["tiling"] and {"resolve_bands"} <= imported["bands"]
    missing = sorted(
        f"{stem}.{n}"
        for stem, names in imported.items()
        for n in names
        if n not in _defined_at_top(ROOT / "engine" / "raster" / f"{stem}.py")
    )
    assert missing == []


def test_band_helpers_read_names_and_masks(utm_tif, geo_tif):
    src = gdal.Open(str(utm_tif))
    # band 4 is tagged alpha by GDAL but described "nir": data, not a mask
    assert bands.band_names(src) == ("red", "green", "blue", "nir")
    assert bands.alpha_bands(src) == ()
    src = gdal.Open(str(geo_tif))
    assert bands.band_names(src) == ("red", "green", "blue", "alpha")
    assert bands.alpha_bands(src) == (4,)
    assert bands.canonical_band(" Near-Infrared ") == "nir"
    assert bands.resolve_bands(("nir", "red"), ("R", "G", "B", "NIR1")) == [4, 1]


def test_snap_puts_the_vrt_on_the_lattice_with_a_margin():
    left, top, width, height = warped._snap((10.3, 20.7, 50.2, 60.1), (0.25, 0.5), 2.0)
    assert (left, top, width, height) == (8.25, 62.5, 22, 22)
    assert left <= 10.3 - 2.0 and top >= 60.1 + 2.0  # one pixel beyond the box on each side
    assert left + width * 2.0 >= 50.2 and top - height * 2.0 <= 20.7 - 2.0


def test_warped_vrt_lattice_and_read(utm_tif):
    res = warped.resampling("bilinear")
    px, py = UTM_ORIGIN[0] + 0.5, UTM_ORIGIN[1]  # a lattice shifted half a pixel in x
    f = gdal.Open(str(utm_tif))
    src = warped.source_of(utm_tif, f)
    vrt = warped.open_warped_vrt(src, UTM_CRS, 1.0, (px, py), (), 0.0, res)
    left, a, _, top, _, e = vrt.GetGeoTransform()
    assert (a, e) == (1.0, -1.0)
    assert math.isclose((left - px) % 1.0, 0.0, abs_tol=1e-9)
    assert left < src.bounds[0] and top > src.bounds[3]
    assert vrt.RasterCount == 4 and vrt.GetRasterBand(1).DataType == gdal.GDT_Float32
    x0, y1 = UTM_ORIGIN[0] + 10.5, UTM_ORIGIN[1] - 10.0  # on the lattice, in region (0, 0)
    out = warped.read_warped(vrt, (x0, y1 - 8, x0 + 8, y1), 1.0, [1, 2], 8, 8, res)
    assert out.shape == (2, 8, 8) and out.dtype == np.float32
    want = f.ReadAsArray(10, 10, 8, 8, band_list=[1, 2]).astype(np.float32)
    np.testing.assert_array_equal(out, want)  # constant region: shift changes nothing
    # a box wholly outside the raster is all no data
    far = warped.read_warped(vrt, (0.0, 0.0, 4.0, 4.0), 1.0, [1], 4, 4, res)
    assert np.isnan(far).all()


def test_unknown_resampling_is_refused_by_name():
    with pytest.raises(RasterInputError, match="unknown resampling 'gauss'.*bilinear"):
        warped.resampling("gauss")


def test_scaling_for_each_mode(utm_tif, dsm_tif, geo_dir):
    src = gdal.Open(str(utm_tif))
    lo, span, desc = scaling.scaling_for(src, "dtype", None, "utm.tif")
    assert desc == "uint8/255" and span.tolist() == [255.0] * 4 and lo.tolist() == [0.0] * 4
    _, span, desc = scaling.scaling_for(src, 2, None, "utm.tif")
    assert desc == "divide:2" and span.tolist() == [2.0] * 4
    with pytest.raises(RasterInputError, match="positive number"):
        scaling.scaling_for(src, float("nan"), None, "utm.tif")
    with pytest.raises(
        RasterInputError, match="'dtype', 'percentile', 'sensor:<name>' or a number"
    ):
        scaling.scaling_for(src, "minmax", None, "utm.tif")
    src = gdal.Open(str(dsm_tif))  # float32 h = 100 + col, 96 columns
    lo, span, desc = scaling.scaling_for(src, "dtype", None, "dsm.tif")
    assert desc.startswith("percentile2-98:")
    # rows 32-95 are valid: each height 100..195 occurs 64 times
    want = np.percentile(np.repeat(np.arange(100.0, 196.0), 64), [2.0, 98.0])
    assert lo[0] == pytest.approx(want[0]) and lo[0] + span[0] == pytest.approx(want[1])
    assert desc == f"percentile2-98:{want[0]:.6g}..{want[1]:.6g}"
    empty = np.full((2, 8, 8), -9999.0, np.float32)
    t = Affine(2.0, 0, UTM_ORIGIN[0], 0, -2.0, UTM_ORIGIN[1])
    none = gdal.Open(str(write_tif(geo_dir / "all_nodata.tif", empty, UTM_CRS, t, nodata=-9999.0)))
    with pytest.raises(RasterInputError, match="dsm.tif holds no valid pixels"):
        scaling.scaling_for(none, "percentile", None, "dsm.tif")
    with pytest.raises(RasterInputError, match="dsm.tif holds no valid pixels"):
        scaling.scaling_for(none, 1.0, None, "dsm.tif")  # a DSM of only no data


def test_apply_scaling_in_place_clips_only_when_asked():
    raw = np.array([[[0.0, 50.0, np.nan]], [[10.0, 210.0, 300.0]]], dtype=np.float32)
    lo, span = np.array([0.0, 10.0, 0.0]), np.array([100.0, 200.0, 1.0])
    out = scaling.apply_scaling(raw.copy(), lo, span, [1, 2], clip=False)
    np.testing.assert_allclose(out, [[[0.0, 0.5, np.nan]], [[0.0, 1.0, 1.45]]], rtol=1e-6)
    clipped = scaling.apply_scaling(raw.copy(), lo, span, [1, 2], clip=True)
    np.testing.assert_allclose(clipped, [[[0.0, 0.5, np.nan]], [[0.0, 1.0, 1.0]]], rtol=1e-6)
    assert clipped.dtype == np.float32
    buf = raw.copy()
    assert scaling.apply_scaling(buf, lo, span, [2], clip=False) is buf
