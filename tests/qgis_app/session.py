"""Start the real QGIS on the check driver, again after each crash, and explain each crash.

One QGIS start is a *session*. When QGIS dies (a segfault in a task thread, say) the report
names the check that was running; it is recorded as failed with the Python stack of the crashing
thread (faulthandler), the native backtrace (gdb, when installed) and the end of the QGIS log,
and QGIS is started again to run the checks after it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "scripts" / "qgis_app_check.py"
SCREEN = "-screen 0 1600x1000x24"
# gdb runs QGIS: on a fatal signal it prints the stopped thread's backtrace, then lets Python's
# faulthandler (and QGIS's own handler) run, and exits with QGIS's status (128 + signal).
GDB_COMMANDS = """\
set pagination off
set confirm off
set print thread-events off
set print inferior-events off
handle SIGPIPE nostop noprint pass
run
if $_isvoid($_exitcode)
  echo \\n=== native backtrace of the thread that received the signal (gdb) ===\\n
  bt 50
  echo === end of native backtrace ===\\n
  handle all nostop noprint pass
  continue
end
if !$_isvoid($_exitcode)
  quit $_exitcode
end
if !$_isvoid($_exitsignal)
  quit 128 + $_exitsignal
end
quit 1
"""
UNSET = ("QT_QPA_PLATFORM", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
# the plugin must find its models where a user's QGIS does: <profile>/unigeo/models, the pin
UNSET += ("UNIGEO_MODELS_DIR", "UNIGEO_MODEL_URL")


def _program(qgis: str) -> list[str]:
    """``qgis`` as gdb must start it: Debian's is a shell script that execs qgis.bin."""
    with open(qgis, "rb") as f:
        head = f.readline()
    return [*head[2:].decode().split(), qgis] if head.startswith(b"#!") else [qgis]


def command(qgis: str, root: Path, out: Path, use_gdb: bool) -> list[str]:
    """The xvfb-run command line of one session."""
    args = ["--profiles-path", str(root), "--profile", "default", "--nologo"]
    args += ["--code", str(DRIVER)]
    if not use_gdb:
        return ["xvfb-run", "-a", "-s", SCREEN, qgis, *args]
    cmds = out / "gdb.commands"
    cmds.write_text(GDB_COMMANDS)
    gdb = ["gdb", "-q", "-batch", "-x", str(cmds), "--args", *_program(qgis)]
    return ["xvfb-run", "-a", "-s", SCREEN, *gdb, *args]


