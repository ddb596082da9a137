"""fp16-stored weights: half the aerial file, same fp32 results, still batch-independent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import ModelContractError


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    from training.export import export_bundle

    trainer, _, _ = trained
    batch = trainer.collate([trainer.val_set[i] for i in range(6)])
    out = tmp_path_factory.mktemp("w16") / "bundle"
    export_bundle(trainer.core, trainer.cfg, batch, out, trainer.train_set)
    return out


def test_rewrite_halves_the_tower_and_the_engine_gives_the_same_embeddings(bundle):
    from engine.model import UniGeoModel
    from engine.model.contract import Modality
    from training.weight_storage import rewrite_bundle_tower

    src = bundle / json.loads((bundle / "bundle.json").read_text())["encoders"]["aerial"]
    with UniGeoModel.load(bundle) as model:
        pre = model.spec(Modality.AERIAL).preprocess
        shape = (5, len(pre.bands), pre.size, pre.size)
        chips = np.random.default_rng(1).random(shape, dtype=np.float32)
        before = model.encode_tiles(Modality.AERIAL, chips)
    dst = rewrite_bundle_tower(bundle, "aerial")
    assert dst.name == src.name.removesuffix(".onnx") + ".w16.onnx"
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    assert json.loads((bundle / "bundle.json").read_text())["encoders"]["aerial"] == dst.name
    with UniGeoModel.load(bundle) as model:
        after = model.encode_tiles(Modality.AERIAL, chips)
        assert not model.batch_coupled(Modality.AERIAL)
        alone = np.concatenate([model.encode_tiles(Modality.AERIAL, c[None]) for c in chips])
    assert float((before * after).sum(1).min()) > 0.9999
    np.testing.assert_allclose(alone, after, atol=1e-6)


def test_a_rewrite_that_changes_the_tower_is_refused(bundle, tmp_path, monkeypatch):
    from training import weight_storage as ws

    src = next(bundle.glob("streetview*.onnx"))
    dst = tmp_path / "sv.w16.onnx"
    ws.store_weights_fp16(src, dst)
    monkeypatch.setattr(ws, "MIN_COSINE", 1.5)  # no rewrite can reach it
    with pytest.raises(ModelContractError, match="keep the fp32 file"):
        ws.check_rewrite(src, dst, ws.image_inputs(src, n=3))
