"""Installed bundles: card summaries, choosing the active one, removing, and the CLI over them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.errors import InputError
from engine.library.install import install_bundle
from engine.library.installed import (
    active_bundle,
    find_bundle,
    list_bundles,
    remove_bundle,
    set_active,
    summarise,
)
from tests.models.conftest import make_bundle_zip, visible

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "resources" / "models" / "default"


def test_card_summary_of_the_default_bundle(tmp_path):
    folder = tmp_path / "unigeo-default-0.3.0"
    folder.mkdir()
    shutil.copy(DEFAULT / "bundle.json", folder)  # listing reads bundle.json only
    b = summarise(folder, active=True)
    assert (b.name, b.version, b.active, b.problem) == ("unigeo-default", "0.3.0", True, "")
    assert b.modalities == ("aerial", "streetview", "dsm", "text", "gps")
    assert b.provenance["streetview"] == "synthetic"
    assert b.domain.startswith("17 areas (W,S,E,N: -77.10,38.76,-77.00,38.86;")
    assert b.domain.endswith("and 14 more); GSD 1-130 m")
    assert b.accuracies[0].startswith(
        "zero-shot land use 27.0 % (n_test 478, classes 9, chance 0.1111"
    )
    assert b.licence == "" and b.size_bytes == (DEFAULT / "bundle.json").stat().st_size
    lines = b.card_lines()
    assert lines[0] == "unigeo-default 0.3.0  (active)"
    assert "  licence: not declared in bundle.json" in lines
    assert "  modalities: aerial (real), streetview (synthetic), dsm (derived), text (derived), " \
        "gps (real)" in lines  # fmt: skip


def test_licence_and_unreadable_bundles(tmp_path):
    good = tmp_path / "m" / "x-1"
    good.mkdir(parents=True)
    d = json.loads((DEFAULT / "bundle.json").read_text())
    d["license"] = "CC-BY-4.0"
    (good / "bundle.json").write_text(json.dumps(d))
    bad = tmp_path / "m" / "broken"
    bad.mkdir()
    (bad / "bundle.json").write_text("{not json")
    (tmp_path / "m" / ".install.abc").mkdir()  # an install in progress: never listed
    (tmp_path / "m" / ".install.abc" / "bundle.json").write_text("{}")
    listed = {b.key: b for b in list_bundles(tmp_path / "m")}
    assert sorted(listed) == ["broken", "x-1"]
    assert listed["x-1"].licence == "CC-BY-4.0"
    assert "not valid JSON" in listed["broken"].problem
    assert listed["broken"].card_lines()[1].startswith("  unusable: ")


def test_use_find_and_remove(bundle_zip, tmp_path):
    models = tmp_path / "models"
    install_bundle(bundle_zip[0], models)
    other, _ = make_bundle_zip(tmp_path / "o", tmp_path / "d", pad=0, name="other", version="2")
    res = install_bundle(other, models)
    assert not res.activated  # one was active already
    assert active_bundle(models) == models / "analytic-1"
    assert set_active(models, "other") == models / "other-2"  # by bundle name, installed once
    assert [b.key for b in list_bundles(models) if b.active] == ["other-2"]
    with pytest.raises(InputError, match=r"no installed model bundle 'nope' .*analytic-1, other-2"):
        find_bundle(models, "nope")
    assert remove_bundle(models, "other-2") == models / "other-2"
    assert active_bundle(models) is None  # the active one was removed: none is active
    assert visible(models) == ["analytic-1"]
    (models / "active.json").write_text('{"folder": "../analytic-1"}')
    assert active_bundle(models) is None  # a pointer outside the folder is ignored


def test_cli_install_list_use_remove(bundle_zip, tmp_path, capsys):
    zip_path, sha = bundle_zip
    models = tmp_path / "models"
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    assert "no model bundle installed" in capsys.readouterr().out
    assert main(["models", "install", str(zip_path), "--sha256", sha,
                 "--models-dir", str(models)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"installed: analytic 1 in {models / 'analytic-1'} (active)" in out
    assert f"sha256 verified: {sha}" in out
    assert main(["models", "list", "--json", "--models-dir", str(models)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["models_dir"] == str(models)
    assert [(b["key"], b["active"]) for b in listed["bundles"]] == [("analytic-1", True)]
    assert listed["bundles"][0]["modalities"] == ["aerial", "streetview", "dsm", "text", "gps"]
    assert main(["models", "use", "analytic-1", "--models-dir", str(models)]) == 0
    assert main(["models", "remove", "analytic", "--models-dir", str(models)]) == 0
    assert "removed: " in capsys.readouterr().out and visible(models) == []


def test_cli_errors_exit_2_and_leave_nothing(bundle_zip, tmp_path, capsys):
    zip_path, sha = bundle_zip
    models = tmp_path / "models"
    args = ["models", "install", str(zip_path), "--models-dir", str(models)]
    assert main([*args, "--sha256", "0" * 64]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar's lines
    assert (
        err.startswith("error: the sha256 of analytic-1.zip is ") and "nothing was installed" in err
    )
    assert main(["models", "install", "--models-dir", str(models)]) == 2
    assert "give either a SOURCE" in capsys.readouterr().err
    assert main(["models", "use", "x", "--models-dir", str(models)]) == 2
    assert visible(models) == []


def test_cli_pack_then_install_the_default_through_a_mirror_url(server, tmp_path, capsys,
                                                                monkeypatch):  # fmt: skip
    """The pinned default bundle: packing the checkout's model gives the pinned zip, and
    ``install --default`` fetches it from UNIGEO_MODEL_URL and verifies the pinned sha256."""
    from engine.library.catalog import DEFAULT_BUNDLE, MODEL_URL_ENV

    assert main(["models", "pack", str(DEFAULT), "--out", str(tmp_path / "dist")]) == 0
    zip_path = tmp_path / "dist" / DEFAULT_BUNDLE.file_name
    assert f"sha256 {DEFAULT_BUNDLE.sha256}" in capsys.readouterr().out
    assert zip_path.stat().st_size == DEFAULT_BUNDLE.size
    monkeypatch.setenv(MODEL_URL_ENV, server.serve("mirror/default.zip", zip_path.read_bytes()))
    models = tmp_path / "profile" / "unigeo" / "models"
    assert main(["models", "install", "--default", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert (
        f"installed: unigeo-default {DEFAULT_BUNDLE.version}" in out
        and DEFAULT_BUNDLE.sha256 in out
    )
    assert server.requests == [("/mirror/default.zip", None)]
    assert active_bundle(models) == models / f"unigeo-default-{DEFAULT_BUNDLE.version}"
    assert visible(models) == ["active.json", f"unigeo-default-{DEFAULT_BUNDLE.version}"]
