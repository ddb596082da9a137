"""Fixtures for the reliability suite: small generated rasters, CLI runner, leftover checks."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from engine.cli import main as cli_main

UTM_CRS = "EPSG:32633"
UTM_ORIGIN = (500_000.0, 5_000_000.0)
# Names that only ever appear while a write is in progress.
PARTIAL_MARKERS = (".part", ".partial", ".tmp")


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = UTM_CRS,
    transform: Affine | None = None,
    nodata: float | None = None,
) -> Path:
    """Write ``data`` ``[C, H, W]`` as a GeoTIFF (default: 10 m pixels in UTM 33N)."""
    c, h, w = data.shape
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=c,
        dtype=data.dtype.name,
        transform=transform or Affine(10.0, 0, UTM_ORIGIN[0], 0, -10.0, UTM_ORIGIN[1]),
        photometric="MINISBLACK",
    )
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def random_uint8(bands: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    """Seeded uint8 ``[bands, size, size]`` with no zeros (0 is never no data here)."""
    return np.random.default_rng(seed).integers(1, 255, (bands, size, size), dtype=np.uint8)


def leftovers(folder: Path) -> list[str]:
    """Names under ``folder`` that mark an unfinished write (``.part``, ``.partial``, ``.tmp``)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if any(m in p.name for m in PARTIAL_MARKERS)
    )


@pytest.fixture()
def bundle_copy(analytic_bundle, tmp_path) -> Path:
    """A private copy of the analytic bundle that a test may break."""
    return Path(shutil.copytree(analytic_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def good_raster(tmp_path_factory) -> Path:
    """A 4-band uint8 64 × 64 GeoTIFF at 10 m in UTM 33N (4 × 4 tiles of the analytic bundle)."""
    return write_raster(tmp_path_factory.mktemp("good") / "good.tif", random_uint8())


@pytest.fixture(scope="session")
def good_store(tmp_path_factory, analytic_bundle, good_raster) -> Path:
    """The store of :func:`good_raster` embedded with the analytic bundle."""
    out = tmp_path_factory.mktemp("store") / "good.store"
    rc = cli_main(["embed", str(good_raster), "--model", str(analytic_bundle), "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture()
def run_cli(capsys) -> Callable[[Sequence[str]], tuple[int, str]]:
    """Run ``engine.cli.main`` and return ``(exit code, stderr)``."""

    def run(argv: Sequence[str]) -> tuple[int, str]:
        capsys.readouterr()
        rc = cli_main([str(a) for a in argv])
        return rc, capsys.readouterr().err

    return run
