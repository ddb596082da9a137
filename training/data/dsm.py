"""DSMs: real where a surface model exists, else derived as terrain + OSM building heights.

A derived DSM is ``DEM + building height`` with heights from OpenStreetMap tags (``height``,
else ``building:levels`` x 3 m, else a default) rasterised from the footprints. The derivation
is validated on Old Town Alexandria, where a lidar DSM, the terrain model and building
footprints with measured heights all exist (:func:`validate_on_alexandria`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.features import rasterize
from shapely import from_wkb, transform

from engine.errors import InputError

LEVEL_HEIGHT_M = 3.0  # metres per storey, the usual OSM convention
DEFAULT_LEVELS = 2.0  # storeys assumed for a footprint without height or levels
_NUM = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*(m|meters|metres)?\s*$", re.I)


@dataclass
class Vector:
    """Geometries in one CRS plus their attribute columns."""

    geoms: np.ndarray  # shapely geometries
    fields: dict[str, np.ndarray]  # column name -> values
    crs: str  # CRS of the geometries


def read_vector(path: str | Path, layer: str | None = None, to_crs: str | None = None) -> Vector:
    """Read a vector layer (GeoPackage, GeoJSON, ...) with pyogrio, optionally reprojected."""
    try:
        meta, _, wkb, cols = pyogrio.raw.read(str(path), layer=layer)
    except Exception as e:  # pyogrio raises DataSourceError / DataLayerError and others
        raise InputError(f"cannot read vector data {path} (layer {layer}): {e}") from None
    if not meta.get("crs"):
        raise InputError(f"{path} has no CRS; assign one before using it")
    geoms = from_wkb(wkb)
    crs = meta["crs"]
    if to_crs and CRS.from_user_input(to_crs) != CRS.from_user_input(crs):
        tf = Transformer.from_crs(crs, to_crs, always_xy=True)
        geoms = transform(geoms, lambda xy: np.column_stack(tf.transform(xy[:, 0], xy[:, 1])))
        crs = to_crs
    return Vector(geoms, dict(zip(meta["fields"], cols, strict=True)), str(crs))


def _num(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if np.isfinite(v) and v > 0 else None
    m = _NUM.match(str(v))
    return (
        float(m.group(1).replace(",", "."))
        if m and float(m.group(1).replace(",", ".")) > 0
        else None
    )


def osm_heights(fields: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Building heights (m) from OSM tags, and whether each came from a tag (vs the default).

    ``height`` (or ``HEIGHT``) wins, then ``building:levels`` x 3 m, else 2 storeys.
    """
    h = np.full(n, DEFAULT_LEVELS * LEVEL_HEIGHT_M, np.float32)
    tagged = np.zeros(n, bool)
    levels = fields.get("building:levels")
    height = fields.get("height", fields.get("HEIGHT"))
    for i in range(n):
        v = _num(height[i]) if height is not None else None
        if v is None and levels is not None:
            lv = _num(levels[i])
            v = lv * LEVEL_HEIGHT_M if lv is not None else None
        if v is not None:
            h[i], tagged[i] = v, True
    return h, tagged


def rasterize_heights(
    geoms: np.ndarray, heights: np.ndarray, transform: Affine, shape: tuple[int, int]
) -> np.ndarray:
    """Rasterise footprints with their heights (taller buildings win where they overlap)."""
    order = np.argsort(heights)
    shapes = [(geoms[i], float(heights[i])) for i in order if geoms[i] is not None]
    if not shapes:
        return np.zeros(shape, np.float32)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0.0, dtype="float32")


def derive_dsm(dem: np.ndarray, building_heights: np.ndarray) -> np.ndarray:
    """Derived DSM = terrain + building height (NaN where the DEM is nodata)."""
    if dem.shape != building_heights.shape:
        raise InputError(f"DEM {dem.shape} and building raster {building_heights.shape} differ")
    return (dem.astype(np.float32) + building_heights).astype(np.float32)


def _read_band(path: Path) -> tuple[np.ndarray, Affine, str]:
    with rasterio.open(path) as src:
        a = src.read(1, masked=True).astype(np.float32).filled(np.nan)
        return a, src.transform, src.crs.to_string()


def validate_on_alexandria(folder: str | Path) -> dict[str, float]:
    """Compare DTM + rasterised building HEIGHT with the real lidar DSM of Old Town Alexandria.

    Args:
        folder: the ``alexandria_dsm`` folder (dsm.tif, dtm.tif, buildings.geojson).

    Returns:
        RMSE / MAE / bias in metres over all valid pixels, over building pixels and over the
        rest, the same RMSE for the bare DTM (the baseline the buildings improve on), and
        pixel counts.
    """
    folder = Path(folder)
    dsm, tr, crs = _read_band(folder / "dsm.tif")
    dtm, tr2, crs2 = _read_band(folder / "dtm.tif")
    if dsm.shape != dtm.shape or tr != tr2 or crs != crs2:
        raise InputError("Alexandria dsm.tif and dtm.tif are not on the same grid")
    vec = read_vector(folder / "buildings.geojson", to_crs=crs)
    h, _ = osm_heights(vec.fields, len(vec.geoms))
    bld = rasterize_heights(vec.geoms, h, tr, dsm.shape)
    derived = derive_dsm(dtm, bld)
    ok = np.isfinite(dsm) & np.isfinite(derived)
    on = ok & (bld > 0)
    off = ok & (bld == 0)

    def rmse(a: np.ndarray, m: np.ndarray) -> float:
        return float(np.sqrt(np.mean((a[m] - dsm[m]) ** 2)))

    err = derived - dsm
    return {
        "rmse_m": rmse(derived, ok),
        "mae_m": float(np.mean(np.abs(err[ok]))),
        "bias_m": float(np.mean(err[ok])),
        "rmse_buildings_m": rmse(derived, on),
        "rmse_other_m": rmse(derived, off),
        "rmse_dtm_only_m": rmse(dtm, ok),
        "rmse_dtm_only_buildings_m": rmse(dtm, on),
        "n_pixels": int(ok.sum()),
        "n_building_pixels": int(on.sum()),
        "n_buildings": len(vec.geoms),
    }
