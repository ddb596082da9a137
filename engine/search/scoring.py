"""The scoring core every query shares: store rows times query vectors, chunk by chunk.

Scores are computed in row chunks straight from the float16 store (a memmap or a Zarr array: only
``store.embeddings[r0:r1]`` is ever read), so a store is never copied whole as float32. The
float16 -> float32 widening is done with integer bit operations (see :func:`widen_f16_bits`),
~8x faster than numpy's own float16 cast on CPUs without AVX-512, and chunks are scored on a small
thread pool (numpy releases the GIL in both the widening and the matrix product). The in-memory
heatmap (:mod:`.similarity`), the streamed one (:mod:`.streaming`), the ANN index (:mod:`.ann`)
and classification all score through :func:`chunked_dot`.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CancelledError, InputError, StoreError

if TYPE_CHECKING:
    from ..store.npy import EmbeddingStore
    from .query import Query

CHUNK_TILES = 4096
"""Tiles per chunk: small enough that the widened chunk (4096 x D x 4 bytes) stays in cache."""

SCORE_WORKERS = min(4, os.cpu_count() or 1)
"""Threads that score chunks; numpy releases the GIL, so this scales with the cores."""


# A float16 bit pattern shifted left by 13 is the float32 with the same mantissa but an exponent
# 112 too small (the bias difference 127 - 15); scaling the *other* matmul operand by 2^112 undoes
# it exactly, also for float16 subnormals (they land on float32 subnormals).
F16_RESCALE = np.float32(2.0**112)
_CLEAR_SIGN_SPILL = np.int32(~0x70000000)  # sign-extension ones that spill into bits 28..30


def widen_f16_bits(src: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """Float16 ``src`` [n, D] into ``buf`` [n, D] int32 whose bits read as float32 x 2^-112."""
    buf[...] = src.view(np.int16)  # sign-extends: the sign bit lands on bits 15..31
    buf <<= 13
    buf &= _CLEAR_SIGN_SPILL
    return buf.view(np.float32)


def check_canceled(is_canceled: Callable[[], bool] | None) -> None:
    if is_canceled is not None and is_canceled():
        raise CancelledError("cancelled by the user; no output was written")


def row_step(cols: int, chunk_rows: int | None) -> int:
    return int(chunk_rows or max(1, CHUNK_TILES // max(cols, 1)))


class _Scorer:
    """Reads, widens and multiplies one row chunk by ``mat``; one widening buffer per thread."""

    def __init__(self, emb: Any, mat: np.ndarray, step: int) -> None:
        self.emb, self.step = emb, step
        self.rows, self.cols, self.dim = emb.shape
        self.fast = emb.dtype == np.float16 and emb.dtype.isnative
        self.mat = np.ascontiguousarray(mat * F16_RESCALE) if self.fast else mat
        self.local = threading.local()

    def __call__(self, r0: int) -> tuple[int, int, np.ndarray]:
        r1 = min(self.rows, r0 + self.step)
        src = np.asarray(self.emb[r0:r1]).reshape(-1, self.dim)
        if self.fast:
            buf = getattr(self.local, "buf", None)
            if buf is None:
                buf = self.local.buf = np.empty((self.step * self.cols, self.dim), np.int32)
            block = widen_f16_bits(src, buf[: len(src)])
        else:
            block = np.asarray(src, dtype=np.float32)
        mat = self.mat
        # a 1-column product goes through gemv, which is 2x faster than a 1-column gemm here
        prod = block @ mat[:, 0] if mat.shape[1] == 1 else block @ mat
        return r0, r1, prod.reshape(r1 - r0, self.cols, mat.shape[1])


class _SingleThreadedBlas:
    """Pins BLAS to one thread while any scoring pool runs (process-wide, reference-counted).

    OpenBLAS called from several threads at once serialises on its own thread pool, and its
    idle threads spin on the cores our workers need: measured 2-5x *slower* than one thread.
    One BLAS thread per worker costs nothing here (a 4096 x 128 gemv gains nothing from two).
    The pin is counted so that overlapping queries restore the original setting only once.
    """

    _lock = threading.Lock()
    _users = 0
    _limiter: Any = None
    _controller: Any = None

    @classmethod
    def available(cls) -> bool:
        """Whether threadpoolctl is importable (without it, scoring stays single-threaded)."""
        with cls._lock:
            if cls._controller is None:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:
                    cls._controller = False
                else:
                    cls._controller = ThreadpoolController()
            return cls._controller is not False

    def __enter__(self) -> _SingleThreadedBlas:
        cls = type(self)
        if not cls.available():
            raise RuntimeError("threadpoolctl is needed to pin BLAS; check available() first")
        with cls._lock:
            if cls._users == 0:
                cls._limiter = cls._controller.limit(limits=1, user_api="blas")
            cls._users += 1
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self)
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                cls._limiter.restore_original_limits()
                cls._limiter = None


def _scored_chunks(
    scorer: _Scorer, workers: int, is_canceled: Callable[[], bool] | None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Chunks in row order; with workers > 1 up to 2 x workers are scored ahead on a pool."""
    starts = range(0, scorer.rows, scorer.step)
    if workers <= 1 or len(starts) < 2 or not _SingleThreadedBlas.available():
        for r0 in starts:
            check_canceled(is_canceled)
            yield scorer(r0)
        return
    todo = iter(starts)
    with (
        _SingleThreadedBlas(),
        ThreadPoolExecutor(workers, thread_name_prefix="unigeo-score") as pool,
    ):
        pending = deque(pool.submit(scorer, r0) for r0 in itertools.islice(todo, 2 * workers))
        try:
            while pending:
                check_canceled(is_canceled)
                done = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(scorer, nxt))
                yield done
        finally:  # cancelled, failed or abandoned: do not score the rest
            for fut in pending:
                fut.cancel()


