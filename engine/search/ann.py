"""Approximate nearest-neighbour (FAISS) index over a store's valid tiles, for top-k at 10^7+.

The index lives beside the store (``<store>/ann/``):

- ``index.faiss``: the serialised FAISS index; ids are flat tile indices ``row * cols + col``;
- ``sample.npy``: float16 embeddings of a uniform sample of valid tiles, from which the
  percentiles of hits are estimated without a pass over the whole store;
- ``index.json``: what the index was built from (``model_hash``, ``source_fingerprint``,
  ``grid``, ``valid_count``), its kind and parameters, and the sha256 of ``index.faiss``.

An index whose store changed (another model, source, grid or set of valid tiles) is refused
when loaded. Vectors are the float16 store rows widened to float32 and L2-normalised, compared by
inner product (= cosine). :func:`top_k_ann` takes k·(2r+1)^2 candidates from the index,
re-scores them exactly from the store and runs the same greedy NMS as :func:`~.hits.top_k`.

FAISS comes with the ``scale`` extra (``faiss-cpu``) and is imported only when an index is used.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import EngineError, InputError, StoreError
from ..store.guard import folder_lock
from .calibration import Calibration
from .hits import Hit, check_k, nms
from .scoring import (
    F16_RESCALE,
    check_canceled,
    check_scores,
    query_vector,
    row_step,
    widen_f16_bits,
)

if TYPE_CHECKING:
    from ..store.npy import EmbeddingStore
    from .query import Query

ANN_FORMAT_VERSION = 1
ANN_DIR = "ann"
KINDS = ("ivf", "ivf-sq8", "flat")
"""``ivf``: IVF-Flat (exact vectors in inverted lists); ``ivf-sq8``: IVF with 8-bit scalar
quantisation (4x smaller, re-scored exactly from the store anyway); ``flat``: exhaustive."""

DEFAULT_NPROBE_FRACTION = 1 / 16
"""Lists probed by default, as a fraction of ``nlist`` (at least 8): recall@10 >= 0.95 on the
clustered benchmark data of ``bench/ann.py`` (see its table); raise it for harder data."""

SAMPLE_SIZE = 16_384
"""Tiles kept for percentile estimates: standard error ~0.4 percentile points at the median,
~0.025 at the 99.9th percentile (where hits are); scoring them costs ~2 ms per query."""


SAMPLE_BINS = 1 << 14
"""Histogram bins of the sample's calibration (its bound adds ~0.1 points to sampling error)."""


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise EngineError(
            "the ANN index needs FAISS, which is not installed; install the 'scale' extra "
            "(pip install 'unigeo[scale]', or pip install faiss-cpu)"
        ) from None
    return faiss


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: ~sqrt(n), between 1 and 65536 (FAISS guidance)."""
    return int(min(65536, max(1, round(math.sqrt(max(n, 1))))))


def _normalised(block: np.ndarray) -> np.ndarray:
    vecs = np.ascontiguousarray(block, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms > 0, norms, 1.0)


def _store_identity(store: EmbeddingStore) -> dict[str, Any]:
    """What an index must match to be used with ``store``."""
    return {
        "model_hash": str(getattr(store, "model_hash", "")),
        "source_fingerprint": str(getattr(store, "source_fingerprint", "")),
        "grid": store.grid.to_dict(),
        "valid_count": int(np.count_nonzero(np.asarray(store.valid, dtype=bool))),
        "dim": int(store.dim),
    }


def _valid_chunks(
    store: EmbeddingStore,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
) -> Any:
    """Yield ``(flat ids, float32 [n, D] normalised vectors)`` of the valid tiles, chunk by chunk.

    The store is read only as ``embeddings[r0:r1]`` slices (memmap and Zarr alike); float16
    rows are widened with the bit trick of :mod:`.similarity` (numpy's own cast is ~8x slower).
    """
    emb = store.embeddings
    rows, cols, dim = emb.shape
    step = row_step(cols, None)
    buf = np.empty((step * cols, dim), np.int32)
    for r0 in range(0, rows, step):
        check_canceled(is_canceled)
        r1 = min(rows, r0 + step)
        keep = np.flatnonzero(np.asarray(store.valid[r0:r1], dtype=bool).reshape(-1))
        if keep.size:
            src = np.asarray(emb[r0:r1]).reshape(-1, dim)[keep]
            if src.dtype == np.float16:
                vecs = widen_f16_bits(src, buf[: len(src)]) * F16_RESCALE  # exact: 2^112
            else:
                vecs = src.astype(np.float32)
            ids = keep.astype(np.int64) + r0 * cols
            # stored rows are unit vectors: NaN, Inf or huge values mean a damaged store
            bad = ~(np.linalg.norm(vecs, axis=1) <= 1.01)
            if bad.any():
                r, c = divmod(int(ids[np.argmax(bad)]), cols)
                check_scores(store, r, np.full((1, c + 1, 1), np.nan), np.ones(1))
            yield ids, _normalised(vecs)
        if progress is not None:
            progress(r1 / rows)


class AnnIndex:
    """A FAISS index over one store's valid tiles. Use :meth:`build` or :meth:`load`."""

    def __init__(self, index: Any, info: dict[str, Any], sample: np.ndarray) -> None:
        self.index = index
        self.info = info
        self.sample = sample  # float16 [n, D], as saved
        # widened once: numpy's float16 cast is slow (~25 ms per 10^6 values on this CPU)
        self._sample32 = sample.astype(np.float32)

    def sample_calibration(self, vec: np.ndarray) -> Calibration:
        """Percentile map of the query ``vec`` (normalised) estimated from the tile sample."""
        return Calibration.from_scores(self._sample32 @ vec, bins=SAMPLE_BINS)

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def nlist(self) -> int:
        return int(self.info["nlist"])

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def default_nprobe(self) -> int:
        return int(min(self.nlist, max(8, round(self.nlist * DEFAULT_NPROBE_FRACTION))))

    @classmethod
    def build(
        cls,
        store: EmbeddingStore,
        kind: str = "ivf",
        nlist: int | None = None,
        train_size: int | None = None,
        sample_size: int = SAMPLE_SIZE,
        seed: int = 0,
        progress: Callable[[float], None] | None = None,
        is_canceled: Callable[[], bool] | None = None,
    ) -> AnnIndex:
        """Train (k-means on a sample, IVF kinds) and fill an index with every valid tile.

        Two passes over the store, chunk by chunk: one draws the training and percentile
        samples, one adds the vectors; memory beyond the index itself stays bounded.

        Args:
            store: The embedding store.
            kind: One of :data:`KINDS`.
            nlist: Inverted lists (IVF kinds); default :func:`default_nlist` of the valid count.
            train_size: Vectors for k-means; default 50 per list (at most the valid count).
            sample_size: Tiles kept for percentile estimates (:data:`SAMPLE_SIZE`).
            seed: Seed of the samples and of k-means.
            progress: Called with the fraction done.
            is_canceled: Polled between chunks; cancellation raises CancelledError.
        """
        faiss = _faiss()
        if kind not in KINDS:
            raise InputError(f"unknown ANN index kind '{kind}'; use one of {', '.join(KINDS)}")
        ident = _store_identity(store)
        n = ident["valid_count"]
        if n == 0:
            raise InputError("the store has no valid tile; there is nothing to index")
        nlist = 1 if kind == "flat" else int(nlist or default_nlist(n))
        if not 1 <= nlist <= n:
            raise InputError(f"nlist must be between 1 and the {n} valid tiles (got {nlist})")
        want = min(n, int(train_size or 50 * nlist)) if kind != "flat" else 0
        half = None if progress is None else (lambda f: progress(0.5 * f))
        train, sample = _draw_samples(store, want, min(n, sample_size), seed, half, is_canceled)
        index = _new_index(faiss, kind, store.dim, nlist)
        if kind != "flat":
            index.cp.seed = seed  # k-means initialisation is drawn from the training set
            index.train(train)
        rest = None if progress is None else (lambda f: progress(0.5 + 0.5 * f))
        for ids, vecs in _valid_chunks(store, rest, is_canceled):
            index.add_with_ids(vecs, ids)
        info = {"format_version": ANN_FORMAT_VERSION, "kind": kind, "nlist": nlist, **ident}
        return cls(index, info, sample.astype(np.float16))

    def search(
        self, qvec: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` approximate nearest tiles: ``(rows, cols, cosine)`` arrays, best first.

        ``nprobe`` lists are scanned (default :attr:`default_nprobe`); fewer than ``k`` come
        back when the index holds fewer tiles.
        """
        if k < 1:
            raise InputError("need k >= 1")
        vec = np.asarray(qvec, dtype=np.float32).reshape(1, -1)
        if vec.shape[1] != int(self.info["dim"]):
            raise InputError(
                f"query has dimension {vec.shape[1]} but the index holds {self.info['dim']}-d "
                "embeddings; was it built for another model?"
            )
        vec = _normalised(vec)
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = int(min(self.nlist, nprobe or self.default_nprobe))
        scores, ids = self.index.search(vec, int(min(k, self.ntotal)))
        keep = ids[0] >= 0
        rows, cols = np.divmod(ids[0][keep], int(self.info["grid"]["cols"]))
        return rows, cols, scores[0][keep]

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``sample.npy`` and ``index.json`` (last) to ``folder``."""
        import io

        faiss = _faiss()
        folder = Path(folder)
        blob = faiss.serialize_index(self.index).tobytes()
        buf = io.BytesIO()
        np.save(buf, self.sample)
        info = {**self.info, "sha256": hashlib.sha256(blob).hexdigest()}
        # one writer at a time, so two saves cannot pair one's json with the other's index
        with folder_lock(_existing_parent(folder)):
            atomic_write_bytes(folder / "index.faiss", blob)
            atomic_write_bytes(folder / "sample.npy", buf.getvalue())
            # index.json last: it names the digest of the index it describes
            atomic_write_text(folder / "index.json", json.dumps(info, indent=1))
        return folder

    @classmethod
    def load(cls, store: EmbeddingStore, folder: str | Path | None = None) -> AnnIndex:
        """Load the index of ``store`` (default ``<store folder>/ann``); refuse a stale one."""
        faiss = _faiss()
        folder = Path(folder) if folder is not None else default_folder(store)
        info = _read_info(folder)
        ident = _store_identity(store)
        diff = [k for k in ident if info.get(k) != ident[k]]
        if diff:
            raise StoreError(
                f"the ANN index in {folder} was built for another store (different "
                f"{', '.join(diff)}); build it again with AnnIndex.build(store).save(...)"
            )
        try:
            blob = (folder / "index.faiss").read_bytes()
            sample = np.load(folder / "sample.npy")
        except (OSError, ValueError) as e:
            raise StoreError(
                f"the ANN index in {folder} is damaged ({e}); build it again"
            ) from None
        if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
            raise StoreError(f"the ANN index in {folder} is damaged (checksum); build it again")
        index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        return cls(index, {k: v for k, v in info.items() if k != "sha256"}, sample)


def default_folder(store: EmbeddingStore) -> Path:
    """``<store folder>/ann``; a store without a folder needs an explicit one."""
    base = getattr(store, "folder", None)
    if base is None:
        raise InputError("this store has no folder; give the ANN index folder explicitly")
    return Path(base) / ANN_DIR


def _read_info(folder: Path) -> dict[str, Any]:
    f = folder / "index.json"
    if not f.is_file():
        raise StoreError(f"no ANN index in {folder}; build one with AnnIndex.build(store)")
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise StoreError(f"{f} is unreadable ({e}); build the ANN index again") from None
    if not isinstance(info, dict) or info.get("format_version") != ANN_FORMAT_VERSION:
        raise StoreError(f"{f} is not an ANN index description of this UniGeo; build it again")
    return info


def _new_index(faiss: Any, kind: str, dim: int, nlist: int) -> Any:
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    else:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip
        )
    return index


def _draw_samples(
    store: EmbeddingStore,
    n_train: int,
    n_sample: int,
    seed: int,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform samples (without replacement) of the valid tiles' vectors, in one pass."""
    n = int(np.count_nonzero(np.asarray(store.valid, dtype=bool)))
    rng = np.random.default_rng(seed)
    train_pos = np.sort(rng.choice(n, n_train, replace=False)) if n_train else np.empty(0, int)
    sample_pos = np.sort(rng.choice(n, n_sample, replace=False))
    train, sample, seen = [], [], 0
    for _ids, vecs in _valid_chunks(store, progress, is_canceled):
        for pos, out in ((train_pos, train), (sample_pos, sample)):
            lo, hi = np.searchsorted(pos, [seen, seen + len(vecs)])
            out.append(vecs[pos[lo:hi] - seen])
        seen += len(vecs)
    dim = store.dim
    train_arr = np.concatenate(train) if train else np.empty((0, dim), np.float32)
    return np.ascontiguousarray(train_arr), np.concatenate(sample)


def top_k_ann(
    store: EmbeddingStore,
    index: AnnIndex,
    qvec: np.ndarray | Query,
    k: int,
    min_distance_tiles: int = 1,
    nprobe: int | None = None,
    calibration: Calibration | None = None,
) -> list[Hit]:
    """Top-k hits with NMS from ANN candidates, as :class:`~.hits.Hit` objects.

    The index gives k·(2r+1)^2 candidates; their cosine is recomputed from the store (the same
    float32 arithmetic as :func:`~.similarity.similarity`), then the greedy NMS of
    :func:`~.hits.top_k` runs on them. With an exhaustive search (``kind="flat"`` or
    ``nprobe = nlist``) the hits equal ``top_k``'s. Percentiles come from ``calibration`` if
    given, else from the index's sample of tiles (an estimate: see :data:`SAMPLE_SIZE`).
    """
    check_k(k, min_distance_tiles)
    vec = query_vector(store, qvec)
    r = int(min_distance_tiles)
    rows, cols, _ = index.search(vec, k * (2 * r + 1) ** 2, nprobe)
    if rows.size == 0:
        return []
    emb = store.embeddings[rows, cols]  # fancy indexing: memmap rows, Zarr vindex
    scores = np.asarray(emb, dtype=np.float32) @ vec
    flat = rows.astype(np.int64) * store.grid.cols + cols
    order = np.lexsort((flat, -scores))
    if calibration is None:
        calibration = index.sample_calibration(vec)
    scores = scores[order]
    return nms(store.grid, flat[order], scores, calibration.percentiles(scores), k, r)


def _existing_parent(folder: Path) -> Path:
    """The nearest folder that exists: the index folder's own parent (usually the store)."""
    p = folder.parent
    while not p.exists() and p.parent != p:
        p = p.parent
    return p
