"""Fixtures for the geo engine tests: seeded GeoTIFFs with known regions, and a fake encoder.

Generated rasters are made of square regions whose pixel values are known, so a test can check
that a chip read at some map position holds the value of the region at that position.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

from engine.model.contract import EncoderSpec, Modality, Preprocess

UTM_CRS = "EPSG:32633"
UTM_ORIGIN = (500_000.0, 5_000_064.0)  # top-left corner; multiples of the 32-m test cells
REGION_PX = 64  # side of a constant region, in pixels
GEO_ORIGIN = (15.0, 45.0)  # lon, lat of the EPSG:4326 raster's top-left corner
GEO_RES = 1e-5  # degrees per pixel (about 0.8 m x 1.1 m at 45 N)
GEO_REGION_PX = 100


def region_value(i: int, j: int, band: int) -> int:
    """uint8 value of region (i, j) in 1-based band ``band`` (never 0: 0 is nodata)."""
    return 1 + (i * 7 + j * 3 + band * 41) % 250


def write_tif(
    path: Path,
    data: np.ndarray,
    crs: str | None,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    colorinterp: Sequence[ColorInterp] | None = None,
    photometric: str | None = "MINISBLACK",
) -> Path:
    """Write ``data`` [C, H, W] as a tiled GeoTIFF (``photometric=None``: GDAL's default, which
    tags the 4th band of a 4-band uint8 file as alpha)."""
    c, h, w = data.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name, transform=transform
    )
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if photometric and not colorinterp:
        profile["photometric"] = photometric
    if h >= 16 and w >= 16:
        profile.update(
            tiled=True, blockxsize=16 * (min(w, 256) // 16), blockysize=16 * (min(h, 256) // 16)
        )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions):
                dst.set_band_description(i + 1, d)
        if colorinterp:
            dst.colorinterp = list(colorinterp)
    return path


def regions(rows: int, cols: int, bands: int, px: int) -> np.ndarray:
    """uint8 [bands, rows*px, cols*px] made of constant px × px regions."""
    out = np.zeros((bands, rows * px, cols * px), np.uint8)
    for i in range(rows):
        for j in range(cols):
            for b in range(bands):
                out[b, i * px : (i + 1) * px, j * px : (j + 1) * px] = region_value(i, j, b + 1)
    return out


@pytest.fixture(scope="session")
def geo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("geo")


@pytest.fixture(scope="session")
def utm_tif(geo_dir) -> Path:
    """EPSG:32633, 1 m, 4 bands named red/green/blue/nir, 3 x 4 regions of 64 px; region (2, 3)
    is nodata (0), and so is the left half of region (2, 0). GDAL tags band 4 alpha, as it does
    for any such file; its description says it is NIR."""
    data = regions(3, 4, 4, REGION_PX)
    data[:, 128:192, 192:256] = 0
    data[:, 128:192, 0:32] = 0
    t = Affine(1.0, 0, UTM_ORIGIN[0], 0, -1.0, UTM_ORIGIN[1])
    return write_tif(
        geo_dir / "utm.tif",
        data,
        UTM_CRS,
        t,
        nodata=0,
        descriptions=("red", "green", "blue", "nir"),
    )


@pytest.fixture(scope="session")
def geo_tif(geo_dir) -> Path:
    """EPSG:4326 RGBA, 3 x 3 regions of 100 px at 1e-5 degrees; alpha is 0 in region (1, 1)."""
    rgb = regions(3, 3, 3, GEO_REGION_PX)
    alpha = np.full((1, *rgb.shape[1:]), 255, np.uint8)
    alpha[:, 100:200, 100:200] = 0
    t = Affine(GEO_RES, 0, GEO_ORIGIN[0], 0, -GEO_RES, GEO_ORIGIN[1])
    ci = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
    return write_tif(
        geo_dir / "geo.tif", np.concatenate([rgb, alpha]), "EPSG:4326", t, colorinterp=ci
    )


@pytest.fixture(scope="session")
def dsm_tif(geo_dir) -> Path:
    """EPSG:32633 float32 heights, 2 m, 96 x 96 px: h = 100 + col (metres); rows 0-31 nodata."""
    h = (100.0 + np.arange(96, dtype=np.float32))[None, None, :].repeat(96, axis=1)
    h[:, :32, :] = -9999.0
    t = Affine(2.0, 0, UTM_ORIGIN[0], 0, -2.0, UTM_ORIGIN[1])
    return write_tif(geo_dir / "dsm.tif", h, UTM_CRS, t, nodata=-9999.0)


class FakeModel:
    """The ``UniGeoModel`` facade with an analytic encoder: per-band means of the chip and of its
    four quadrants (NaN ignored), L2-normalised, so embeddings are predictable and depend on
    where the chip was read."""

    def __init__(self, bands: Sequence[str], size: int, gsd_m: float, model_hash: str = "fake-1"):
        self.bands = tuple(bands)
        self.size = size
        self.gsd_m = gsd_m
        self.model_hash = model_hash
        self.dim = 5 * len(self.bands)
        self.calls = 0

    def has(self, modality: Modality) -> bool:
        return modality in (Modality.AERIAL, Modality.DSM)

    def spec(self, modality: Modality) -> EncoderSpec:
        n = len(self.bands)
        pre = Preprocess(
            size=self.size, bands=self.bands, mean=(0.0,) * n, std=(1.0,) * n, gsd_m=self.gsd_m
        )
        shape = ["batch", n, self.size, self.size]
        return EncoderSpec(modality, self.dim, {"pixels": shape}, pre, "fake", "1")

    def encode_tiles(
        self, modality: Modality, chips: np.ndarray, batch_size: int = 32
    ) -> np.ndarray:
        self.calls += 1
        return fake_embed(chips)


def fake_embed(chips: np.ndarray) -> np.ndarray:
    """What :class:`FakeModel` returns for ``chips`` [N, C, H, W]."""
    n, c, h, w = chips.shape
    parts = [chips]
    parts += [chips[:, :, : h // 2, : w // 2], chips[:, :, : h // 2, w // 2 :]]
    parts += [chips[:, :, h // 2 :, : w // 2], chips[:, :, h // 2 :, w // 2 :]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN quadrants are expected
        feats = np.concatenate([np.nanmean(p, axis=(2, 3)) for p in parts], axis=1)
    feats = np.nan_to_num(feats).astype(np.float32) + 1e-3
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


@pytest.fixture
def make_model() -> Callable[..., FakeModel]:
    return FakeModel
