"""UniGeo in the real QGIS application: installed the README's way, every algorithm and tool.

The plugin zip is installed into a throw-away profile with its private dependency folder
(scripts/qgis_profile.sh: `make package`, unzip, ``plugin/deps.py --install``), the real ``qgis``
starts under Xvfb and runs scripts/qgis_app_check.py inside its own process: every Processing
algorithm with every kind of query, and every toolbar tool driven with real mouse events. A
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

from tests.qgis_app.session import ROOT, run_all

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


@pytest.fixture(scope="module")
def app_report(tmp_path_factory) -> dict:
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    out = Path(os.environ.get("UNIGEO_QGIS_APP_OUT", ROOT / "out" / "qgis-app")).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    root = tmp_path_factory.mktemp("qgis_home")
    with open(out / "install.log", "w") as log:
        proc = subprocess.run(
            ["bash", "scripts/qgis_profile.sh", str(root), "default"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
        )
    if proc.returncode != 0:
        tail = (out / "install.log").read_text()[-4000:]
        pytest.fail(f"installing the plugin the README's way failed:\n{tail}")
    report = run_all(shutil.which("qgis"), root, out, shared_data(), BUDGET, SESSION_TIMEOUT)
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
def test_every_algorithm_and_tool_in_the_real_qgis(app_report):
    out = app_report["out"]
    assert not app_report.get("startup_failure"), app_report["startup_failure"]
    names = [c["name"] for c in app_report["checks"]]
    missing = [n for n in app_report.get("planned", []) if n not in names]
    failed = [c for c in app_report["checks"] if not c["ok"]]
    assert not failed and not missing, (
        f"{len(failed)} of {len(names)} checks failed in the real QGIS"
        + (f", {len(missing)} did not run ({', '.join(missing)})" if missing else "")
        + f" (report {out}/report.json, logs and screenshots in {out}):\n"
        + "\n".join(f"- {c['name']}:\n{_details(c)}" for c in failed)
    )
    assert len(names) >= 28, names  # every algorithm and tool ran
