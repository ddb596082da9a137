"""GeoTIFF and vector writers shared by heatmaps, hits and classifications; all writes are atomic.

Rasters are written on a :class:`~.grid.TileGrid` (one pixel per tile cell, the grid's CRS and
geotransform). Vectors go to a GeoPackage or GeoJSON chosen by the file extension. Provenance
(model hash, query, parameters) is stored as GDAL metadata tags (rasters) or dataset/layer
metadata (GeoPackage), so a layer can always say where it came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .grid import TileGrid

TAG_PREFIX = "UNIGEO_"
"""Prefix of every provenance tag, so they never collide with GDAL's own metadata items."""

VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


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
    """The OGR driver for ``path`` from its extension (GeoPackage or GeoJSON)."""
    ext = Path(path).suffix.lower()
    if ext not in VECTOR_DRIVERS:
        raise InputError(
            f"cannot write vectors to '{Path(path).name}': use a .gpkg or .geojson file name"
        )
    return VECTOR_DRIVERS[ext]


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
    """Write features (WKB geometries + attribute columns) to a GeoPackage or GeoJSON, atomically.

    Args:
        path: Target file; ``.gpkg`` or ``.geojson``/``.json`` picks the format.
        geometry_wkb: One WKB geometry per feature.
        fields: Column name -> 1-D array with one value per feature.
        crs: CRS of the geometries (WKT or ``"EPSG:n"``).
        geometry_type: OGR layer geometry type, e.g. ``"Point"`` or ``"Polygon"``.
        layer: Layer name (GeoPackage); defaults to the file stem.
        provenance: Stored as dataset and layer metadata where the format supports it.

    Returns:
        The written path.
    """
    from pyogrio.raw import write as ogr_write
    from pyproj import CRS

    path = Path(path)
    driver = vector_driver(path)
    n = len(geometry_wkb)
    names = list(fields)
    arrays = [np.asarray(fields[k]) for k in names]
    if any(len(a) != n for a in arrays):
        raise InputError("every attribute column needs one value per feature")
    geometry = np.empty(n, dtype=object)
    geometry[:] = list(geometry_wkb)
    meta = provenance_tags(provenance) if driver == "GPKG" else None
    with atomic_path(path, suffix=path.suffix) as tmp:
        # GDAL refuses to create a dataset over the empty placeholder that atomic_path made.
        tmp.unlink()
        ogr_write(
            str(tmp),
            geometry,
            arrays,
            names,
            layer=layer or path.stem,
            driver=driver,
            geometry_type=geometry_type,
            crs=CRS.from_user_input(crs).to_wkt(),
            dataset_metadata=meta,
            layer_metadata=meta,
            # GeoPackage 1.3: the GDAL inside QGIS 3.22 (3.6) warns on pyogrio's default 1.4.
            dataset_options={"VERSION": "1.3"} if driver == "GPKG" else None,
        )
    return path


def hex_to_rgba(color: str) -> tuple[int, int, int, int]:
    """``"#rrggbb"`` (or ``"#rrggbbaa"``) to an RGBA tuple; a clear error on anything else."""
    text = color.strip().lstrip("#")
    if len(text) not in (6, 8) or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise InputError(f"colour '{color}' is not of the form #rrggbb")
    vals = [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    return (vals[0], vals[1], vals[2], vals[3] if len(vals) == 4 else 255)
