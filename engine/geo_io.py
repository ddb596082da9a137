"""GeoTIFF and vector writers shared by heatmaps, hits and classifications; all writes are atomic.

Rasters are written on a :class:`~.grid.TileGrid` (one pixel per tile cell, the grid's CRS and
geotransform). Vectors go to a GeoPackage, a GeoJSON file (always WGS84 longitude/latitude, as
RFC 7946 requires) or an ESRI Shapefile (10-character field names), chosen by the file
extension. Provenance (model hash, query, parameters) is stored as GDAL metadata tags (rasters),
dataset/layer metadata (GeoPackage) or the GeoJSON ``description`` member, so a layer can always
say where it came from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .grid import TileGrid

TAG_PREFIX = "UNIGEO_"
"""Prefix of every provenance tag, so they never collide with GDAL's own metadata items."""

VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".shp": "ESRI Shapefile",
}
SHP_FIELD_CHARS = 10
"""dBase limits field names to 10 characters; longer names are cut (and made unique)."""
_SHP_INDEX_SIDECARS = (".qix", ".sbn", ".sbx")  # spatial indexes of an old file go stale


def provenance_tags(provenance: Mapping[str, Any] | None) -> dict[str, str]:
    """Flatten provenance into GDAL-safe metadata items ``UNIGEO_<KEY> = <text or JSON>``.

    GDAL metadata keys may not hold spaces or ``=``, and values must be strings, so keys are
    sanitised and non-string values are JSON-encoded (readable back with ``json.loads``).
    """
    tags: dict[str, str] = {}
    for key, value in (provenance or {}).items():
        safe = re.sub(r"[^A-Za-z0-9_]", "_", str(key)).upper()
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        tags[TAG_PREFIX + safe] = text
    return tags


def _check_band(grid: TileGrid, band: np.ndarray, name: str) -> None:
    if band.ndim != 2 or band.shape != grid.shape:
        raise InputError(
            f"{name} has shape {band.shape} but the store's grid is {grid.shape}; "
            "pass the array computed on this store"
        )


