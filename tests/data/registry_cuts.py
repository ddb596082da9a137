"""Small cuts of the real registry files, for builder tests (written under tmp_path, never kept).

The registry archives live in ``data-cache/pip`` once ``make data`` has run; without them the
tests that need them skip (they never download).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import rasterio
from rasterio.windows import from_bounds

from training.data.sources import RegistryFile, _cached, extract_folder

REPO = Path(__file__).resolve().parents[2]
PIP_CACHE = REPO / "data-cache" / "pip"
DEB_CACHE = REPO / "data-cache" / "deb"


def package_folder(src: RegistryFile) -> Path:
    """The extracted data folder of a cached registry archive; skip the test when absent."""
    if not PIP_CACHE.is_dir() or _cached(PIP_CACHE, src.package, src.version) is None:
        pytest.skip(f"{src.package} {src.version} not in data-cache/pip (run make data once)")
    return extract_folder(src, PIP_CACHE)


def cut(src: Path, dst: Path, bounds: tuple[float, float, float, float]) -> Path:
    """Write the part of raster ``src`` inside map ``bounds`` (its own CRS) to ``dst`` as GeoTIFF.

    The name of ``dst`` may keep the original extension (.jp2, .nc): GDAL opens files by
    content. CRS, transform, nodata and band count are kept; a file without CRS stays so.
    """
    with rasterio.open(src) as s:
        win = from_bounds(*bounds, transform=s.transform).round_offsets().round_lengths()
        data = s.read(window=win)
        prof = {
            "driver": "GTiff",
            "width": data.shape[2],
            "height": data.shape[1],
            "count": s.count,
            "dtype": data.dtype,
            "transform": s.window_transform(win),
            "nodata": s.nodata,
        }
        if s.crs is not None:
            prof["crs"] = s.crs
        colorinterp = s.colorinterp
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **prof) as d:
        d.write(data)
        d.colorinterp = colorinterp
    return dst


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def bounds_of(path: Path) -> tuple[float, float, float, float]:
    with rasterio.open(path) as s:
        return tuple(s.bounds)


def sub_box(path: Path, fx: float, fy: float, size_m: float) -> tuple[float, float, float, float]:
    """A square of ``size_m`` whose west/north corner lies at fractions (fx, fy) of the file."""
    w, s, e, n = bounds_of(path)
    x0 = w + fx * (e - w)
    y1 = n - fy * (n - s)
    return (x0, y1 - size_m, x0 + size_m, y1)
