"""Fixtures for query/similarity/classification tests: in-memory fake stores and a fake model.

The fakes have exactly the attributes the engine uses of ``engine.store.EmbeddingStore`` and
``engine.model.UniGeoModel``, so the tests pin down the maths without ONNX files or disk stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from engine.grid import TileGrid
from engine.model.bundle_spec import BundleSpec
from engine.model.contract import Modality

UTM = "EPSG:32633"
CELL = 10.0  # metres per tile cell (gsd 1 m x 10 px)
ORIGIN = (500_000.0, 5_000_000.0)


def unit(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass
class FakeStore:
    """Arrays + a TileGrid: what the engine reads from an EmbeddingStore."""

    grid: TileGrid
    embeddings: np.ndarray  # [rows, cols, D] float16
    valid: np.ndarray  # [rows, cols] bool
    model_hash: str = "fakehash0123"
    meta: dict = field(default_factory=dict)

    @property
    def crs(self) -> str:
        return self.grid.crs

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[-1])


def make_grid(rows: int, cols: int, crs: str = UTM, row0: int = 0, col0: int = 0) -> TileGrid:
    """A grid of 10-m cells whose top-left corner is ORIGIN (+ row0/col0 cells)."""
    return TileGrid(crs, 1.0, 10, 10, row0, col0, rows, cols, *ORIGIN)


def make_store(
    vectors: np.ndarray, valid: np.ndarray | None = None, grid: TileGrid | None = None
) -> FakeStore:
    """A store from ``vectors`` [rows, cols, D] (normalised here; invalid tiles zeroed)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    rows, cols, _ = vectors.shape
    valid = np.ones((rows, cols), bool) if valid is None else np.asarray(valid, bool)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    emb = np.where(norms > 0, vectors / np.where(norms > 0, norms, 1), 0.0)
    emb[~valid] = 0.0
    return FakeStore(grid or make_grid(rows, cols), emb.astype(np.float16), valid)


class FakeModel:
    """A model with analytic encoders: text from a vocabulary, GPS/photo/DSM from simple maps."""

    def __init__(self, dim: int, vocab: dict[str, np.ndarray] | None = None, **bundle_kw: Any):
        self.dim = dim
        self.model_hash = "fakemodel42"
        self.vocab = {k: unit(v) for k, v in (vocab or {}).items()}
        self.bundle = BundleSpec(
            name="fake",
            version="1",
            dim=dim,
            encoders={m: f"{m.value}.onnx" for m in Modality},
            **bundle_kw,
        )
        self.calls: list[tuple[str, Any]] = []
        self.modalities = set(Modality)

    def has(self, modality: Modality) -> bool:
        return Modality(modality) in self.modalities

    def encode_text(self, texts: list[str], templates: list[str] | None = None) -> np.ndarray:
        self.calls.append(("text", (list(texts), templates)))
        return np.stack([self.vocab[t] for t in texts]).astype(np.float32)

    def encode_gps(self, lat: Any, lon: Any) -> np.ndarray:
        lat, lon = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
        out = np.zeros((lat.size, self.dim))
        out[:, :4] = np.stack([np.cos(lat), np.sin(lat), np.cos(lon), np.sin(lon)], axis=1)
        self.calls.append(("gps", (lat, lon)))
        return unit(out).astype(np.float32)

    def encode_photos(self, photos: list) -> np.ndarray:
        out = np.zeros((len(photos), self.dim))
        for i, p in enumerate(photos):
            out[i, Path(p).stat().st_size % self.dim] = 1.0
        return out.astype(np.float32)

    def encode_tiles(self, modality: Modality, chips: np.ndarray, batch_size: int = 32):
        assert Modality(modality) is Modality.DSM and chips.ndim == 4 and chips.shape[1] == 1
        self.calls.append(("dsm", chips.shape))
        out = np.zeros((chips.shape[0], self.dim))
        out[:, 0] = 1.0
        out[:, 1] = chips.reshape(len(chips), -1).std(axis=1)
        return unit(out).astype(np.float32)


@pytest.fixture
def fx() -> SimpleNamespace:
    """The fakes and helpers of this folder (test modules cannot import conftest directly)."""
    return SimpleNamespace(
        make_store=make_store,
        make_grid=make_grid,
        FakeModel=FakeModel,
        FakeStore=FakeStore,
        unit=unit,
        UTM=UTM,
        CELL=CELL,
        ORIGIN=ORIGIN,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
