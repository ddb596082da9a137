"""Batch independence of the REAL default bundle: a tile or text embeds the same in any batch.

Dynamic int8 graphs (``DynamicQuantizeLinear``) quantise activations with one scale per batch,
so a tile's embedding depended on the tiles sharing its batch, and a sub-extent embed differed
from the full-raster one on every overlapping tile (up to 1.7e-3). The fake/analytic bundles of
the other invariance tests cannot show this; these tests run the shipped encoders on real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelContractError
from engine.model import UniGeoModel
from engine.model.contract import Modality
from engine.model.sessions import couples_batch

BUNDLE = Path(__file__).resolve().parents[2] / "resources" / "models" / "default"
NAIP = ("naip_north_dakota", "m_4709963_se_14_1_20200831.tif")
# The reviewer's sub-extent of that scene, in its CRS (EPSG:26914): 56 overlapping tiles.
EXTENT = "487000,5206000,489000,5208000"
# fp32 kernels may block a batch differently (measured max 7.5e-8); int8 dynamic gave 1.8e-3.
TOL = 1e-6


@pytest.fixture(scope="module")
def model() -> UniGeoModel:
    if not (BUNDLE / "bundle.json").is_file():
        pytest.skip("the default bundle is not present")
    with UniGeoModel.load(BUNDLE, providers="cpu", threads=2) as m:
        yield m


@pytest.fixture(scope="module")
def naip(shared_data: Path) -> Path:
    tif = shared_data.joinpath(*NAIP)
    if not tif.is_file():
        pytest.skip(f"{tif.name} is not in the shared data")
    return tif


def _naip_chips(tif: Path, n: int, size: int, bands: int = 4) -> np.ndarray:
    """``n`` real 4-band chips in [0, 1]: the scene (5 m, the model's GSD) cut into tiles.

    With ``bands`` > 4 the missing bands (NAIP has no SWIR) are all-NaN planes, as the engine
    reads them for an encoder that masks absent bands.
    """
    import rasterio

    with rasterio.open(tif) as ds:
        img = ds.read().astype(np.float32) / 255.0
    h, w = img.shape[1:]
    tiles = [
        img[:, r : r + size, c : c + size]
        for r in range(0, h - size + 1, size)
        for c in range(0, w - size + 1, size)
    ]
    assert len(tiles) >= n, "the scene is too small for the test"
    chips = np.stack(tiles[:n])
    absent = np.full((n, bands - chips.shape[1], size, size), np.nan, np.float32)
    return np.concatenate([chips, absent], axis=1)


def test_shipped_graphs_are_classified(model: UniGeoModel) -> None:
    # The aerial tower must be a batch-independent graph: tiles are embedded in batches of 32.
    assert not couples_batch(model.loaded.files[Modality.AERIAL])
    assert not model.batch_coupled(Modality.AERIAL)
    # The text tower's int8 is weight-only (its word-embedding table): batch-independent too,
    # so the engine may batch texts. A dynamic int8 tower would be run one text at a time.
    assert not model.batch_coupled(Modality.TEXT)
    fp32 = (Modality.STREETVIEW, Modality.DSM, Modality.GPS)
    assert not any(model.batch_coupled(m) for m in fp32 if model.has(m))


def test_tile_alone_equals_tile_in_batch(model: UniGeoModel, naip: Path) -> None:
    prep = model.spec(Modality.AERIAL).preprocess
    chips = _naip_chips(naip, 40, prep.size, len(prep.bands))
    alone = np.concatenate([model.encode_tiles(Modality.AERIAL, c[None]) for c in chips])
    for bs in (8, 32, 40):
        batched = model.encode_tiles(Modality.AERIAL, chips, batch_size=bs)
        assert batched.shape == (40, model.dim)
        assert float(np.abs(batched - alone).max()) <= TOL, bs
    # the tiles differ from each other, so the comparison is not trivially true
    assert float(np.abs(alone[0] - alone[1:]).max()) > 0.05


def test_text_alone_equals_text_in_batch(model: UniGeoModel) -> None:
    texts = ["open water", "a wetland in winter", "dense housing beside a road", "cropland"]
    texts += [t.replace("{}", c) for c in model.bundle.class_prompts for t in ("{}", "a {}")]
    alone = np.concatenate([model.encode_text([t]) for t in texts])
    batched = model.encode_text(texts, batch_size=64)
    assert float(np.abs(batched - alone).max()) <= TOL
    # The raw session on the whole batch (no one-at-a-time detour) gives the same numbers.
    ids, mask = model.tokenizer().encode(texts)
    sess = model.encoder_session(Modality.TEXT)
    raw = sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    assert float(np.abs(raw - alone).max()) <= TOL
    assert float(np.abs(alone[0] - alone[1:]).max()) > 0.05  # not trivially true


def test_sub_extent_embeds_equal_full_raster_on_overlap(naip: Path, tmp_path: Path) -> None:
    from engine.cli.main import main
    from engine.store import open_store

    full, sub = tmp_path / "full.store", tmp_path / "sub.store"
    assert main(["embed", str(naip), "--model", str(BUNDLE), "--out", str(full)]) == 0
    args = ["embed", str(naip), "--model", str(BUNDLE), "--out", str(sub), "--extent", EXTENT]
    assert main(args) == 0
    a, b = open_store(full), open_store(sub)
    ga, gb = a.grid, b.grid
    assert (ga.crs, ga.gsd, ga.tile_px) == (gb.crs, gb.gsd, gb.tile_px)
    r0, c0 = max(ga.row0, gb.row0), max(ga.col0, gb.col0)
    r1 = min(ga.row0 + ga.rows, gb.row0 + gb.rows)
    c1 = min(ga.col0 + ga.cols, gb.col0 + gb.cols)
    ea = np.asarray(a.embeddings[r0 - ga.row0 : r1 - ga.row0, c0 - ga.col0 : c1 - ga.col0])
    eb = np.asarray(b.embeddings[r0 - gb.row0 : r1 - gb.row0, c0 - gb.col0 : c1 - gb.col0])
    va = np.asarray(a.valid[r0 - ga.row0 : r1 - ga.row0, c0 - ga.col0 : c1 - ga.col0])
    vb = np.asarray(b.valid[r0 - gb.row0 : r1 - gb.row0, c0 - gb.col0 : c1 - gb.col0])
    assert va.sum() == 56 and np.array_equal(va, vb)
    # Stored as float16: fp32 differences of ~1e-7 can flip the last bit of a rare value, the
    # int8 batch coupling moved values by up to 28 float16 steps.
    ulp = np.spacing(np.maximum(np.abs(ea), np.abs(eb)).astype(np.float16)).astype(np.float32)
    diff = np.abs(ea.astype(np.float32) - eb.astype(np.float32))
    assert (diff[va] <= ulp[va]).all(), float(diff.max())
    assert (diff[va] == 0).mean() > 0.99


def test_couples_batch_scans_the_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.model.sessions as sessions

    monkeypatch.setattr(sessions, "_SCAN_CHUNK", 16)
    for at in range(0, 40, 3):  # the op name at every offset, also across chunk boundaries
        f = tmp_path / f"m{at}.onnx"
        f.write_bytes(b"x" * at + b"\x12\x15DynamicQuantizeLinear" + b"y" * 20)
        assert couples_batch(f), at
    clean = tmp_path / "clean.onnx"
    clean.write_bytes(b"MatMulIntegerToFloat QuantizeLinear DynamicQuant" * 10)
    assert not couples_batch(clean)
    with pytest.raises(ModelContractError, match="cannot read"):
        couples_batch(tmp_path / "missing.onnx")
