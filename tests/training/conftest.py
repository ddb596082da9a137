"""Fixtures for the training tests: the tiny config, a toy batch and one short trained run."""

from __future__ import annotations

import pytest
import torch

from training.config import TrainConfig, load_config

# One intra-op thread: the CI machine's 2 cores are shared, and OpenMP spin-waiting under
# contention made a micro ViT step 40x slower with 2 threads than with 1.
torch.set_num_threads(1)


def tiny_config(**over) -> TrainConfig:
    """The ``tiny`` config with a smaller toy world, plus nested overrides."""
    base = {"data": {"num_samples": 192, "num_val": 64, "batch_size": 32}, "log_every": 5}
    from training.config import merge

    return load_config("tiny", merge(base, over))


@pytest.fixture(scope="session")
def cfg() -> TrainConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def toy_batch(cfg):
    from training.steps import build_datasets, make_collate

    train, _ = build_datasets(cfg)
    return make_collate(cfg)([train[i] for i in range(12)])


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny model trained for 40 steps on the toy world (shared by train/eval/export tests)."""
    from training.train import Trainer

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_config(steps=40, ckpt_every=40)
    trainer = Trainer(cfg, out)
    rows = trainer.fit()
    return trainer, rows, out


@pytest.fixture(scope="session")
def real_data():
    """``../shared/data`` (or $UNIGEO_SHARED_DATA): real photos and rasters; skip when absent."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("UNIGEO_SHARED_DATA", root.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip("../shared/data is not present (set UNIGEO_SHARED_DATA to its path)")
    return path


@pytest.fixture(scope="session")
def lite0():
    """The pretrained EfficientNet-Lite0 (skip when neither the package nor its wheel is here)."""
    from engine.errors import ModelContractError
    from training.models.efficientnet import load_pretrained

    try:
        return load_pretrained()
    except ModelContractError as e:
        pytest.skip(str(e))
