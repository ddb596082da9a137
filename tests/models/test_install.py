"""Installing bundles from a local HTTP server: success, resume, and every refusal leaves nothing."""

from __future__ import annotations

import json

import pytest

from engine.errors import CancelledError, ModelInstallError
from engine.library.install import install_bundle
from engine.library.installed import list_bundles
from tests.fixtures.analytic_bundle import break_bundle
from tests.models.conftest import make_bundle_zip, visible


def _install(url, models, sha, **kw):
    progress: list[float] = []
    messages: list[str] = []
    res = install_bundle(url, models, sha, progress=progress.append, message=messages.append, **kw)
    return res, progress, messages


def test_install_from_local_server(server, bundle_zip, tmp_path):
    from engine.model import UniGeoModel

    zip_path, sha = bundle_zip
    url = server.serve("analytic-1.zip", zip_path.read_bytes())
    models = tmp_path / "models"
    res, progress, messages = _install(url, models, sha)
    folder = models / "analytic-1"
    assert res.bundle.folder == folder and res.activated and res.sha256 == sha
    assert not res.already_installed
    assert visible(models) == ["active.json", "analytic-1"]  # no staging or partial file left
    assert json.loads((models / "active.json").read_text()) == {"folder": "analytic-1"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "aerial.onnx", "bundle.json", "dsm.onnx", "gps.onnx", "notes.bin", "streetview.onnx",
        "text.onnx", "tokenizer.json",
    ]  # fmt: skip
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > 3
    assert any("verifying sha256" in m for m in messages)
    assert server.requests == [("/analytic-1.zip", None)]
    with UniGeoModel.load(folder, providers="cpu", threads=1) as model:
        e = model.encode_gps([0.0], [90.0])  # analytic GPS tower: (cos lat cos lon, ..., sin lat)
    assert e[0, :3] == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)
    listed = list_bundles(models)
    assert [(b.key, b.active, b.problem) for b in listed] == [("analytic-1", True, "")]


def test_wrong_sha256_is_refused_and_leaves_nothing(server, bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    url = server.serve("b.zip", zip_path.read_bytes())
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError, match=f"sha256 of .* is {sha} but {wrong} was expected"):
        install_bundle(url, models, wrong)
    assert visible(models) == []


def test_truncated_download_is_refused_and_leaves_nothing(server, bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    server.mode = "truncate_always"
    url = server.serve("b.zip", zip_path.read_bytes())
    models = tmp_path / "models"
    size = zip_path.stat().st_size
    with pytest.raises(ModelInstallError, match=r"stopped at 0\.\d of 0\.\d MB 4 times"):
        install_bundle(url, models, sha)
    assert len(server.requests) == 4  # the first try and three resumes
    assert server.requests[1][1] == f"bytes={size // 2}-"
    assert visible(models) == []


def test_cancelled_download_is_refused_and_leaves_nothing(server, bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    url = server.serve("b.zip", zip_path.read_bytes())
    models = tmp_path / "models"
    seen: list[float] = []
    with pytest.raises(CancelledError, match="cancelled; nothing was installed"):
        install_bundle(url, models, sha, progress=seen.append, is_canceled=lambda: bool(seen))
    assert 0 < seen[0] < 0.7  # it stopped during the download, after the first chunk
    assert visible(models) == []


@pytest.mark.parametrize(
    "how, why",
    [
        ("bad_opset", "opset 99"),
        ("wrong_input_name", "inputs \\['renamed'"),
        ("missing_tokenizer", "tokenizer 'tokenizer.json' is missing"),
        ("wrong_dim", "outputs D=9 but bundle.json says dim=8"),
        ("truncated", "corrupt or truncated"),
    ],
)
def test_bundle_the_engine_cannot_run_is_refused(server, tmp_path, how, why):
    from engine.library.unpack import pack_bundle
    from tests.fixtures.analytic_bundle import make_analytic_bundle

    folder = make_analytic_bundle(tmp_path / "b")
    break_bundle(folder, how)
    zip_path, sha = pack_bundle(folder, tmp_path / "dist")
    url = server.serve("b.zip", zip_path.read_bytes())
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError, match=f"cannot use the bundle: .*{why}"):
        install_bundle(url, models, sha)
    assert visible(models) == []


def test_dropped_download_resumes_with_range_and_verifies(server, bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    server.mode = "truncate_once"
    url = server.serve("b.zip", zip_path.read_bytes())
    models = tmp_path / "models"
    size = zip_path.stat().st_size
    res, progress, _ = _install(url, models, sha)
    assert res.sha256 == sha and (models / "analytic-1" / "bundle.json").is_file()
    assert server.requests == [("/b.zip", None), ("/b.zip", f"bytes={size // 2}-")]
    assert server.sent == size  # the second request sent only the missing half
    assert progress == sorted(progress)
    assert visible(models) == ["active.json", "analytic-1"]


def test_server_without_range_support_restarts_cleanly(server, bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    server.mode = "truncate_once_no_range"
    url = server.serve("b.zip", zip_path.read_bytes())
    models = tmp_path / "models"
    res, _, _ = _install(url, models, sha)
    size = zip_path.stat().st_size
    assert res.sha256 == sha and server.sent == size // 2 + size  # half, then all again
    assert visible(models) == ["active.json", "analytic-1"]


def test_pinned_size_mismatch_is_refused(server, bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    url = server.serve("b.zip", zip_path.read_bytes())
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError, match="the server holds another file"):
        install_bundle(url, models, sha, expected_size=zip_path.stat().st_size + 1)
    assert visible(models) == []


def test_http_errors_and_url_policy(server, tmp_path):
    models = tmp_path / "models"
    sha = "a" * 64
    with pytest.raises(ModelInstallError, match="answered 404"):
        install_bundle(server.url("missing.zip"), models, sha)
    with pytest.raises(ModelInstallError, match="refusing plain http for example.org"):
        install_bundle("http://example.org/b.zip", models, sha)
    with pytest.raises(ModelInstallError, match="not an https URL"):
        install_bundle("ftp://example.org/b.zip", tmp_path / "m", sha)
    with pytest.raises(ModelInstallError, match="give the bundle's sha256"):
        install_bundle("https://example.org/b.zip", models, None)
    with pytest.raises(ModelInstallError, match="cannot reach 127.0.0.1"):
        install_bundle("http://127.0.0.1:9/b.zip", models, sha)  # the discard port: closed
    assert visible(models) == []
    assert [p for p, _ in server.requests] == ["/missing.zip"]


def test_same_name_other_files_needs_replace(server, bundle_zip, tmp_path):
    zip_path, sha = bundle_zip
    models = tmp_path / "models"
    install_bundle(zip_path, models, sha)
    again = install_bundle(zip_path, models, sha)
    assert again.already_installed and not again.activated
    # same name and version, another model (bundle.json differs): refused unless replace=True
    other_zip, other_sha = make_bundle_zip(
        tmp_path / "other", tmp_path / "d2", pad=1000, description="another export"
    )
    with pytest.raises(ModelInstallError, match="analytic-1 is already installed with other"):
        install_bundle(other_zip, models, other_sha)
    assert (models / "analytic-1" / "notes.bin").stat().st_size > 1000  # the first install
    res = install_bundle(other_zip, models, other_sha, replace=True)
    assert not res.already_installed and res.bundle.description == "another export"
    assert (models / "analytic-1" / "notes.bin").stat().st_size == 1000
    assert visible(models) == ["active.json", "analytic-1"]
