"""Reading datasets as torch datasets: a map-style one and a sharded, DDP-aware iterable one.

Both yield the *sample dicts* of the shared training format (only the modalities present)::

    {"sample_id", "lat", "lon", "area_id", "aerial" [C,H,W] float32 in [0,1] (NaN nodata, and
     NaN for a band the sample's sensor lacks), "aerial_bands" (the C band names),
     "streetview" [3,H,W], "dsm" [1,H,W] metres, "text" str, "gps" [2] float32, "landuse" int}

Chips are read from memory-mapped shards, so only the pages a sample touches are loaded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from engine.model.contract import Modality

from .format import (
    MANIFEST,
    DatasetFormatError,
    DatasetInfo,
    check_table,
    chip_to_float,
    read_manifest,
    resolve_ref,
)

ALL_MODALITIES = tuple(Modality)


class ChipStore:
    """Opens chip shards memory-mapped and keeps a small LRU cache of open maps."""

    def __init__(self, root: str | Path, max_open: int = 64) -> None:
        self.root = Path(root)
        self.max_open = max_open
        self._open: OrderedDict[Path, np.ndarray] = OrderedDict()

    def load(self, ref: str) -> np.ndarray:
        """Return the chip ``ref`` (a view into a memory map; copy before writing to it)."""
        path, row = resolve_ref(self.root, ref)
        arr = self._open.get(path)
        if arr is None:
            if not path.is_file():
                raise DatasetFormatError(f"chip file {path} listed in the manifest is missing")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            self._open[path] = arr
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(path)
        if row is None:
            return arr
        if not 0 <= row < arr.shape[0]:
            raise DatasetFormatError(f"chip reference {ref!r} is past the end of its shard")
        return arr[row]

    def __getstate__(self) -> dict:
        # DataLoader workers get a fresh cache: memory maps must not cross processes.
        return {"root": self.root, "max_open": self.max_open, "_open": OrderedDict()}


def expand_bands(
    chip: np.ndarray, have: Sequence[str] | None, bands: Sequence[str] | None
) -> np.ndarray:
    """A chip holding bands ``have`` as the dataset's ``bands``, NaN for the ones it lacks."""
    if not have or not bands or list(have) == list(bands):
        return chip
    out = np.full((len(bands), *chip.shape[1:]), np.nan, np.float32)
    for k, b in enumerate(have):
        if b not in bands:
            raise DatasetFormatError(f"chip band {b!r} is not among the dataset bands {bands}")
        out[list(bands).index(b)] = chip[k]
    return out


