"""Fixtures for the plugin tests: seeded GeoTIFFs with known land-cover quadrants, the provider.

The quadrant rasters hold four 4-band (red, green, blue, nir) uint8 regions whose colours the
analytic test bundle maps onto its classes: top-left water (blue high), top-right vegetation
(nir high), bottom-left bare (red high), bottom-right built (red, green, blue high, nir low).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

UTM_CRS = "EPSG:32633"
UTM_ORIGIN = (500_000.0, 5_003_200.0)  # top-left; a multiple of the 160-m analytic tiles
GEO_ORIGIN = (15.0, 45.0)  # lon, lat of the EPSG:4326 raster's top-left corner
GEO_RES = 1e-4  # degrees per pixel (about 7.9 m x 11.1 m at 45 N)
QUADRANTS = {  # name -> (red, green, blue, nir) of a quadrant, uint8
    "water": (60, 70, 200, 40),
    "vegetation": (50, 90, 50, 210),
    "bare": (210, 80, 60, 70),
    "built": (200, 200, 200, 60),
}
LAYOUT = (("water", "vegetation"), ("bare", "built"))


def quadrant_array(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [4, height, width]: the four quadrants plus seeded noise of +-6."""
    rng = np.random.default_rng(seed)
    out = np.empty((4, height, width), np.float32)
    h2, w2 = height // 2, width // 2
    for i, row in enumerate(LAYOUT):
        for j, name in enumerate(row):
            rs = slice(0, h2) if i == 0 else slice(h2, height)
            cs = slice(0, w2) if j == 0 else slice(w2, width)
            out[:, rs, cs] = np.array(QUADRANTS[name], np.float32)[:, None, None]
    out += rng.integers(-6, 7, size=out.shape)
    return np.clip(out, 1, 255).astype(np.uint8)


def smooth_array(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [4, height, width] of smooth seeded waves: resampling differences stay small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(4):
        fx, fy, ph = rng.uniform(0.02, 0.08), rng.uniform(0.02, 0.08), rng.uniform(0, 6.28)
        out.append(128 + 90 * np.sin(fx * x + ph) * np.cos(fy * y - ph))
    return np.clip(np.stack(out), 1, 255).astype(np.uint8)


def write_tif(path: Path, data: np.ndarray, crs: str, transform: Affine) -> Path:
    """A tiled GeoTIFF with band descriptions red, green, blue, nir."""
    c, h, w = data.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype="uint8", crs=crs, transform=transform
    )
    profile.update(photometric="MINISBLACK", tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(("red", "green", "blue", "nir")[:c], start=1):
            dst.set_band_description(i, name)
    return path


@pytest.fixture(scope="session")
def raster_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plugin_rasters")


@pytest.fixture(scope="session")
def utm_tif(raster_dir) -> Path:
    """320 x 320 px at 10 m in UTM 33N: 20 x 20 analytic tiles, 10 x 10 per quadrant."""
    t = Affine(10.0, 0, UTM_ORIGIN[0], 0, -10.0, UTM_ORIGIN[1])
    return write_tif(raster_dir / "utm.tif", quadrant_array(320, 320, 1), UTM_CRS, t)


@pytest.fixture(scope="session")
def geo_tif(raster_dir) -> Path:
    """240 x 320 px in EPSG:4326 (about 2.5 km x 2.7 km at 45 N)."""
    t = Affine(GEO_RES, 0, GEO_ORIGIN[0], 0, -GEO_RES, GEO_ORIGIN[1])
    return write_tif(raster_dir / "geo.tif", quadrant_array(240, 320, 2), "EPSG:4326", t)


@pytest.fixture(scope="session")
def smooth_utm_tif(raster_dir) -> Path:
    """300 x 300 px at 3 m in UTM 33N, origin off the tile lattice: real resampling."""
    t = Affine(3.0, 0, 500_003.0, 0, -3.0, 5_000_997.0)
    return write_tif(raster_dir / "smooth.tif", smooth_array(300, 300, 3), UTM_CRS, t)


@pytest.fixture(scope="module")
def unigeo_provider(qgis_processing, plugin_package):
    """The UniGeo provider registered for one test module, removed afterwards."""
    from qgis.core import QgsApplication
    from unigeo.plugin.processing.provider import UniGeoProvider

    registry = QgsApplication.processingRegistry()
    provider = UniGeoProvider()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)


@pytest.fixture(scope="module")
def unigeo_settings(plugin_package, analytic_bundle, tmp_path_factory):
    """Settings with the analytic bundle and a temporary store cache (QgsSettings untouched)."""
    from unigeo.plugin import model_cache
    from unigeo.plugin.settings import Settings

    root = tmp_path_factory.mktemp("unigeo_settings")
    s = Settings(
        bundle=str(analytic_bundle),
        threads=1,
        cache_folder=str(root / "cache"),
        output_folder=str(root / "out"),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Settings, "load", classmethod(lambda cls: s))
        model_cache.release_all()
        yield s
    model_cache.release_all()


@pytest.fixture(scope="module")
def run(unigeo_provider, unigeo_settings, analytic_bundle):
    """``run(name, feedback=None, **params)``: processing.run("unigeo:name"), analytic bundle.

    ``MODEL`` defaults to the analytic bundle; each call gets a fresh processing context.
    """
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    def _run(name: str, feedback=None, **params):
        params.setdefault("MODEL", str(analytic_bundle))
        return processing.run(
            f"unigeo:{name}",
            params,
            feedback=feedback or QgsProcessingFeedback(),
            context=QgsProcessingContext(),
        )

    return _run
