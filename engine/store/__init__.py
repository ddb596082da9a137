"""Embedding stores: the tiles' embeddings on disk, written once and queried many times.

Two kinds share one interface (:class:`~.base.StoreBase`): the npy store (:mod:`.npy`, memory
maps, written by one process) and the Zarr store (:mod:`.zarr`, chunks written by distributed
jobs). :func:`open_store` opens either. Beside them: the cache the GUI and Processing share
(:mod:`.cache`), windows and no-data limits for queries (:mod:`.window`), and what keeps a
store write from costing the user data (:mod:`.guard`, :mod:`.schema`).
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import STORE_JSON, ZARR_JSON
from ..errors import StoreError
from .base import partial_path
from .npy import EmbeddingStore
from .zarr import ZarrEmbeddingStore


def open_store(path: str | Path) -> EmbeddingStore | ZarrEmbeddingStore:
    """Open a finalised embedding store of either kind, chosen by what is on disk.

    Raises:
        StoreError: nothing at ``path`` is an embedding store (or it is unfinished).
    """
    p = Path(path)
    if (p / ZARR_JSON).is_file():
        return ZarrEmbeddingStore.open(p)
    if (p / STORE_JSON).is_file():
        return EmbeddingStore.open(p)
    part = partial_path(p)
    if part.exists():
        raise StoreError(
            f"the embedding store {p} is unfinished ({part.name} exists); rerun the same "
            "'embed' command to resume it"
        )
    what = "does not exist" if not p.exists() else f"holds neither {STORE_JSON} nor {ZARR_JSON}"
    raise StoreError(f"{p} is not an embedding store ({what}); embed a raster into it first")