def chunked_dot(
    store: EmbeddingStore,
    mat: np.ndarray,
    chunk_rows: int | None = None,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(r0, r1, emb[r0:r1] @ mat)`` as float32 ``[r1 - r0, cols, K]`` blocks, in order.

    Args:
        store: The embedding store (``embeddings`` [rows, cols, D], float16 or float32).
        mat: ``[D, K]`` matrix (query vectors or class prototypes / weights as columns).
        chunk_rows: Grid rows per chunk; by default about :data:`CHUNK_TILES` tiles.
        progress: Called with the fraction done after every chunk (in the calling thread).
        is_canceled: Polled before every chunk; when it returns True, raises CancelledError.
        workers: Scoring threads (default :data:`SCORE_WORKERS`); the blocks are identical for
            any number, only faster.
    """
    emb = store.embeddings
    rows, cols, dim = emb.shape
    mat = np.asarray(mat, dtype=np.float32)
    if mat.ndim != 2 or mat.shape[0] != dim:
        raise InputError(
            f"query has dimension {mat.shape[0] if mat.ndim else 0} but the store holds "
            f"{dim}-d embeddings; was the store made with another model?"
        )
    scorer = _Scorer(emb, mat, row_step(cols, chunk_rows))
    # stored rows are unit vectors (or zero): |row . w| <= |w| (Cauchy-Schwarz), up to float16
    # rounding; anything else is a damaged store (NaN/Inf or huge values gave "cosines" of 10^5)
    limit = 1.01 * np.linalg.norm(mat, axis=0) + 1e-6
    for r0, r1, block in _scored_chunks(scorer, workers or SCORE_WORKERS, is_canceled):
        check_scores(store, r0, block, limit)
        yield r0, r1, block
        if progress is not None:
            progress(r1 / rows)


def check_scores(store: Any, r0: int, block: np.ndarray, limit: np.ndarray) -> None:
    """StoreError when a scored block ``[rows, cols, K]`` (from row ``r0``) exceeds ``limit``."""
    ok = np.abs(block) <= limit  # NaN compares False
    if ok.all():
        return
    r, c = np.argwhere(~ok.all(axis=-1))[0]
    raise StoreError(
        f"the embedding store {getattr(store, 'folder', '')} is damaged: the tile at row "
        f"{r0 + int(r)}, column {int(c)} holds values that no embedding can have (NaN, Inf or "
        "too large); delete the store and embed the raster again"
    )


def query_vector(store: EmbeddingStore, qvec: np.ndarray | Query) -> np.ndarray:
    vec = qvec.vector() if hasattr(qvec, "vector") else np.asarray(qvec, dtype=np.float32)
    vec = np.asarray(vec, dtype=np.float32).reshape(-1)
    if vec.shape[0] != store.dim:
        raise InputError(
            f"query has dimension {vec.shape[0]} but the store holds {store.dim}-d embeddings; "
            "was the store made with another model?"
        )
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError("the query vector is zero or not finite; check the query terms")
    return vec / norm
