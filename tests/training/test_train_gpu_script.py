"""scripts/train_gpu.sh end to end, run on the CPU (DEVICE=cpu): the wiring a GPU run relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_gpu.sh"


def _run(out: Path, env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, **env_extra}
    return subprocess.run(["bash", str(SCRIPT), str(out), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_gpu_script_trains_reports_evaluates_and_exports(tmp_path):
    from engine.model.bundle_spec import BundleSpec

    sets = ["--set", "data.num_samples=96", "--set", "data.num_val=48",
            "--set", "data.batch_size=16"]  # fmt: skip
    res = _run(tmp_path / "run", {"DEVICE": "cpu", "CONFIG": "tiny", "PEAK_TFLOPS": "1"},
               "toy", "4", *sets)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    train = tmp_path / "run" / "train"
    perf = json.loads((train / "perf.json").read_text())
    assert perf["device"] == "cpu" and perf["global_batch"] == 16 and perf["world_size"] == 1
    assert perf["samples_per_s"] > 0 and 0 <= perf["data_wait_fraction"] < 1
    assert perf["mfu"] == pytest.approx(perf["achieved_tflops_per_device"] / 1.0)
    assert perf["achieved_tflops_per_device"] == pytest.approx(
        perf["flops_per_sample"] * perf["samples_per_s"] / 1e12
    )
    assert (train / "checkpoint.pt").is_file() and (train / "curves.png").is_file()
    assert "| aerial->gps |" in (train / "eval.md").read_text()
    bundle = tmp_path / "run" / "bundle"
    spec = BundleSpec.read(bundle)
    for name in spec.encoders.values():
        assert (bundle / name).is_file()
    assert "== performance" in res.stdout and '"mfu"' in res.stdout


def test_gpu_script_without_a_gpu_says_so_and_writes_nothing(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = _run(tmp_path / "run", {})
    assert res.returncode == 2
    assert "no CUDA GPU visible" in res.stderr
    assert not (tmp_path / "run").exists()


def test_gpu_script_runs_the_locked_stages_for_an_effnet_config(tmp_path):
    """CONFIG with an EfficientNet aerial tower: cache, stage 1, stage 2, export."""
    import yaml

    from engine.model.bundle_spec import BundleSpec
    from engine.model.contract import Modality
    from training.data.synth import SynthConfig, generate

    from .test_locked import lit_config

    data = tmp_path / "ds"
    generate(SynthConfig(size=72, chip_px=32, street_px=32, seed=3), data)
    cfg = lit_config(data, tmp_path / "cache", locked={"stage2_steps": 2})
    conf = tmp_path / "lit_small.yaml"
    conf.write_text(yaml.safe_dump(cfg.to_dict()))
    res = _run(tmp_path / "run", {"DEVICE": "cpu", "CONFIG": str(conf)}, str(data), "3")
    assert res.returncode == 0, res.stderr[-3000:]
    train = tmp_path / "run" / "train"
    for f in ("stage1.pt", "stage2.pt", "checkpoint.pt", "metrics_stage1.csv"):
        assert (train / f).is_file(), f
    assert "== locked-image training:" in res.stdout
    spec = BundleSpec.read(tmp_path / "run" / "bundle")
    assert spec.format_version == 2 and set(spec.encoders) == set(Modality)
