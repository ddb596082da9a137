"""A batch sampler that fills batches with geographically clustered samples (hard negatives).

Contrastive learning only learns what the negatives in a batch force it to tell apart. Random
batches mostly pair a place with far-away, obviously different places; drawing part of each
batch from one geographic cell makes nearby, look-alike places compete, which is what a
"find similar places" query needs to rank well.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from engine.errors import InputError


class GeoClusteredBatchSampler:
    """Yields global batches (lists of indices); each rank then takes its contiguous slice.

    Samples are ordered along a Z-order (Morton) curve over cells of ``cell_deg`` degrees, so
    consecutive samples are geographic neighbours. ``cluster_fraction`` of each batch is one
    consecutive run of that order (a compact neighbourhood); the rest is drawn uniformly. Each
    epoch shifts the curve's origin and start at random, so clusters differ between epochs.
    The order is a pure function of ``(seed, epoch)``: a resumed run sees the same batches.
    """

    def __init__(
        self,
        lats: Sequence[float],
        lons: Sequence[float],
        batch_size: int,
        cluster_fraction: float = 0.5,
        cell_deg: float = 0.5,
        seed: int = 0,
    ) -> None:
        if batch_size < 2 or len(lats) < batch_size:
            raise InputError(
                f"batch size {batch_size} needs >= 2 and at most the {len(lats)} samples"
            )
        if not 0.0 <= cluster_fraction <= 1.0 or cell_deg <= 0:
            raise InputError("cluster_fraction must be in [0, 1] and cell_deg > 0")
        self.batch_size, self.frac, self.seed = batch_size, cluster_fraction, seed
        self.cell_deg = max(cell_deg, 360.0 / 60000)  # keeps cell indices within 16 bits
        self.lat = np.asarray(lats, np.float64)
        self.lon = np.asarray(lons, np.float64)
        self.n = len(self.lat)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def spatial_order(self, rng: np.random.Generator) -> np.ndarray:
        """Indices along a randomly shifted Z-order curve (random order inside a cell)."""
        shift = rng.uniform(0, 64 * self.cell_deg, 2)
        iy = np.floor((self.lat + 90.0 + shift[0]) / self.cell_deg).astype(np.uint64)
        ix = np.floor((self.lon + 180.0 + shift[1]) / self.cell_deg).astype(np.uint64)
        code = _spread_bits(ix) | (_spread_bits(iy) << np.uint64(1))
        order = np.lexsort((rng.random(self.n), code))
        return np.roll(order, -int(rng.integers(self.n)))

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch``, deterministic in (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        nb, n_clu = len(self), int(round(self.frac * self.batch_size))
        stream = self.spatial_order(rng)[: nb * n_clu].reshape(nb, n_clu)
        used = np.zeros(self.n, bool)
        used[stream.ravel()] = True
        rest = rng.permutation(np.flatnonzero(~used))
        rest = rest[: nb * (self.batch_size - n_clu)].reshape(nb, -1)
        out = [
            [int(i) for i in rng.permutation(np.concatenate([c, r]))]
            for c, r in zip(stream, rest, strict=True)
        ]
        return [out[i] for i in rng.permutation(nb)]

    def iter_from(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        """Batches of ``epoch`` starting at batch ``start`` (for resuming mid-epoch)."""
        yield from self.batches(epoch)[start:]


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """Interleave zeros between the low 16 bits of ``x`` (half of a Morton code)."""
    x = x & np.uint64(0xFFFF)
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        x = (x | (x << np.uint64(shift))) & np.uint64(mask)
    return x


def per_rank_batch(global_batch: int, world: int) -> int:
    """Samples each rank embeds per step: ``global_batch / world`` (it must divide evenly).

    The global batch (``data.batch_size``) is the unit of training: the loss contrasts all of
    it, the sampler's position and the schedule count it, so it never changes with the number
    of processes. Only its split over ranks does.
    """
    if world < 1 or global_batch % world:
        raise InputError(
            f"the global batch of {global_batch} samples (data.batch_size) does not split "
            f"evenly over {world} processes; launch a number of processes that divides "
            f"{global_batch}, or choose a data.batch_size that is a multiple of {world} "
            "(for a new run only: a resumed run must keep its global batch)"
        )
    return global_batch // world


def rank_slice(batch: list[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of a global batch (the global batch must divide evenly)."""
    per = per_rank_batch(len(batch), world)
    return batch[rank * per : (rank + 1) * per]
