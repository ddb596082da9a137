"""Interruption: SIGKILL an embed run and a training run midway, rerun, and compare results.

Cancelling a plugin QgsTask is covered by tests/plugin/test_tasks.py.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.reliability.conftest import leftovers, random_uint8, write_raster

ROOT = Path(__file__).resolve().parents[2]
# 64 x 64 tiles of the analytic bundle = 2 x 2 blocks of 32 x 32 tiles
RASTER_PX = 1024


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when it finished first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return True
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the run neither finished nor reached the kill point in time")


def _blocks_done(partial: Path) -> int:
    try:
        return int(np.load(partial / "done.npy", mmap_mode="r").sum())
    except (OSError, ValueError):  # not created yet, or header being written
        return 0


def test_killed_embed_resumes_to_identical_store(analytic_bundle, tmp_path):
    src = write_raster(tmp_path / "big.tif", random_uint8(4, RASTER_PX, seed=3))
    cmd = [sys.executable, "-m", "engine", "embed", str(src), "--model", str(analytic_bundle)]
    cmd += ["--batch-size", "8"]
    straight, killed = tmp_path / "straight.store", tmp_path / "killed.store"
    subprocess.run([*cmd, "--out", str(straight)], check=True, env=_env(), cwd=ROOT,
                   capture_output=True)  # fmt: skip

    partial = killed.with_name(killed.name + ".partial")
    proc = subprocess.Popen(
        [*cmd, "--out", str(killed)], env=_env(), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    was_killed = _kill_when(proc, lambda: _blocks_done(partial) >= 1)
    if was_killed:  # the machine was fast enough to catch it midway
        assert partial.is_dir() and not killed.exists()
        assert 1 <= _blocks_done(partial) < 4
    rerun = subprocess.run([*cmd, "--out", str(killed)], env=_env(), cwd=ROOT, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert was_killed, "the first run finished before it could be killed"
    for name in ("embeddings.npy", "valid.npy"):
        assert (straight / name).read_bytes() == (killed / name).read_bytes(), name
    assert leftovers(tmp_path) == []  # the .partial folder became the store


def _losses(metrics: Path) -> dict[int, float]:
    with open(metrics, newline="") as f:
        return {int(float(r["step"])): float(r["loss"]) for r in csv.DictReader(f)}


def test_killed_training_resumes_the_same_loss_curve(tmp_path):
    """Kill ``training.train`` after its step-4 checkpoint; the resumed run logs the losses of
    an uninterrupted run (about 31 s on 2 cores; part of make test on purpose)."""
    steps = 10
    base = [sys.executable, "-m", "training.train", "--config", "tiny", "--threads", "1"]
    base += [f"--set=steps={steps}", "--set=ckpt_every=2", "--set=log_every=1"]
    base += ["--set=eval_every=0", "--set=data.num_samples=128", "--set=data.num_val=32"]
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run([*base, "--out", str(a)], check=True, env=_env(), cwd=ROOT,
                   capture_output=True)  # fmt: skip
    proc = subprocess.Popen([*base, "--out", str(b)], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def reached_step_4() -> bool:
        m = b / "metrics.csv"
        return m.is_file() and max(_losses(m), default=0) >= 4

    assert _kill_when(proc, reached_step_4, timeout=300), "training finished before the kill"
    rerun = subprocess.run([*base, "--out", str(b), "--resume", str(b / "checkpoint.pt")],
                           env=_env(), cwd=ROOT, capture_output=True)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    want, got = _losses(a / "metrics.csv"), _losses(b / "metrics.csv")
    assert sorted(got) == list(range(1, steps + 1))
    np.testing.assert_allclose([got[s] for s in range(1, steps + 1)],
                               [want[s] for s in range(1, steps + 1)], rtol=1e-5)  # fmt: skip
