"""Lint does not depend on the checkout's folder name: ruff passes in a copy named ``unigeo``.

QGIS needs the plugin folder to be named ``unigeo``, so users clone into that name; the
repository root is itself a package (QGIS's ``__init__.py``), and ruff's import sorting once
counted ``unigeo`` as first-party there only (I001 in bench/plugin_latency.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_files() -> list[str]:
    """Tracked and untracked-but-not-ignored Python files and pyproject.toml of the work tree."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot list the files ruff checks")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.py"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    files = [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]
    return [*files, "pyproject.toml"]


@pytest.mark.parametrize("folder", ["unigeo", "some-checkout"])
def test_ruff_passes_whatever_the_folder_is_called(tmp_path, folder):
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (the dev extra)")
    dest = tmp_path / folder
    for rel in _lint_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    assert (dest / "__init__.py").is_file()  # the root package that made the name matter
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=dest,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"ruff in a folder named '{folder}':\n{proc.stdout}{proc.stderr}"