def grid_profile(grid: TileGrid, count: int, dtype: str, nodata: float | int | None) -> dict:
    """The GeoTIFF profile of a raster on ``grid``: deflate, 256-px tiles when it is that large."""
    from affine import Affine

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.cols,
        "height": grid.rows,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": Affine.from_gdal(*grid.geotransform),
        "nodata": nodata,
        "compress": "deflate",
    }
    if grid.rows >= 256 and grid.cols >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def write_grid_raster(
    path: str | Path,
    grid: TileGrid,
    bands: Sequence[np.ndarray],
    *,
    dtype: str,
    nodata: float | int | None,
    descriptions: Sequence[str] = (),
    band_tags: Sequence[Mapping[str, str]] = (),
    provenance: Mapping[str, Any] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write ``bands`` (each ``grid.shape``) as a tiled, compressed GeoTIFF, atomically.

    Args:
        path: Target ``.tif`` path; replaced only when the whole file was written.
        grid: The tile grid that gives the CRS and geotransform.
        bands: 2-D arrays, one per band, all of ``grid.shape``.
        dtype: Output data type name (e.g. ``"float32"``, ``"uint8"``).
        nodata: The nodata value (``math.nan`` for float rasters), or None.
        descriptions: One description per band (shown as the band name in QGIS).
        band_tags: Extra metadata items per band.
        provenance: Dataset-level provenance, written as ``UNIGEO_*`` tags.
        colormap: A GDAL colour table for band 1 (index -> RGBA); byte/uint16 rasters only.

    Returns:
        The written path.
    """
    import rasterio

    if not bands:
        raise InputError("nothing to write: no raster bands were given")
    if grid.rows == 0 or grid.cols == 0:
        raise InputError("the store's grid is empty; there is nothing to write")
    for i, band in enumerate(bands):
        _check_band(grid, band, f"band {i + 1}")
    path = Path(path)
    profile = grid_profile(grid, len(bands), dtype, nodata)
    with atomic_path(path, suffix=".tif") as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, band in enumerate(bands, start=1):
                dst.write(np.asarray(band, dtype=dtype), i)
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
            for i, tags in enumerate(band_tags, start=1):
                if tags:
                    dst.update_tags(i, **{k: str(v) for k, v in tags.items()})
            if provenance:
                dst.update_tags(**provenance_tags(provenance))
            if colormap is not None:
                dst.write_colormap(1, dict(colormap))
    return path


def vector_driver(path: str | Path) -> str:
    """The OGR driver for ``path`` from its extension (GeoPackage, GeoJSON or Shapefile)."""
    ext = Path(path).suffix.lower()
    if ext not in VECTOR_DRIVERS:
        raise InputError(
            f"cannot write vectors to '{Path(path).name}': use a .gpkg, .geojson or .shp file name"
        )
    return VECTOR_DRIVERS[ext]


def shapefile_field_names(names: Sequence[str]) -> list[str]:
    """``names`` cut to dBase's 10 characters, kept unique (``unigeo_emb``, ``unigeo_e_1``)."""
    out: list[str] = []
    for name in names:
        short = name[:SHP_FIELD_CHARS]
        n = 1
        while short.lower() in (o.lower() for o in out):  # dBase names are case-insensitive
            tail = f"_{n}"
            short = name[: SHP_FIELD_CHARS - len(tail)] + tail
            n += 1
        out.append(short)
    return out


def to_wgs84(geometry_wkb: Sequence[bytes | None], crs: str) -> list[bytes | None]:
    """WKB geometries in ``crs`` reprojected to EPSG:4326 longitude/latitude (x = longitude)."""
    import shapely
    from pyproj import CRS, Transformer

    geoms = shapely.from_wkb(np.asarray(list(geometry_wkb), dtype=object))
    src = CRS.from_user_input(crs)
    if not src.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        tr = Transformer.from_crs(src, "EPSG:4326", always_xy=True)

        def project(xy: np.ndarray) -> np.ndarray:
            # lists: pyproj takes a 1-element array for a scalar (a NumPy deprecation warning)
            return np.column_stack(tr.transform(xy[:, 0].tolist(), xy[:, 1].tolist()))

        geoms = shapely.transform(geoms, project)
    coords = shapely.get_coordinates(geoms)
    if not np.isfinite(coords).all():
        raise InputError(
            "some geometries have no WGS84 position, and GeoJSON is always WGS84; "
            "write a .gpkg or .shp file instead"
        )
    return [None if g is None else shapely.to_wkb(g) for g in geoms]


def write_vector(
    path: str | Path,
    geometry_wkb: Sequence[bytes],
    fields: Mapping[str, np.ndarray],
    crs: str,
    *,
    geometry_type: str,
    layer: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write features (WKB geometries + attribute columns) to a vector file, atomically.

    GeoJSON is written in EPSG:4326 (RFC 7946: longitude, latitude) whatever ``crs`` is; a
    GeoPackage or Shapefile keeps ``crs``. A Shapefile is several files (.shp, .shx, .dbf,
    .prj, .cpg): all are written into a temporary folder first and moved next to each other
    only when every one was written, and field names are cut to 10 characters.

    Args:
        path: Target file; ``.gpkg``, ``.geojson``/``.json`` or ``.shp`` picks the format.
        geometry_wkb: One WKB geometry per feature.
        fields: Column name -> 1-D array with one value per feature.
        crs: CRS of the geometries (WKT or ``"EPSG:n"``).
        geometry_type: OGR layer geometry type, e.g. ``"Point"`` or ``"Polygon"``.
        layer: Layer name (GeoPackage); defaults to the file stem.
        provenance: Stored as GeoPackage metadata, or as the GeoJSON ``description`` member.

    Returns:
        The written path.
    """
    path = Path(path)
    driver = vector_driver(path)
    n = len(geometry_wkb)
    names = list(fields)
    arrays = [np.asarray(fields[k]) for k in names]
    if any(len(a) != n for a in arrays):
        raise InputError("every attribute column needs one value per feature")
    if driver == "GeoJSON":
        geometry_wkb, crs = to_wgs84(geometry_wkb, crs), "EPSG:4326"
    if driver == "ESRI Shapefile":
        names = shapefile_field_names(names)
    geometry = np.empty(n, dtype=object)
    geometry[:] = list(geometry_wkb)
    kw = _driver_options(driver, layer or path.stem, geometry_type, crs, provenance)
    if driver == "ESRI Shapefile":
        _write_shapefile(path, geometry, arrays, names, kw)
        return path
    with atomic_path(path, suffix=path.suffix) as tmp:
        # GDAL refuses to create a dataset over the empty placeholder that atomic_path made.
        tmp.unlink()
        _ogr_write(tmp, geometry, arrays, names, kw)
    return path


def _driver_options(
    driver: str, layer: str, geometry_type: str, crs: str, provenance: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Keyword arguments of ``pyogrio.raw.write`` for one of the three formats."""
    from pyproj import CRS

    kw: dict[str, Any] = {
        "layer": layer,
        "driver": driver,
        "geometry_type": geometry_type,
        "crs": CRS.from_user_input(crs).to_wkt(),
    }
    tags = provenance_tags(provenance)
    if driver == "GPKG":
        kw.update(dataset_metadata=tags or None, layer_metadata=tags or None)
        # GeoPackage 1.3: the GDAL inside QGIS 3.22 (3.6) warns on pyogrio's default 1.4.
        kw["dataset_options"] = {"VERSION": "1.3"}
    elif driver == "GeoJSON":
        # RFC7946=YES: no "crs" member, 7 decimals, right-hand polygon winding
        kw["layer_options"] = {"RFC7946": "YES"}
        if tags:
            kw["layer_options"]["DESCRIPTION"] = json.dumps(tags, sort_keys=True)
    else:
        kw["layer_options"] = {"ENCODING": "UTF-8"}
    return kw


def _ogr_write(
    target: Path, geometry: np.ndarray, arrays: list, names: list[str], kw: dict[str, Any]
) -> None:
    from pyogrio.raw import write as ogr_write  # looked up per call: tests patch it

    ogr_write(str(target), geometry, arrays, names, **kw)


def _write_shapefile(
    path: Path, geometry: np.ndarray, arrays: list, names: list[str], kw: dict[str, Any]
) -> None:
    """Write all files of a Shapefile in a temporary folder, then move them next to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _ogr_write(tmp / path.name, geometry, arrays, names, kw)
        parts = sorted(tmp.iterdir(), key=lambda p: p.suffix.lower() == ".shp")  # .shp last
        for part in parts:
            with open(part, "rb") as f:
                os.fsync(f.fileno())
        for ext in _SHP_INDEX_SIDECARS:
            with contextlib.suppress(FileNotFoundError):
                path.with_suffix(ext).unlink()
        for part in parts:
            os.replace(part, path.parent / part.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def hex_to_rgba(color: str) -> tuple[int, int, int, int]:
    """``"#rrggbb"`` (or ``"#rrggbbaa"``) to an RGBA tuple; a clear error on anything else."""
    text = color.strip().lstrip("#")
    if len(text) not in (6, 8) or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise InputError(f"colour '{color}' is not of the form #rrggbb")
    vals = [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    return (vals[0], vals[1], vals[2], vals[3] if len(vals) == 4 else 255)
