"""The masked all-to-all contrastive loss of UniGeoCLIP and its naive reference.

UniGeoCLIP (Astruc et al., EarthVision @ CVPR 2026, arXiv 2604.11668) aligns every pair of
modalities (i, j) with a symmetric InfoNCE term under one learnable temperature and sums the
terms with weights w_ij; no modality is a pivot. Here each pair only uses the samples where both
modalities are present, so partially covered samples still train every tower. A sigmoid pair
loss (SigLIP, Zhai et al. 2023) and the ``pivot`` / ``pairs`` ablation modes share the code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import InputError
from engine.model.contract import Modality

from .config import LossConfig

# Masked logits get this value instead of -inf: exp() of it is exactly 0 in fp32 and, unlike
# -inf, it never turns a masked product into NaN in the backward pass.
_MASKED = -1.0e4


def select_pairs(cfg: LossConfig, modalities: list[str]) -> list[tuple[str, str, float]]:
    """The (a, b, w_ab) pairs the loss aligns, in a fixed order, for the given towers."""
    order = [m.value for m in Modality if m.value in modalities]
    every = list(itertools.combinations(order, 2))
    if cfg.mode == "all":
        chosen = every
    elif cfg.mode == "pivot":
        if cfg.pivot not in order:
            raise InputError(f"loss.pivot {cfg.pivot!r} is not one of the towers {order}")
        chosen = [p for p in every if cfg.pivot in p]
    else:
        wanted = {frozenset(_split_pair(s, order)) for s in cfg.pairs}
        chosen = [p for p in every if frozenset(p) in wanted]
        if not chosen:
            raise InputError("loss.mode 'pairs' needs loss.pairs such as ['aerial-text']")
    return [(a, b, _weight(cfg, a, b)) for a, b in chosen]


def _split_pair(text: str, order: list[str]) -> tuple[str, str]:
    parts = text.split("-")
    if len(parts) != 2 or not set(parts) <= set(order) or parts[0] == parts[1]:
        raise InputError(f"loss pair {text!r} must be 'a-b' with two different towers of {order}")
    return parts[0], parts[1]


def _weight(cfg: LossConfig, a: str, b: str) -> float:
    return float(cfg.weights.get(f"{a}-{b}", cfg.weights.get(f"{b}-{a}", 1.0)))


def infonce_pair(
    za: Tensor, zb: Tensor, valid: Tensor, scale: Tensor, same: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE over the rows where ``valid``; both directions averaged.

    ``same`` (optional ``[B, B]`` bool): off-diagonal pairs that are not negatives, e.g. two
    samples with the same caption; they are left out of both softmaxes.
    """
    logits = scale * (za.float() @ zb.float().T)
    logits = logits.masked_fill(~valid[None, :], _MASKED).masked_fill(~valid[:, None], _MASKED)
    if same is not None:
        eye = torch.eye(len(valid), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same & ~eye, _MASKED)
    diag = logits.diagonal()
    row = torch.logsumexp(logits, dim=1) - diag
    col = torch.logsumexp(logits, dim=0) - diag
    n = valid.sum().clamp(min=1)
    return 0.5 * (torch.where(valid, row + col, torch.zeros_like(row)).sum() / n)


def relational_distill(
    za: Tensor, zb: Tensor, ta: Tensor, tb: Tensor, valid: Tensor, tau: float
) -> Tensor:
    """Keep a frozen teacher's neighbourhoods: KL(teacher || student) of the softmax over a batch.

    ``za``/``zb`` are the student's unit embeddings of two views of the same chips (another date
    or crop), ``ta``/``tb`` the teacher's features of the same views. The teacher's features are
    centred on the batch mean (pooled CNN features are non-negative, so raw cosines all sit near
    1) and normalised; both similarity matrices use temperature ``tau``. Each row's target is the
    teacher's distribution over the other view's chips, both directions averaged, over the rows
    where ``valid``. No gradient reaches the teacher. Zero exactly when the student's similarities
    equal the teacher's.
    """
    with torch.no_grad():
        ok = valid[:, None] & valid[None, :]
        both = torch.cat([ta[valid], tb[valid]]).float()
        mu = both.mean(0, keepdim=True) if len(both) else 0.0
        ua = F.normalize(ta.float() - mu, dim=1)
        ub = F.normalize(tb.float() - mu, dim=1)
        t_logits = (ua @ ub.T / tau).masked_fill(~ok, _MASKED)
    s_logits = (za.float() @ zb.float().T / tau).masked_fill(~ok, _MASKED)
    n = valid.sum().clamp(min=1)
    total = za.new_zeros((), dtype=torch.float32)
    for t, s in ((t_logits, s_logits), (t_logits.T, s_logits.T)):
        p = F.softmax(t, dim=1)
        kl = (p * (F.log_softmax(t, dim=1) - F.log_softmax(s, dim=1))).sum(1)
        total = total + torch.where(valid, kl, torch.zeros_like(kl)).sum() / n
    return 0.5 * total


