"""All-to-all loss: parity with the naive reference (forward and backward), masking, modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.model.contract import Modality
from training.config import LossConfig
from training.losses import AllToAllLoss, naive_all_to_all, select_pairs

MODS = [m.value for m in Modality]


def random_inputs(b: int = 9, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    emb = {m: F.normalize(torch.randn(b, d, generator=g), dim=1).requires_grad_() for m in MODS}
    mask = {m: torch.rand(b, generator=g) > 0.3 for m in MODS}
    mask["gps"] = torch.ones(b, dtype=torch.bool)
    return emb, mask


def grads(loss, emb, extra):
    xs = [*emb.values(), *extra]
    gs = torch.autograd.grad(loss, xs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(xs, gs, strict=True)]


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
@pytest.mark.parametrize("mode", ["all", "pivot", "pairs"])
def test_loss_matches_naive_forward_and_backward(kind, mode):
    cfg = LossConfig(kind=kind, mode=mode, pivot="text", pairs=("aerial-gps", "dsm-text"),
                     weights={"aerial-text": 2.0, "gps-dsm": 0.5})  # fmt: skip
    emb, mask = random_inputs()
    scale = torch.tensor(7.5, requires_grad=True)
    bias = torch.tensor(-3.0, requires_grad=True)
    fast = AllToAllLoss(cfg, MODS)(emb, mask, scale, bias).total
    ref = naive_all_to_all(emb, mask, select_pairs(cfg, MODS), scale, kind, bias)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-5)
    extra = [scale, bias] if kind == "sigmoid" else [scale]
    for a, b in zip(grads(fast, emb, extra), grads(ref, emb, extra), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_infonce_of_perfect_alignment_is_small_and_of_random_is_log_n():
    b = 16
    z = F.normalize(torch.randn(b, 32), dim=1)
    mask = {"aerial": torch.ones(b, dtype=torch.bool), "text": torch.ones(b, dtype=torch.bool)}
    loss = AllToAllLoss(LossConfig(), ["aerial", "text"])
    assert float(loss({"aerial": z, "text": z}, mask, torch.tensor(100.0)).total) < 0.05
    zero = torch.zeros(b, 32)
    assert abs(float(loss({"aerial": z, "text": zero}, mask, torch.tensor(10.0)).total)
               - torch.log(torch.tensor(float(b)))) < 1e-4  # fmt: skip


def test_absent_pairs_contribute_nothing_and_masked_rows_get_no_gradient():
    emb, mask = random_inputs()
    mask["text"] = torch.zeros_like(mask["text"])
    mask["text"][0] = True  # a single co-present sample cannot form a contrastive pair
    loss_fn = AllToAllLoss(LossConfig(), MODS)
    scale = torch.tensor(10.0)
    out = loss_fn(emb, mask, scale)
    assert not any("text" in k for k in out.pairs)
    without = AllToAllLoss(LossConfig(), [m for m in MODS if m != "text"])
    ref = without({k: v for k, v in emb.items() if k != "text"}, mask, scale).total
    assert torch.allclose(out.total, ref, atol=1e-6)
    g = torch.autograd.grad(out.total, [emb["text"], emb["aerial"]])
    assert g[0].abs().max() == 0
    assert g[1][~mask["aerial"]].abs().max() == 0 and g[1][mask["aerial"]].abs().max() > 0


def test_masked_rows_do_not_change_the_loss():
    emb, mask = random_inputs()
    loss_fn = AllToAllLoss(LossConfig(), MODS)
    a = loss_fn(emb, mask, torch.tensor(10.0)).total
    noisy = {k: torch.where(mask[k][:, None], v, torch.randn_like(v)) for k, v in emb.items()}
    b = loss_fn(noisy, mask, torch.tensor(10.0)).total
    assert torch.allclose(a, b, atol=1e-6)


def test_no_pair_present_gives_zero_loss_that_still_backpropagates():
    emb, mask = random_inputs()
    mask = {k: torch.zeros_like(v) for k, v in mask.items()}
    out = AllToAllLoss(LossConfig(), MODS)(emb, mask, torch.tensor(10.0))
    assert float(out.total.detach()) == 0.0 and out.pairs == {}
    out.total.backward()


def test_pair_selection_modes():
    assert len(select_pairs(LossConfig(), MODS)) == 10
    piv = select_pairs(LossConfig(mode="pivot", pivot="aerial"), MODS)
    assert len(piv) == 4 and all("aerial" in (a, b) for a, b, _ in piv)
    pairs = select_pairs(
        LossConfig(mode="pairs", pairs=("text-gps",), weights={"gps-text": 3}), MODS
    )
    assert pairs == [("text", "gps", 3.0)]
    with pytest.raises(InputError, match="pair"):
        select_pairs(LossConfig(mode="pairs", pairs=("aerial-aerial",)), MODS)
    with pytest.raises(InputError, match="pivot"):
        select_pairs(LossConfig(mode="pivot", pivot="dsm"), ["aerial", "gps"])


def test_temperature_is_clamped(cfg):
    from training.models.model import UniGeoCLIP

    m = UniGeoCLIP(cfg.model.__class__(modalities=("gps",)))
    with torch.no_grad():
        m.logit_scale.fill_(50.0)
    assert torch.isclose(m.temperature_scale(), torch.tensor(100.0), rtol=1e-4)


def test_shared_captions_are_not_negatives():
    """Two samples with the same caption: with groups the pair is left out of the softmax."""
    import torch

    from training.config import LossConfig
    from training.losses import AllToAllLoss, infonce_pair

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    txt = img.clone()
    txt[1] = txt[0]  # samples 0 and 1 share a caption: identical text embeddings
    valid = torch.ones(4, dtype=torch.bool)
    scale = torch.tensor(10.0)
    same = torch.tensor([0, 0, 2, 3])[:, None] == torch.tensor([0, 0, 2, 3])[None, :]
    plain = infonce_pair(img, txt, valid, scale)
    masked = infonce_pair(img, txt, valid, scale, same)
    assert masked < plain
    # the masked loss equals the loss without the shared pair's off-diagonal terms
    logits = scale * img @ txt.T
    logits[0, 1] = logits[1, 0] = -1e4
    want = 0.5 * ((logits.logsumexp(1) - logits.diagonal()).mean()
                  + (logits.logsumexp(0) - logits.diagonal()).mean())  # fmt: skip
    torch.testing.assert_close(masked, want)
    loss = AllToAllLoss(LossConfig(mode="all"), ["aerial", "text"])
    emb, mask = {"aerial": img, "text": txt}, {"aerial": valid, "text": valid}
    out = loss(emb, mask, scale, None, {"text": torch.tensor([0, 0, 2, 3])})
    torch.testing.assert_close(out.total, masked)


def test_relational_distill_is_zero_when_the_student_copies_the_teacher_and_never_moves_it():
    """KL(teacher || student) of in-batch similarity softmaxes: exactly 0 for a student whose
    embeddings are the centred, normalised teacher features; positive for another student; the
    gradient reaches the student only; masked rows change nothing."""
    from training.losses import relational_distill

    g = torch.Generator().manual_seed(0)
    ta = torch.rand(12, 20, generator=g) * 3  # non-negative, like pooled CNN features
    tb = ta + 0.3 * torch.rand(12, 20, generator=g)  # the same chips on another date
    valid = torch.ones(12, dtype=torch.bool)
    mu = torch.cat([ta, tb]).mean(0, keepdim=True)
    za, zb = F.normalize(ta - mu, dim=1), F.normalize(tb - mu, dim=1)
    assert float(relational_distill(za, zb, ta, tb, valid, 0.05)) == pytest.approx(0.0, abs=1e-5)
    sa = F.normalize(torch.randn(12, 20, generator=g), dim=1).requires_grad_()
    sb = F.normalize(torch.randn(12, 20, generator=g), dim=1)
    tt = ta.clone().requires_grad_()
    loss = relational_distill(sa, sb, tt, tb, valid, 0.05)
    assert float(loss) > 1.0
    loss.backward()
    assert sa.grad is not None and float(sa.grad.abs().sum()) > 0 and tt.grad is None
    # a masked row: whatever it holds, the loss over the other rows is the one without it
    valid2 = valid.clone()
    valid2[3] = False
    junk = sa.detach().clone()
    junk[3] = F.normalize(torch.randn(1, 20, generator=g), dim=1)
    a = relational_distill(sa.detach(), sb, ta, tb, valid2, 0.05)
    b = relational_distill(junk, sb, ta, tb, valid2, 0.05)
    keep = torch.arange(12) != 3
    c = relational_distill(sa.detach()[keep], sb[keep], ta[keep], tb[keep], valid[keep], 0.05)
    assert float(a) == pytest.approx(float(b), abs=1e-6)
    assert float(a) == pytest.approx(float(c), abs=1e-5)
