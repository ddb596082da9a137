"""The input pipeline across epochs, auto workers, and the throughput / MFU report (on CPU)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.training.conftest import tiny_config
from training.loader import MAX_AUTO_WORKERS, EpochBatches, make_loader, resolve_workers
from training.perf import second_half_rates, step_flops, write_perf
from training.sampler import GeoClusteredBatchSampler, rank_slice


class _EpochRecorder(torch.utils.data.Dataset):
    """Returns (epoch it was set to, index): shows which epoch a worker process saw."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.epoch, i


def _sampler(n: int = 40, batch: int = 8) -> GeoClusteredBatchSampler:
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(45, 49, n), rng.uniform(5, 9, n)
    return GeoClusteredBatchSampler(list(lat), list(lon), batch, 0.5, 0.5, 3)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 2)])
def test_one_loader_spans_epochs_with_the_per_epoch_order_and_views(workers, rank, world):
    sampler, ds = _sampler(), _EpochRecorder(40)
    per_epoch = len(sampler)
    start_epoch, start = 1, 3  # resumed mid-epoch
    loader = make_loader(ds, EpochBatches(sampler, rank, world, start_epoch, start), list,
                         workers, pin_memory=False)  # fmt: skip
    expected = [
        (e, rank_slice(b, rank, world))
        for e in (1, 2, 3)
        for b in sampler.iter_from(e, start if e == start_epoch else 0)
    ]
    got = []
    for batch, _ in zip(loader, range(len(expected)), strict=False):
        got.append(batch)
    assert len(got) == len(expected) == 3 * per_epoch - start
    for batch, (epoch, idx) in zip(got, expected, strict=True):
        # Same indices in the same order, and each worker read them with that epoch's views.
        assert [i for _, i in batch] == idx
        assert {e for e, _ in batch} == {epoch}
    # Epochs differ in order (a fresh permutation each epoch), so the check above is not vacuous.
    assert sampler.batches(1) != sampler.batches(2)


def test_auto_workers_share_the_cpus_of_a_node(monkeypatch):
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert resolve_workers(-1, local_world=1) == 15
    assert resolve_workers(-1, local_world=2) == 7
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_workers(-1) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(256)), raising=False)
    assert resolve_workers(-1, local_world=1) == MAX_AUTO_WORKERS
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0}, raising=False)
    assert resolve_workers(-1, local_world=1) == 0


def test_second_half_rates_drop_the_warm_up():
    # 10 s of warm-up (compilation) before the first row, then 0.5 s per step of 64 samples,
    # 0.1 s of which waiting for data.
    rows = [
        {"step": s, "elapsed_s": 10 + 0.5 * s, "data_wait_s": 3 + 0.1 * s,
         "samples_per_s": 64 * s / (10 + 0.5 * s)}
        for s in range(1, 21)
    ]  # fmt: skip
    sps, wait = second_half_rates(rows[10:], 64)
    assert sps == pytest.approx(128.0)
    assert wait == pytest.approx(0.2)
    sps1, wait1 = second_half_rates(rows[-1:], 64)
    assert sps1 == pytest.approx(rows[-1]["samples_per_s"])
    assert wait1 == pytest.approx(5 / 20)


def test_write_perf_reports_mfu_per_device(tmp_path):
    cfg = SimpleNamespace(data=SimpleNamespace(batch_size=256), precision="bf16")
    trainer = SimpleNamespace(cfg=cfg, dist=SimpleNamespace(world_size=2),
                              device=torch.device("cpu"))  # fmt: skip
    rows = [{"step": s, "elapsed_s": 0.1 * s, "data_wait_s": 0.0, "samples_per_s": 0.0}
            for s in range(1, 11)]  # fmt: skip
    # 2560 samples/s over 2 devices = 10 steps/s of 128 samples each; 1e12 FLOPs per rank step.
    res = write_perf(trainer, rows, 1e12, peak_tflops=100.0, path=tmp_path / "perf.json")
    assert res["samples_per_s"] == pytest.approx(2560)
    assert res["achieved_tflops_per_device"] == pytest.approx(10.0)
    assert res["mfu"] == pytest.approx(0.1)
    assert res["flops_per_sample"] == pytest.approx(1e12 / 128)
    assert res["precision"] == "fp32" and res["device"] == "cpu"  # autocast is CUDA-only
    assert json.loads((tmp_path / "perf.json").read_text()) == res


def test_counting_flops_leaves_the_run_unchanged_and_scales_with_the_batch(tmp_path):
    from training.train import Trainer

    def trainer(batch: int, name: str) -> Trainer:
        cfg = tiny_config(steps=3, data={"batch_size": batch, "missing_prob": 0.0})
        return Trainer(cfg, tmp_path / name)

    counted = trainer(16, "a")
    flops16 = step_flops(counted)
    losses_counted = [r["loss"] for r in counted.fit()]
    losses_plain = [r["loss"] for r in trainer(16, "b").fit()]
    assert losses_counted == losses_plain
    # Everything but the loss matrix is per sample: FLOPs grow (almost exactly) linearly.
    flops8 = step_flops(trainer(8, "c"))
    assert flops16 / flops8 == pytest.approx(2.0, rel=0.02)
    assert flops16 > 1e8


def test_training_rows_carry_time_and_input_wait(trained):
    _, rows, _ = trained
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row["elapsed_s"] > prev["elapsed_s"]
        assert row["data_wait_s"] >= prev["data_wait_s"] >= 0.0
    assert rows[-1]["data_wait_s"] < rows[-1]["elapsed_s"]