def sigmoid_pair(za: Tensor, zb: Tensor, valid: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """SigLIP loss over valid rows/columns: -1/n * sum log sigmoid(z_ij (t <a_i, b_j> + b))."""
    logits = scale * (za.float() @ zb.float().T) + bias
    eye = torch.eye(len(valid), device=logits.device, dtype=logits.dtype)
    terms = F.logsigmoid((2 * eye - 1) * logits)
    keep = valid[:, None] & valid[None, :]
    n = valid.sum().clamp(min=1)
    return -torch.where(keep, terms, torch.zeros_like(terms)).sum() / n


@dataclass
class LossOutput:
    """The weighted total and the per-pair terms (detached, for logging)."""

    total: Tensor
    pairs: dict[str, float]


class AllToAllLoss(nn.Module):
    """Weighted mean of pair losses over the pairs that have >= 2 co-present samples.

    Dividing by the weights of contributing pairs (rather than all pairs) keeps the loss scale
    steady when a batch happens to lack a modality.
    """

    def __init__(self, cfg: LossConfig, modalities: list[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.pairs = select_pairs(cfg, modalities)

    def forward(
        self,
        emb: dict[str, Tensor],
        mask: dict[str, Tensor],
        scale: Tensor,
        bias: Tensor | None = None,
        groups: dict[str, Tensor] | None = None,
    ) -> LossOutput:
        """``groups``: optional per-modality ids; in a pair with that modality, two rows with the
        same id (the same caption) are not each other's negatives (InfoNCE only)."""
        total = sum(z.float().sum() * 0.0 for z in emb.values())  # keeps the graph if no pair
        wsum = 0.0
        stats: dict[str, float] = {}
        for a, b, w in self.pairs:
            if a not in emb or b not in emb:
                continue
            valid = mask[a].bool() & mask[b].bool()
            if int(valid.sum()) < 2:
                continue
            if self.cfg.kind == "sigmoid":
                term = sigmoid_pair(emb[a], emb[b], valid, scale, bias)
            else:
                term = infonce_pair(emb[a], emb[b], valid, scale, _same(groups, a, b))
            total = total + w * term
            wsum += w
            stats[f"{a}-{b}"] = float(term.detach())
        return LossOutput(total=total / wsum if wsum else total, pairs=stats)


def _same(groups: dict[str, Tensor] | None, a: str, b: str) -> Tensor | None:
    """Pairs of rows with the same group id in modality ``a`` or ``b`` (None: no groups)."""
    out = None
    for m in (a, b):
        if groups and m in groups:
            g = groups[m]
            eq = g[:, None] == g[None, :]
            out = eq if out is None else out | eq
    return out


def naive_all_to_all(
    emb: dict[str, Tensor],
    mask: dict[str, Tensor],
    pairs: list[tuple[str, str, float]],
    scale: Tensor,
    kind: str = "infonce",
    bias: Tensor | None = None,
) -> Tensor:
    """Reference implementation with Python loops over pairs and rows (for parity tests)."""
    total = torch.zeros((), dtype=torch.float32)
    wsum = 0.0
    for a, b, w in pairs:
        if a not in emb or b not in emb:
            continue
        idx = [i for i in range(len(mask[a])) if bool(mask[a][i]) and bool(mask[b][i])]
        if len(idx) < 2:
            continue
        za = [emb[a][i].float() for i in idx]
        zb = [emb[b][i].float() for i in idx]
        term = torch.zeros((), dtype=torch.float32)
        for i in range(len(idx)):
            row = torch.stack([scale * torch.dot(za[i], zb[j]) for j in range(len(idx))])
            col = torch.stack([scale * torch.dot(za[j], zb[i]) for j in range(len(idx))])
            if kind == "sigmoid":
                sign = torch.tensor([1.0 if j == i else -1.0 for j in range(len(idx))])
                term = term - F.logsigmoid(sign * (row + bias)).sum()
            else:
                term = term + 0.5 * (torch.logsumexp(row, 0) - row[i])
                term = term + 0.5 * (torch.logsumexp(col, 0) - col[i])
        total = total + w * term / len(idx)
        wsum += w
    return total / wsum if wsum else total
