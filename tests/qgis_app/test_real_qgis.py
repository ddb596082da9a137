"""UniGeo in the real QGIS application: installed the README's way, every algorithm and tool.

The slim plugin zip (no model, as the QGIS repository serves it) is installed into a throw-away
profile with its private dependency folder (scripts/qgis_profile.sh: `make package`, unzip,
``plugin/deps.py --install``), the real ``qgis`` starts under Xvfb and runs
scripts/qgis_app_check.py inside its own process: the first-run message without a model, the
default bundle installed from dist/model/<name>-<version>.zip through ``unigeo:installmodel`` and
the Model manager, then every Processing algorithm with every kind of query, and every toolbar
tool driven with real mouse events, all on that installed bundle. A
crash of QGIS fails the check that was running, with the crashing thread's Python stack and
native backtrace; QGIS is then started again for the remaining checks. Artefacts (report.json,
screenshots, the outputs, the QGIS logs) go to out/qgis-app (UNIGEO_QGIS_APP_OUT).

This is the test that sees what headless pytest-qgis cannot: the libraries the qgis binary
itself loads (its GEOS, GDAL and PROJ) next to those the plugin's dependencies bring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.qgis_app.session import ROOT, gdb_usable, run_all

pytestmark = pytest.mark.qgis

SESSION_TIMEOUT = 300  # seconds for one QGIS start
BUDGET = 900  # seconds for all QGIS starts together (crashes restart QGIS)
INSTALL_TIMEOUT = 900  # a cold pip cache downloads onnxruntime and friends


def shared_data() -> Path:
    env = os.environ.get("UNIGEO_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _skip_reason() -> str | None:
    for tool, hint in (
        ("qgis", "the QGIS application is not installed (apt-get install qgis)"),
        ("xvfb-run", "xvfb-run is not installed (apt-get install xvfb)"),
        ("unzip", "unzip is not installed"),
        ("git", "git is not installed (scripts/package.sh uses git archive)"),
    ):
        if shutil.which(tool) is None:
            return hint
    if not Path("/usr/bin/python3").is_file():
        return "/usr/bin/python3 (QGIS's Python) is missing"
    if not (shared_data() / "naip_north_dakota").is_dir():
        return f"the shared real data is missing ({shared_data()}; set UNIGEO_SHARED_DATA)"
    return None


def _out(name: str) -> Path:
    base = Path(os.environ.get("UNIGEO_QGIS_APP_OUT", ROOT / "out" / "qgis-app")).resolve()
    out = base if name == "" else base.with_name(f"{base.name}-{name}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


@pytest.fixture(scope="module")
def qgis_home(tmp_path_factory) -> Path:
    """A throw-away HOME whose QGIS profile 'default' has UniGeo installed the README's way."""
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("qgis_home")
    log = root / "install.log"
    with open(log, "w") as f:
        proc = subprocess.run(
            ["bash", "scripts/qgis_profile.sh", str(root), "default"],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
        )
    if proc.returncode != 0:
        pytest.fail(f"installing the plugin the README's way failed:\n{log.read_text()[-4000:]}")
    return root


def model_zip() -> Path:
    """The default bundle zip `make package` wrote (scripts/qgis_profile.sh runs it)."""
    bundle = json.loads((ROOT / "resources" / "models" / "default" / "bundle.json").read_text())
    return ROOT / "dist" / "model" / f"{bundle['name']}-{bundle['version']}.zip"


def run_driver(qgis_home: Path, out: Path, budget: float, **env: str) -> dict:
    """Run the checks; each run starts as a first run, with no model bundle installed."""
    qgis = shutil.which("qgis")
    shutil.rmtree(qgis_home / "profiles" / "default" / "unigeo" / "models", ignore_errors=True)
    env = {"UNIGEO_APP_MODEL_ZIP": str(model_zip()), **env}
    report = run_all(qgis, qgis_home, out, shared_data(), budget, SESSION_TIMEOUT, env)
    report["out"] = str(out)
    (out / "summary.txt").write_text(summary(report))
    return report