@functools.cache
def gdb_usable() -> bool:
    """gdb is installed, not switched off (UNIGEO_QGIS_GDB=0), and may trace (containers)."""
    if shutil.which("gdb") is None or os.environ.get("UNIGEO_QGIS_GDB", "1") == "0":
        return False
    try:
        cmd = ["gdb", "-q", "-batch", "-ex", "run", "--args", "/bin/true"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "exited normally" in proc.stdout + proc.stderr


def run_session(
    qgis: str, root: Path, out: Path, data: Path, n: int, timeout: float, env_extra: dict
) -> int:
    """One QGIS start; its exit status (-1 when it had to be killed)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    runtime = root / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env.update(
        HOME=str(root),
        XDG_RUNTIME_DIR=str(runtime),
        UNIGEO_APP_OUT=str(out),
        UNIGEO_APP_DATA=str(data),
        UNIGEO_APP_ROOT=str(ROOT),
        UNIGEO_APP_SESSION=str(n),
        UNIGEO_APP_TIMEOUT=str(int(timeout - 30)),  # the driver's watchdog dumps stacks first
        **env_extra,
    )
    cmd = command(qgis, root, out, gdb_usable())
    with open(out / f"qgis.{n}.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return -1


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_all(
    qgis: str,
    root: Path,
    out: Path,
    data: Path,
    budget: float,
    timeout: float,
    env_extra: dict | None = None,
) -> dict:
    """Sessions until the driver finishes, QGIS fails to start, or ``budget`` seconds pass.

    ``env_extra`` goes to the driver (e.g. UNIGEO_APP_ONLY, UNIGEO_APP_SELFTEST).
    """
    t0 = time.monotonic()
    report: dict = {}
    for n in range(1, 30):
        left = budget - (time.monotonic() - t0)
        limit = min(timeout, max(left, 60))
        rc = run_session(qgis, root, out, data, n, limit, env_extra or {})
        report = _load(out / "report.json")
        report.setdefault("exit_status", []).append(rc)
        if report.get("finished") and rc not in (0, 3):  # all checks done, then QGIS died
            report["checks"].append(crash_entry("quit_qgis", rc, out, n))
        if report.get("finished") or not report.get("running"):
            if not report.get("finished"):
                report["startup_failure"] = startup_failure(rc, out, n)
            break
        report["checks"].append(crash_entry(report["running"], rc, out, n))
        report["running"] = None
        (out / "report.json").write_text(json.dumps(report, indent=1))
        if time.monotonic() - t0 > budget:
            report["out_of_time"] = f"stopped after {budget:.0f} s; later checks did not run"
            break
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def describe_status(rc: int, python_stack: str = "") -> str:
    """What QGIS's exit status means; the first fatal error faulthandler saw names the cause."""
    first = python_stack.splitlines()[0] if python_stack else ""
    if first.startswith("Fatal Python error:"):
        cause = first.split(":", 1)[1].strip()
        return f"QGIS crashed: {cause} (exit status {rc})"
    if rc == -1:
        return "QGIS hung and was killed"
    if rc == 1:
        return "QGIS hung: the driver's watchdog dumped every thread and exited"
    if rc > 128:
        try:
            name = signal.Signals(rc - 128).name
        except ValueError:
            name = "?"
        return f"QGIS died on signal {rc - 128} ({name})"
    return f"QGIS exited with status {rc} in the middle of the check"


def faulthandler_stack(out: Path, n: int) -> str:
    """The first fatal-error block of the session's faulthandler log (all threads)."""
    path = out / f"faulthandler.{n}.log"
    text = path.read_text(errors="replace") if path.is_file() else ""
    block = text.split("\nExtension modules:")[0]
    return block.strip()[-6000:]


def native_backtrace(log: str) -> str:
    start = log.find("=== native backtrace")
    end = log.find("=== end of native backtrace", start)
    return log[start:end].strip()[-6000:] if start >= 0 else ""


def log_tail(log: str, lines: int = 30) -> str:
    """The last lines QGIS printed before it died (gdb's own output left out)."""
    start = log.find("=== native backtrace")
    log = log[:start] if start >= 0 else log
    keep = [ln for ln in log.splitlines() if not ln.startswith(("[New LWP", "[New Thread"))]
    return "\n".join(keep[-lines:])


def crash_entry(name: str, rc: int, out: Path, n: int) -> dict:
    """The failed-check entry for the check that was running when QGIS died or hung."""
    log = (out / f"qgis.{n}.log").read_text(errors="replace")
    stack = faulthandler_stack(out, n)
    details = {
        "crash": f"{describe_status(rc, stack)} during this check (session {n})",
        "python_stack": stack,
        "native_backtrace": native_backtrace(log),
        "qgis_log_tail": log_tail(log, 15),
    }
    return {"name": name, "ok": False, "details": details, "session": n, "crashed": True}


def startup_failure(rc: int, out: Path, n: int) -> str:
    """Why no check ran in session ``n`` (QGIS or the driver failed before the first check)."""
    setup = _load(out / "setup_error.json").get("error", "")
    log = (out / f"qgis.{n}.log").read_text(errors="replace")
    return "\n".join(
        [
            f"{describe_status(rc, faulthandler_stack(out, n))} before any check ran (session {n})",
            setup,
            native_backtrace(log),
            log_tail(log, 60),
        ]
    )
