"""Output checks with QGIS's own GDAL (osgeo): valid files, CRS, sizes and values in range.

Each function raises :class:`~.harness.CheckFailed` naming the file and the value that is wrong,
and returns a small dict of what it measured (it goes into the report).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal, ogr, osr

from .harness import CheckFailed, ensure

EPS = 1e-4


def same_crs(wkt: str, expected_wkt: str) -> bool:
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(wkt)
    b.ImportFromWkt(expected_wkt)
    return bool(a.IsSame(b))


def wgs84_wkt() -> str:
    s = osr.SpatialReference()
    s.ImportFromEPSG(4326)
    return s.ExportToWkt()


def _open_raster(path: str | Path) -> Any:
    p = Path(path)
    ensure(p.is_file(), f"{p} does not exist")
    ensure(p.stat().st_size > 0, f"{p} is empty (0 bytes)")
    ds = gdal.Open(str(p))  # no gdal.UseExceptions(): that would change it for all of QGIS
    if ds is None:
        raise CheckFailed(f"GDAL cannot open {p}: {gdal.GetLastErrorMsg()}")
    return ds


def _band(ds, i: int) -> np.ndarray:
    b = ds.GetRasterBand(i)
    a = b.ReadAsArray().astype(np.float64)
    nd = b.GetNoDataValue()
    if nd is not None and not math.isnan(nd):
        a[a == nd] = np.nan
    return a


def band(path: str | Path, i: int = 1) -> np.ndarray:
    """Band ``i`` of a raster file as float64, its no-data cells NaN."""
    return _band(_open_raster(path), i)


def _grid(ds, path, srs_wkt: str, cell: float | None, finer: bool = False) -> dict[str, Any]:
    """CRS and pixel size: one tile, or (``finer``: heatmaps and class maps drawn inside the
    raster's outline) the tile split into k x k pixels, 1 <= k <= 8."""
    ensure(same_crs(ds.GetProjection(), srs_wkt), f"{path}: CRS is not the source's")
    gt = ds.GetGeoTransform()
    if cell is not None:
        k = cell / gt[1] if gt[1] > 0 else 0.0
        ok = abs(k - round(k)) < 1e-6 and 1 <= round(k) <= (8 if finer else 1)
        ensure(
            ok and abs(gt[1] + gt[5]) < 1e-6,
            f"{path}: pixel size {gt[1]} x {-gt[5]}, expected {cell}"
            + (" split into 1..8 per side" if finer else " (one tile)"),
        )
    return {"size": [ds.RasterXSize, ds.RasterYSize], "pixel": gt[1]}


def heatmap(
    path: str | Path, srs_wkt: str, cell: float | None = None, bands: int = 2
) -> dict[str, Any]:
    """Band 1 cosine in [-1, 1], band 2 percentile in [0, 100] (max 100), same valid cells."""
    ds = _open_raster(path)
    ensure(ds.RasterCount == bands, f"{path}: {ds.RasterCount} bands, expected {bands}")
    out = _grid(ds, path, srs_wkt, cell, finer=True)
    cos = _band(ds, 1)
    valid = np.isfinite(cos)
    ensure(valid.any(), f"{path}: no valid cell")
    lo, hi = float(cos[valid].min()), float(cos[valid].max())
    ensure(-1 - EPS <= lo and hi <= 1 + EPS, f"{path}: cosine {lo:.4f}..{hi:.4f} outside [-1, 1]")
    out.update(valid=int(valid.sum()), cells=int(valid.size), cosine=[round(lo, 4), round(hi, 4)])
    if bands >= 2:
        pct = _band(ds, 2)
        ensure((np.isfinite(pct) == valid).all(), f"{path}: bands 1 and 2 differ in valid cells")
        plo, phi = float(pct[valid].min()), float(pct[valid].max())
        ensure(0 <= plo and phi <= 100 + EPS, f"{path}: percentile {plo}..{phi} outside [0, 100]")
        ensure(abs(phi - 100) < 0.5, f"{path}: best percentile {phi}, expected 100")
        out["percentile"] = [round(plo, 2), round(phi, 2)]
    out["query"] = ds.GetMetadataItem("UNIGEO_QUERY")
    return out


def value_at(path: str | Path, x: float, y: float, band: int = 1) -> float:
    """The raster value of the cell holding map point (x, y)."""
    ds = _open_raster(path)
    gt = ds.GetGeoTransform()
    col, row = int((x - gt[0]) / gt[1]), int((y - gt[3]) / gt[5])
    ensure(
        0 <= col < ds.RasterXSize and 0 <= row < ds.RasterYSize,
        f"{path}: point {x:.1f}, {y:.1f} lies outside the raster",
    )
    return float(_band(ds, band)[row, col])


def classes(
    path: str | Path,
    conf_path: str | Path,
    srs_wkt: str,
    names: list[str] | None,
    cell: float | None = None,
) -> dict[str, Any]:
    """Class values < class count or nodata, CLASS_<i> names, confidence in [0, 1]."""
    ds = _open_raster(path)
    out = _grid(ds, path, srs_wkt, cell, finer=True)
    tags = ds.GetRasterBand(1).GetMetadata()
    found = [tags[f"CLASS_{i}"] for i in range(len(tags)) if f"CLASS_{i}" in tags]
    ensure(len(found) >= 2, f"{path}: {len(found)} CLASS_<i> band tags, expected 2 or more")
    if names is not None:
        ensure(found == list(names), f"{path}: classes {found}, expected {list(names)}")
    values = _band(ds, 1)
    valid = np.isfinite(values)
    ensure(valid.any(), f"{path}: no classified cell")
    used = sorted({int(v) for v in values[valid]})
    ensure(max(used) < len(found), f"{path}: class value {max(used)} >= {len(found)} classes")
    ensure(ds.GetRasterBand(1).GetColorTable() is not None, f"{path}: no colour table")
    cds = _open_raster(conf_path)
    ensure(cds.GetGeoTransform() == ds.GetGeoTransform(), f"{conf_path}: grid differs from classes")
    conf = _band(cds, 1)
    cvalid = np.isfinite(conf)
    ensure((cvalid == valid).all(), f"{conf_path}: valid cells differ from the class raster")
    lo, hi = float(conf[cvalid].min()), float(conf[cvalid].max())
    ensure(0 <= lo and hi <= 1 + EPS, f"{conf_path}: confidence {lo}..{hi} outside [0, 1]")
    counts = {found[v]: int((values[valid] == v).sum()) for v in used}
    out.update(classes=found, counts=counts, confidence=[round(lo, 3), round(hi, 3)])
    return out


def embeddings_tiff(path: str | Path, srs_wkt: str, dim: int, cell: float) -> dict[str, Any]:
    """``dim`` float bands, unit-length vectors in the valid cells."""
    ds = _open_raster(path)
    ensure(ds.RasterCount == dim, f"{path}: {ds.RasterCount} bands, expected {dim}")
    out = _grid(ds, path, srs_wkt, cell)
    arr = ds.ReadAsArray().astype(np.float64)  # [dim, rows, cols]
    valid = np.isfinite(arr).all(axis=0)
    ensure(valid.any(), f"{path}: no valid cell")
    norms = np.linalg.norm(arr[:, valid], axis=0)
    ensure(np.allclose(norms, 1, atol=5e-3), f"{path}: vector norms {norms.min()}..{norms.max()}")
    out.update(valid=int(valid.sum()))
    return out


def unit_json(text: Any, dim: int, where: str) -> None:
    """A JSON embedding of ``dim`` floats with norm 1."""
    ensure(isinstance(text, str) and text.startswith("["), f"{where}: no JSON embedding ({text!r})")
    vec = np.array(json.loads(text), dtype=np.float64)
    ensure(vec.shape == (dim,), f"{where}: {vec.shape[0]} values, expected {dim}")
    ensure(abs(np.linalg.norm(vec) - 1) < 1e-3, f"{where}: norm {np.linalg.norm(vec)}, not 1")


def _ogr_layer(path: str | Path) -> tuple[Any, Any]:
    p = Path(path)
    ensure(p.is_file() and p.stat().st_size > 0, f"{p} does not exist or is empty")
    ds = ogr.Open(str(p))
    if ds is None:
        raise CheckFailed(f"OGR cannot open {p}: {gdal.GetLastErrorMsg()}")
    ensure(ds.GetLayerCount() == 1, f"{p}: {ds.GetLayerCount()} layers, expected 1")
    return ds, ds.GetLayer(0)


def hits(
    path: str | Path,
    k: int,
    srs_wkt: str,
    polygons: bool,
    extent: tuple[float, float, float, float],
) -> dict[str, Any]:
    """k features ranked 1..k, scores falling in [-1, 1], in the extent, fields and CRS right."""
    ds, lyr = _ogr_layer(path)
    names = [
        lyr.GetLayerDefn().GetFieldDefn(i).GetName()
        for i in range(lyr.GetLayerDefn().GetFieldCount())
    ]
    for f in ("rank", "score", "percentile", "row", "col"):
        ensure(f in names, f"{path}: no field '{f}' (fields: {names})")
    ensure(same_crs(lyr.GetSpatialRef().ExportToWkt(), srs_wkt), f"{path}: CRS is not the expected")
    want = ogr.wkbPolygon if polygons else ogr.wkbPoint
    ensure(
        ogr.GT_Flatten(lyr.GetGeomType()) == want,
        f"{path}: geometry {ogr.GeometryTypeToName(lyr.GetGeomType())}, expected {ogr.GeometryTypeToName(want)}",
    )
    feats = list(lyr)
    ensure(len(feats) == k, f"{path}: {len(feats)} hits, expected {k}")
    ranks = [f.GetField("rank") for f in feats]
    scores = [f.GetField("score") for f in feats]
    ensure(sorted(ranks) == list(range(1, k + 1)), f"{path}: ranks {ranks}")
    by_rank = [s for _, s in sorted(zip(ranks, scores, strict=True))]
    ensure(
        all(a >= b - 1e-9 for a, b in zip(by_rank, by_rank[1:], strict=False)),
        f"{path}: scores not falling {by_rank}",
    )
    ensure(
        all(-1 - EPS <= s <= 1 + EPS for s in scores), f"{path}: scores {scores} outside [-1, 1]"
    )
    pct = [f.GetField("percentile") for f in feats]
    ensure(all(0 <= p <= 100 + EPS for p in pct), f"{path}: percentiles {pct} outside [0, 100]")
    x0, y0, x1, y1 = extent
    for f in feats:
        cx, cy = f.GetGeometryRef().Centroid().GetX(), f.GetGeometryRef().Centroid().GetY()
        ensure(
            x0 <= cx <= x1 and y0 <= cy <= y1,
            f"{path}: hit {f.GetField('rank')} at {cx}, {cy} outside {extent}",
        )
    return {"hits": len(feats), "scores": [round(s, 4) for s in by_rank], "fields": names}


def features(path: str | Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The attribute rows of a one-layer vector file (for embedding tables)."""
    ds, lyr = _ogr_layer(path)
    names = [
        lyr.GetLayerDefn().GetFieldDefn(i).GetName()
        for i in range(lyr.GetLayerDefn().GetFieldCount())
    ]
    for f in fields:
        ensure(f in names, f"{path}: no field '{f}' (fields: {names})")
    rows = []
    for feat in lyr:
        row = {n: (None if feat.IsFieldNull(n) else feat.GetField(n)) for n in names}
        g = feat.GetGeometryRef()
        row["_xy"] = None if g is None else (g.Centroid().GetX(), g.Centroid().GetY())
        rows.append(row)
    return rows