def _details(entry: dict) -> str:
    d = entry["details"]
    if isinstance(d, dict) and "crash" in d:
        parts = [d["crash"]]
        for key, title in (
            ("python_stack", "Python stack (faulthandler)"),
            ("native_backtrace", "native backtrace"),
            ("qgis_log_tail", "end of the QGIS log"),
        ):
            if d.get(key):
                parts.append(f"{title}:\n{d[key]}")
        text = "\n".join(parts)
    else:
        text = d if isinstance(d, str) else json.dumps(d, indent=1, default=str)
    return "    " + text.strip().replace("\n", "\n    ")


def summary(report: dict) -> str:
    """One line per check, then every failure in full."""
    checks = report.get("checks", [])
    lines = [
        f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']} ({c.get('seconds', '-')} s)" for c in checks
    ]
    failed = [c for c in checks if not c["ok"]]
    if failed:
        lines.append(f"\n{len(failed)} of {len(checks)} checks failed:")
        lines += [f"- {c['name']}:\n{_details(c)}" for c in failed]
    for key in ("startup_failure", "out_of_time"):
        if report.get(key):
            lines.append(f"\n{key}:\n{report[key]}")
    return "\n".join(lines)


@pytest.mark.timeout(INSTALL_TIMEOUT + BUDGET + 120)
def test_every_algorithm_and_tool_in_the_real_qgis(qgis_home):
    report = run_driver(qgis_home, _out(""), BUDGET)
    out = report["out"]
    assert not report.get("startup_failure"), report["startup_failure"]
    names = [c["name"] for c in report["checks"]]
    missing = [n for n in report.get("planned", []) if n not in names]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed and not missing, (
        f"{len(failed)} of {len(names)} checks failed in the real QGIS"
        + (f", {len(missing)} did not run ({', '.join(missing)})" if missing else "")
        + f" (report {out}/report.json, logs and screenshots in {out}):\n"
        + "\n".join(f"- {c['name']}:\n{_details(c)}" for c in failed)
    )
    assert len(names) >= 33, names  # every algorithm and tool ran


@pytest.mark.timeout(INSTALL_TIMEOUT + 300)
def test_a_qgis_crash_fails_its_check_with_backtraces_and_the_rest_still_runs(qgis_home):
    """A deliberate segfault in a QgsTask thread (as the GEOS clash): reported, QGIS restarted."""
    only = "alg_heatmap_text"
    report = run_driver(
        qgis_home, _out("selftest"), 240, UNIGEO_APP_SELFTEST="crash", UNIGEO_APP_ONLY=only
    )
    by_name = {c["name"]: c for c in report["checks"]}
    setup = ["plugin_loaded", "model_first_run", "model_install_processing"]  # every run needs
    assert list(by_name) == [*setup, "selftest_crash", only], summary(report)
    crash = by_name["selftest_crash"]
    assert not crash["ok"] and crash["crashed"] and crash["session"] == 1
    d = crash["details"]
    assert d["crash"].startswith("QGIS crashed: Segmentation fault"), d["crash"]
    # the Python stack of the thread that crashed: the task's function, in this driver
    thread = d["python_stack"].split("\n\n")[1]
    assert "string_at" in thread and "main.py" in thread, d["python_stack"]
    if gdb_usable():
        assert "received the signal" in d["native_backtrace"], d["native_backtrace"]
        assert "QgsTask" in d["native_backtrace"] or "start_thread" in d["native_backtrace"]
    # session 1 died; session 2 ran the rest and quit cleanly, with 3: a check (the crash) failed
    assert report["exit_status"][0] >= 128 and report["exit_status"][1] == 3, report["exit_status"]
    after = by_name[only]
    assert after["ok"] and after["session"] == 2, summary(report)
