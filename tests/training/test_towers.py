"""Tower shapes and unit norms for every modality, SigLIP init_from, MiniLM mean pooling."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine.errors import ModelContractError
from engine.model.contract import Modality
from training.config import ImageTowerConfig, TextTowerConfig
from training.models.model import UniGeoCLIP, tower_inputs
from training.models.towers import SiglipImageTower, TextTower


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    return UniGeoCLIP(cfg.model).eval()


@pytest.mark.parametrize("modality", list(Modality))
def test_tower_output_shape_and_unit_norm(model, cfg, toy_batch, modality):
    with torch.no_grad():
        z = model.encode(modality, toy_batch[modality.value])
    assert z.shape == (12, cfg.model.embed_dim)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    present = toy_batch["mask"][modality.value]
    assert present.sum() >= 6
    # Absent rows (zeros; for text an empty attention mask) are finite and ignored by the loss.
    assert torch.allclose(z[present].norm(dim=1), torch.ones(int(present.sum())), atol=1e-5)


def test_forward_returns_only_present_modalities(model, toy_batch):
    partial = {k: v for k, v in toy_batch.items() if k not in ("text", "dsm")}
    with torch.no_grad():
        out = model(partial)
    assert set(out) == {"aerial", "streetview", "gps"}
    assert tower_inputs(Modality.TEXT, toy_batch["text"])[0] is toy_batch["text"]["input_ids"]


def core(vit):
    return getattr(vit, "vision_model", vit)


def test_init_from_a_local_siglip_checkpoint_adapts_bands_and_size(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    vc = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_channels=3,
        image_size=32,
        patch_size=8,
    )
    src = SiglipVisionModel(vc)
    src.save_pretrained(tmp_path)
    w = core(src).embeddings.patch_embedding.weight.detach()
    block = core(src).encoder.layers[0].mlp.fc1.weight.detach()
    cfg = ImageTowerConfig(init_from=str(tmp_path), image_size=48, patch_size=8)
    tower = SiglipImageTower(cfg, 16)
    emb = core(tower.vit).embeddings
    assert torch.equal(emb.patch_embedding.weight[:, :3], w)
    assert torch.allclose(emb.patch_embedding.weight[:, 3], w.mean(1))
    assert torch.equal(core(tower.vit).encoder.layers[0].mlp.fc1.weight, block)
    assert emb.position_embedding.weight.shape == (36, 32)
    z = tower(torch.randn(3, 4, 48, 48))
    assert z.shape == (3, 16) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ModelContractError, match="patch size"):
        SiglipImageTower(replace(cfg, patch_size=16), 16)
    with pytest.raises(ModelContractError, match="config.json"):
        SiglipImageTower(replace(cfg, init_from=str(tmp_path / "nope")), 16)


def test_minilm_text_tower_is_pretrained_and_ignores_padding():
    from tokenizers import Tokenizer

    from training.models.towers import tokenizer_path

    tower = TextTower(TextTowerConfig(kind="minilm"), 16).eval()
    assert tower.encoder.config.hidden_size == 384 and tower.encoder.config.num_hidden_layers == 6
    tok = Tokenizer.from_file(str(tokenizer_path(TextTowerConfig())))
    outs = []
    for length in (12, 24):
        tok.enable_padding(length=length)
        e = tok.encode("wetlands next to cropland")
        ids = torch.tensor([e.ids])
        mask = torch.tensor([e.attention_mask])
        with torch.no_grad():
            outs.append(tower(ids, mask))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    # Pretrained sentence encoder: related sentences are closer than unrelated ones.
    tok.enable_padding(length=16)
    enc = tok.encode_batch(["a lake with water", "water in a pond", "a car engine repair"])
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        h = tower.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask[..., None].float()
    s = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
    assert float(s[0] @ s[1]) > float(s[0] @ s[2]) + 0.2


def test_dsm_tower_has_registers_and_rejects_nothing_silently(model):
    dsm = model.towers["dsm"]
    assert dsm.registers.shape[1] == 4
    with pytest.raises(RuntimeError):
        dsm(torch.randn(2, 1, 40, 40))  # wrong size: position embeddings do not fit


def test_text_tower_from_a_local_siglip_text_checkpoint(tmp_path):
    import shutil

    from transformers import SiglipTextConfig, SiglipTextModel

    from training.models.towers import minilm_dir, tokenizer_path

    tc = SiglipTextConfig(vocab_size=30522, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                          projection_size=32, pad_token_id=0, bos_token_id=101, eos_token_id=102)  # fmt: skip
    SiglipTextModel(tc).save_pretrained(tmp_path)
    shutil.copyfile(minilm_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    cfg = TextTowerConfig(kind="siglip", init_from=str(tmp_path), max_length=16)
    tower = TextTower(cfg, 8).eval()
    assert tokenizer_path(cfg) == tmp_path / "tokenizer.json"
    ids = torch.randint(1000, 2000, (3, 16))
    z = tower(ids, torch.ones(3, 16, dtype=torch.long))
    assert z.shape == (3, 8) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ModelContractError, match="init_from"):
        TextTower(replace(cfg, init_from=""), 8)
