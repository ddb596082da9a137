"""Validation inputs for an export: per tower, distinct real samples that have the modality.

Export checks every ONNX graph against torch (and gates int8/fp16 variants) on these rows, taken
from the held-out set first, then the training set; only a modality no sample has is checked on
documented synthetic stand-ins. A constant input (e.g. all-zero rows of absent chips) would
hide a broken graph, so identical rows are refused. :mod:`.export` re-exports these names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ModelContractError
from engine.model.contract import INPUT_DTYPES, INPUT_NAMES, Modality

from .config import TrainConfig

log = logging.getLogger(__name__)


def tower_inputs_np(modality: Modality, batch: dict) -> dict[str, np.ndarray]:
    """The contract inputs for ``modality`` from a collated batch, rows where it is present.

    With fewer than 2 such rows every row is returned, zero-filled ones included (fine for
    calibration or a shape check; export validation uses :func:`validation_inputs` instead).
    """
    keep = batch["mask"][modality.value].numpy().astype(bool)
    return _present_rows(modality, batch, keep if keep.sum() >= 2 else np.ones_like(keep))


VALIDATION_ROWS = 8  # distinct samples per tower for the torch-vs-onnxruntime checks


@dataclass
class ValidationInputs:
    """Contract inputs per modality for checking exported graphs, and where the rows came from."""

    inputs: dict[str, dict[str, np.ndarray]]  # modality -> {input name: [N, ...]}
    sources: dict[str, str]  # modality -> "real:N" (dataset samples) or "synthetic:N"


def synthetic_samples(m: Modality, cfg: TrainConfig, n: int, seed: int = 0) -> list[dict]:
    """``n`` stand-in samples for a modality that no dataset sample has: the toy world's.

    :class:`~training.toy.ToyWorld` at the config's chip shapes, every modality present
    (textured class colours, DSM bumps on random terrain, templated text, clustered GPS); its
    noise makes each image and DSM row distinct. ``m`` only labels the seed.
    """
    from .toy import ToyWorld

    mc = cfg.model
    world = ToyWorld(
        n, missing_prob=0.0, aerial_shape=(len(mc.aerial.bands), mc.aerial.image_size),
        street_size=mc.streetview.image_size, dsm_size=mc.dsm.image_size,
        world_seed=seed, split_seed=1000 + list(Modality).index(m),
    )  # fmt: skip
    return [world[i] for i in range(n)]


def _present(ds: Any, m: Modality, limit: int = 4096) -> np.ndarray:
    """Indices of samples of ``ds`` that have ``m`` (from the manifest when there is one)."""
    table = getattr(ds, "table", None)
    if table is not None:  # a ChipDataset: read presence from the manifest, not the chips
        col = "gps_provenance" if m is Modality.GPS else m.value
        return np.flatnonzero([bool(v) for v in table.column(col).to_pylist()])
    return np.array([i for i in range(min(len(ds), limit)) if m.value in ds[i]], dtype=int)


def _real_samples(m: Modality, datasets: tuple, k: int) -> list[dict]:
    """Up to ``k`` samples having ``m``, spread over each dataset in turn (held-out, train)."""
    out: list[dict] = []
    for ds in datasets:
        idx = _present(ds, m) if ds is not None else np.array([], int)
        spread = np.linspace(0, len(idx) - 1, min(k - len(out), len(idx))).round().astype(int)
        for i in idx[np.unique(spread)]:
            s = ds[int(i)]
            if s.get(m.value) is not None:  # keep only this modality: cheap to collate
                out.append({k_: s[k_] for k_ in ("sample_id", "lat", "lon", m.value)})
        if len(out) >= k:
            break
    return out


def _distinct(inputs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """``n`` rows, spread over those that differ from every earlier row (in all inputs)."""
    rows = len(next(iter(inputs.values())))
    if rows == 0:
        return inputs
    flat = np.concatenate([v.reshape(rows, -1).view(np.uint8) for v in inputs.values()], 1)
    _, first = np.unique(flat, axis=0, return_index=True)
    first = np.sort(first)
    keep = first[np.unique(np.linspace(0, len(first) - 1, min(n, len(first))).round().astype(int))]
    return {k: v[keep] for k, v in inputs.items()}


def _present_rows(m: Modality, batch: dict, keep: np.ndarray | None = None) -> dict[str, Any]:
    """The contract inputs of the rows ``keep`` (default: the rows that have ``m``)."""
    keep = batch["mask"][m.value].numpy().astype(bool) if keep is None else keep
    v = batch[m.value]
    vals = v if isinstance(v, dict) else {INPUT_NAMES[m][0]: v}
    return {n: vals[n].numpy()[keep].astype(INPUT_DTYPES[n]) for n in INPUT_NAMES[m]}


def _rows_for(
    m: Modality, cfg: TrainConfig, collate: Any, batch: dict | None, n: int
) -> tuple[dict[str, np.ndarray], str]:
    """Up to ``n`` distinct rows of ``batch`` for tower ``m``, or synthetic ones if < 2 distinct."""
    rows = _distinct(_present_rows(m, batch), n) if batch is not None else {}
    count = len(next(iter(rows.values()))) if batch is not None else 0
    if count < 2:
        log.warning("%s: %d distinct real samples; validating on synthetic inputs", m.value, count)
        rows, count = _present_rows(m, collate(synthetic_samples(m, cfg, n))), n
        src = f"synthetic:{count}"
    else:
        src = f"real:{count}"
    flat = np.concatenate([v.reshape(count, -1).astype(np.float64) for v in rows.values()], 1)
    if np.all(flat == flat[:1]):  # a constant input would hide a broken graph
        raise ModelContractError(f"{m.value}: all validation rows are identical; cannot validate")
    return rows, src


def validation_inputs(
    cfg: TrainConfig, datasets: tuple, collate: Any = None, n: int = VALIDATION_ROWS,
    batch: dict | None = None,
) -> ValidationInputs:  # fmt: skip
    """Per tower, ``n`` distinct samples that have the modality, for checking the export.

    Args:
        cfg: the checkpoint's config (towers, preprocessing).
        datasets: searched in order, e.g. ``(held_out, train)``; samples are spread over each.
        collate: batch builder (default :func:`training.steps.make_collate` of ``cfg``).
        n: rows per tower.
        batch: a collated batch to take the rows from instead of ``datasets``.
    """
    if collate is None:
        from .steps import make_collate

        collate = make_collate(cfg)
    out = ValidationInputs({}, {})
    for mod in cfg.model.modalities:
        m = Modality(mod)
        if batch is None:
            found = _real_samples(m, datasets, 2 * n)  # 2n: some may be duplicates
            b = collate(found) if found else None
        else:
            b = batch
        out.inputs[m.value], out.sources[m.value] = _rows_for(m, cfg, collate, b, n)
    return out
