"""Bundle zips: reproducible packing, sha256 files, and hostile archives refused before unpacking."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path

import pytest

from engine.errors import InputError, ModelInstallError
from engine.library.install import install_bundle
from engine.library.unpack import (
    UnpackLimits,
    normalise_sha256,
    pack_bundle,
    sidecar_sha256,
    unpack_bundle,
)
from tests.models.conftest import visible


def _zip(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    """A zip of ``members``; ``link`` adds a symbolic-link member of that name."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_pack_is_reproducible_and_writes_a_sha256_file(bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    folder = zip_path.parent.parent / "analytic"
    again, sha2 = pack_bundle(folder, tmp_path)
    assert sha2 == sha and again.read_bytes() == zip_path.read_bytes()
    assert hashlib.sha256(zip_path.read_bytes()).hexdigest() == sha
    assert Path(f"{zip_path}.sha256").read_text() == f"{sha}  analytic-1.zip\n"
    assert sidecar_sha256(zip_path) == sha
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert all(n.startswith("analytic-1/") for n in names) and "analytic-1/bundle.json" in names
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_normalise_sha256():
    digest = "AB" * 32
    assert normalise_sha256(digest) == digest.lower()
    assert normalise_sha256(f"{digest}  model.zip\n") == digest.lower()
    with pytest.raises(InputError, match="is not a sha256"):
        normalise_sha256("abc")


def test_local_zip_uses_its_sha256_file(bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    copy = tmp_path / "b.zip"
    copy.write_bytes(zip_path.read_bytes())
    Path(f"{copy}.sha256").write_text("f" * 64 + "  b.zip\n")
    with pytest.raises(ModelInstallError, match="f{64} was expected"):
        install_bundle(copy, tmp_path / "models")
    assert visible(tmp_path / "models") == []
    Path(f"{copy}.sha256").write_text(f"{sha}  b.zip\n")
    assert install_bundle(copy, tmp_path / "models").sha256 == sha


def test_folder_source_is_copied_and_checked(bundle_zip, tmp_path):
    folder = bundle_zip[0].parent.parent / "analytic"
    res = install_bundle(folder, tmp_path / "models")
    assert res.sha256 is None and (tmp_path / "models" / "analytic-1" / "gps.onnx").is_file()
    assert (folder / "gps.onnx").is_file()  # the source is left as it was


@pytest.mark.parametrize(
    "members, link, why",
    [
        ({"b/bundle.json": b"{}", "../evil.txt": b"x"}, None, "unsafe path '../evil.txt'"),
        ({"b/bundle.json": b"{}", "/abs.txt": b"x"}, None, "unsafe path '/abs.txt'"),
        ({"b/bundle.json": b"{}", "b\\..\\x": b"x"}, None, "unsafe path"),
        ({"b/bundle.json": b"{}", "C:/x": b"x"}, None, "unsafe path 'C:/x'"),
        ({"b/bundle.json": b"{}"}, "b/link.onnx", "is a symbolic link"),
        ({"a/bundle.json": b"{}", "b/bundle.json": b"{}"}, None, "no bundle.json at its root"),
        ({"b/readme.txt": b"x"}, None, "no bundle.json"),
    ],
)
def test_hostile_or_foreign_zips_are_refused(tmp_path, members, link, why):
    z = _zip(tmp_path / "x.zip", members, link)
    with pytest.raises(ModelInstallError, match=why.replace("\\", "\\\\")):
        unpack_bundle(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    with pytest.raises(ModelInstallError):
        install_bundle(z, tmp_path / "models")
    assert visible(tmp_path / "models") == []


def test_limits_and_non_zips(tmp_path):
    many = _zip(tmp_path / "many.zip", {f"b/{i}.bin": b"x" for i in range(20)})
    with pytest.raises(ModelInstallError, match="holds 20 entries"):
        unpack_bundle(many, tmp_path / "o1", UnpackLimits(max_members=10))
    big = _zip(tmp_path / "big.zip", {"b/bundle.json": b"{}", "b/w.bin": b"\0" * 100_000})
    with pytest.raises(ModelInstallError, match="unpacks to 0.0 GB, above"):
        unpack_bundle(big, tmp_path / "o2", UnpackLimits(max_total_bytes=50_000))
    with pytest.raises(ModelInstallError, match="'b/w.bin' unpacks to"):
        unpack_bundle(big, tmp_path / "o3", UnpackLimits(max_member_bytes=50_000))
    text = tmp_path / "page.zip"
    text.write_text("<html>not found</html>")
    with pytest.raises(ModelInstallError, match="page.zip is not a readable zip"):
        unpack_bundle(text, tmp_path / "o4")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
