"""The training input pipeline: one DataLoader that lives across epochs, and its worker count.

A DataLoader built per epoch restarts its workers at every epoch boundary, and the GPU waits
for a whole batch to be rendered from cold. Here the batch sampler runs through all epochs, and
each index carries its epoch, so a worker switches a dataset's per-epoch views itself (a
``set_epoch`` call in the main process would never reach forked workers). The samples, their
order and therefore the losses are the same as with a loader per epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from .sampler import GeoClusteredBatchSampler, rank_slice

MAX_AUTO_WORKERS = 16  # past this, worker start-up and memory cost more than they feed


class EpochBatches(Sampler):
    """This rank's share of every global batch, from ``(epoch, start)`` on, without end.

    Yields lists of ``(epoch, index)`` pairs for :class:`EpochView`.
    """

    def __init__(
        self, sampler: GeoClusteredBatchSampler, rank: int, world: int, epoch: int, start: int
    ) -> None:
        self.sampler, self.rank, self.world = sampler, rank, world
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self.start
        while True:
            for batch in self.sampler.iter_from(epoch, start):
                yield [(epoch, i) for i in rank_slice(batch, self.rank, self.world)]
            epoch, start = epoch + 1, 0


class EpochView(Dataset):
    """Reads ``(epoch, index)``: sets the wrapped dataset's epoch in whichever process reads."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # new views / phrasings each epoch
        self.epoch = epoch
        return self.dataset[i]


def resolve_workers(requested: int, local_world: int | None = None) -> int:
    """DataLoader workers per rank: ``requested``, or for ``-1`` the CPUs this rank can use.

    Auto leaves one CPU per rank for the training process itself and shares the rest between
    the ranks of this node (``LOCAL_WORLD_SIZE``, set by torchrun), up to
    :data:`MAX_AUTO_WORKERS`.
    """
    if requested >= 0:
        return requested
    if local_world is None:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_AUTO_WORKERS, (cpus or 1) // max(1, local_world) - 1))


def make_loader(
    dataset: Dataset,
    batches: EpochBatches,
    collate: Callable[[list[Any]], Any],
    workers: int,
    pin_memory: bool,
) -> DataLoader:
    """The loader over all epochs (workers persist; each prefetches two batches)."""
    return DataLoader(
        EpochView(dataset),
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
    )
