"""Fixtures for the reliability suite: small generated rasters, CLI runner, leftover checks."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from engine.cli.main import main as cli_main

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
    """Names under ``folder`` that mark an unfinished write: ``.part``, ``.partial`` or ``.tmp``
    in the name, or a hidden name of any suffix (the writers' temporary files and staging
    folders, ``.hits.gpkg.k2j4x_9a``; a store's lock file and replaced ``.x.store.old-*``)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if any(m in p.name for m in PARTIAL_MARKERS) or p.name.startswith(".")
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


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[Callable[[], None]]:
    """Yield ``freeze()`` for the empty ``folder``: fill it, then freeze it read-only.

    Root writes anywhere, so as root a tmpfs mounted on ``folder`` is remounted read-only
    (skipped without mount rights); otherwise the folder's mode becomes 0555.
    """
    if os.geteuid() != 0:
        try:
            yield lambda: folder.chmod(0o555)
        finally:
            folder.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(folder)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"root without mount rights: no read-only folder ({r.stderr.strip()[:60]})")
    try:
        yield lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture()
def frozen(tmp_path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """``(folder, freeze)``: see :func:`read_only_folder`."""
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only_folder(folder) as freeze:
        yield folder, freeze


def one_error_line(rc: int, err: str) -> str:
    """The single ``error:`` line of a failed CLI run (progress bars aside); asserts its form:
    exit 2, one line, no traceback, not the last-resort 'unexpected' message."""
    assert "Traceback" not in err, err
    lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and "‰" not in ln]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, lines)
    assert "unexpected" not in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def store_copy(good_store, tmp_path) -> Path:
    """A private copy of the good store (a test may try to damage it)."""
    return Path(shutil.copytree(good_store, tmp_path / "s.store"))
