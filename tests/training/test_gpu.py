"""GPU checks (opt-in: pytest -m gpu): bf16 training step, DDP-free throughput path, export."""

from __future__ import annotations

import pytest
import torch

from tests.training.conftest import tiny_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return torch.device("cuda")


def test_bf16_training_on_gpu_lowers_loss_and_exports(cuda, tmp_path):
    from training.export import export_bundle
    from training.perf import step_flops
    from training.train import Trainer

    cfg = tiny_config(steps=30, precision="bf16", device="cuda")
    trainer = Trainer(cfg, tmp_path / "run")
    assert next(trainer.core.parameters()).is_cuda
    assert step_flops(trainer) > 1e8
    rows = trainer.fit()
    losses = [r["loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])
    batch = trainer.collate([trainer.val_set[i] for i in range(6)])
    model = trainer.core.cpu()
    report = export_bundle(model, cfg, batch, tmp_path / "bundle", trainer.val_set)
    assert max(report.max_abs_diff.values()) <= 1e-4


def test_gps_tower_is_batch_independent_under_bf16_autocast(cuda):
    from training.config import GpsTowerConfig
    from training.models.gps import GpsEncoder

    enc = GpsEncoder(GpsTowerConfig(), 32).to(cuda).eval()
    pts = torch.tensor([[47.0, -99.1], [-34.0, 20.5], [55.7, 13.2]], device=cuda)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        together = enc(pts)
        alone = torch.cat([enc(p[None]) for p in pts])
    assert torch.allclose(together, alone, atol=1e-2)
    assert together.dtype == torch.float32