def dihedral(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Rotate by a random multiple of 90 degrees and maybe flip, the same for every chip."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    for key, a in arrays.items():
        a = np.rot90(a, k, axes=(-2, -1))
        arrays[key] = np.ascontiguousarray(a[..., ::-1] if flip else a)


def row_to_sample(
    row: dict[str, Any],
    store: ChipStore,
    modalities: Iterable[Modality],
    rng: np.random.Generator | None,
    *,
    bands: Sequence[str] | None = None,
    augment: bool = False,
) -> dict[str, Any]:
    """Turn one manifest row into a sample dict.

    Args:
        row: a manifest row (``samples.parquet`` columns).
        store: where chips are read from.
        modalities: which modalities to load (others are left out).
        rng: picks one of several views / phrasings; None takes the first (evaluation).
        bands: the dataset's aerial bands (``dataset.json``); a chip holding fewer (its row's
            ``aerial_bands``) is expanded to them with NaN, and the sample carries them as
            ``"aerial_bands"`` so collation can match the tower's bands by name.
        augment: with ``rng``, rotate/flip the aerial and DSM chips alike (a random one of the
            8 symmetries of the square: more views of each place at no storage cost).
    """
    mods = set(modalities)
    s: dict[str, Any] = {
        "sample_id": row["sample_id"],
        "lat": float(row["lat"]),
        "lon": float(row["lon"]),
        "area_id": row["area_id"],
        "landuse": int(row["landuse"]) if row.get("landuse") is not None else -1,
    }
    for m in (Modality.AERIAL, Modality.STREETVIEW):
        views = row.get(m.value) or []
        if m in mods and views:
            ref = views[0] if rng is None else views[int(rng.integers(len(views)))]
            s[m.value] = chip_to_float(np.array(store.load(ref)))
    if "aerial" in s:
        s["aerial"] = expand_bands(s["aerial"], row.get("aerial_bands"), bands)
        if bands:
            s["aerial_bands"] = tuple(bands)
    if Modality.DSM in mods and row.get("dsm"):
        s["dsm"] = np.array(store.load(row["dsm"]), dtype=np.float32)
    if augment and rng is not None:
        chips = {k: s[k] for k in ("aerial", "dsm") if k in s}
        dihedral(chips, rng)
        s.update(chips)
    texts = row.get("text") or []
    if Modality.TEXT in mods and texts:
        s["text"] = texts[0] if rng is None else texts[int(rng.integers(len(texts)))]
    if Modality.GPS in mods and row.get("gps_provenance"):
        s["gps"] = np.array([row["lat"], row["lon"]], dtype=np.float32)
    return s


def _modalities(modalities: Iterable[Modality | str] | None) -> tuple[Modality, ...]:
    return ALL_MODALITIES if modalities is None else tuple(Modality(m) for m in modalities)


class ChipDataset(Dataset):
    """Map-style dataset over a whole manifest (held in memory as columns, chips mapped).

    Args:
        root: the dataset folder.
        split: keep only this split ("train", "val", "test"); None keeps every split.
        modalities: modalities to load (default all five).
        train: pick a random view/phrasing per access (seeded by ``seed``, index and epoch).
        seed: base seed for the random picks.
        augment: in train mode, also rotate/flip aerial and DSM chips (see
            :func:`row_to_sample`); off by default so existing runs stay bit-identical.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        modalities: Iterable[Modality | str] | None = None,
        *,
        train: bool = False,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        self.root = Path(root)
        self.info = DatasetInfo.read(self.root)
        self.bands = tuple(self.info.bands.get("aerial") or ())
        self.augment = augment
        table = read_manifest(self.root)
        if split is not None:
            keep = np.asarray(table.column("split").to_pylist(), dtype=object) == split
            table = table.filter(keep)
        # Rows stay in Arrow buffers (compact, and not copied page by page into forked
        # DataLoader workers the way millions of Python dicts would be).
        self.table = table
        self.modalities = _modalities(modalities)
        self.store = ChipStore(self.root)
        self.train, self.seed, self.epoch = train, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Change the random view/phrasing picks (call once per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.table.num_rows

    def row(self, i: int) -> dict[str, Any]:
        """Manifest row ``i`` as a dict."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range (dataset has {len(self)})")
        return self.table.slice(i % len(self), 1).to_pylist()[0]

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitudes and longitudes of all samples (for geographically clustered batching)."""
        lat = self.table.column("lat").to_numpy().astype(np.float64)
        return lat, self.table.column("lon").to_numpy().astype(np.float64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, self.epoch, i)) if self.train else None
        return row_to_sample(
            self.row(i), self.store, self.modalities, rng, bands=self.bands, augment=self.augment
        )


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardedChipDataset(IterableDataset):
    """Iterable dataset over the manifest's row groups, split across DDP ranks and workers.

    Row group ``k`` (in a per-epoch permutation shared by every rank) goes to the reader
    ``k mod (world_size * num_workers)``, where a reader is one DataLoader worker of one rank,
    so each sample is read exactly once per epoch and only one row group is in memory per
    worker. Ranks can receive a different number of samples when row groups are uneven;
    pass ``drop_last_groups=True`` to keep only as many groups as every reader can get equally.
    With fewer row groups than readers (small datasets), every reader scans every group and
    keeps the rows ``i`` with ``(i + group) mod readers == reader``: still disjoint, and
    balanced to within one row per group.

    Args:
        root: the dataset folder.
        split: keep only this split; None keeps all.
        modalities: modalities to load.
        shuffle: permute row groups per epoch and samples inside a group.
        seed: base seed (identical on every rank).
        rank, world_size: explicit DDP position; default from ``torch.distributed``.
        drop_last_groups: equalise the number of row groups per reader.
        augment: with shuffle, rotate/flip aerial and DSM chips (see :func:`row_to_sample`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        modalities: Iterable[Modality | str] | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last_groups: bool = False,
        augment: bool = False,
    ) -> None:
        self.root = Path(root)
        self.info = DatasetInfo.read(self.root)
        self.bands = tuple(self.info.bands.get("aerial") or ())
        self.augment = augment
        path = self.root / MANIFEST
        if not path.is_file():
            raise DatasetFormatError(f"no {MANIFEST} in {root}: is this a UniGeo dataset?")
        self.n_groups = pq.ParquetFile(path).num_row_groups
        self.split, self.modalities = split, _modalities(modalities)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self.drop_last_groups = drop_last_groups

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order (call once per epoch, with the same value on every rank)."""
        self.epoch = epoch

    def groups_for(self, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
        """The row groups one reader handles this epoch."""
        order = np.arange(self.n_groups)
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n_groups)
        readers = world_size * num_workers
        if self.drop_last_groups:
            order = order[: (len(order) // readers) * readers]
        return [int(g) for g in order[rank * num_workers + worker :: readers]]

    def plan(self, rank: int, world_size: int, worker: int, num_workers: int) -> list[tuple]:
        """(group, modulus, residue) triples: which rows of which groups one reader reads."""
        readers = world_size * num_workers
        me = rank * num_workers + worker
        if self.n_groups >= readers:
            return [(g, 1, 0) for g in self.groups_for(rank, world_size, worker, num_workers)]
        order = self.groups_for(0, 1, 0, 1)
        return [(g, readers, (me - g) % readers) for g in order]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = _rank_world(self.rank, self.world_size)
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        pf = pq.ParquetFile(self.root / MANIFEST)
        store = ChipStore(self.root)
        for g, mod, res in self.plan(rank, world, worker, n_workers):
            table = pf.read_row_group(g)
            check_table(table, f"{MANIFEST} row group {g}")
            rows = table.to_pylist()[res::mod]
            if self.split is not None:
                rows = [r for r in rows if r["split"] == self.split]
            rng = np.random.default_rng((self.seed, self.epoch, g)) if self.shuffle else None
            order = rng.permutation(len(rows)) if rng is not None else range(len(rows))
            for i in order:
                yield row_to_sample(rows[int(i)], store, self.modalities, rng,
                                    bands=self.bands, augment=self.augment)  # fmt: skip
