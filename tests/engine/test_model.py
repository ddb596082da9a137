"""UniGeoModel on the analytic bundle: exact outputs per modality, shapes, norms, errors."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineError, InputError, ModelContractError, ProviderUnavailableError
from engine.model import UniGeoModel
from engine.model.bundle import load_bundle
from engine.model.contract import Modality
from engine.model.preprocess import normalize_dsm, normalize_image, prepare_photo
from engine.model.sessions import CPU
from tests.fixtures.analytic_bundle import (
    AERIAL_MEAN,
    AERIAL_STD,
    PHOTO_MEAN,
    PHOTO_STD,
    analytic_embedding,
    break_bundle,
    make_analytic_bundle,
    tokenize,
)

TOL = 1e-5


@pytest.fixture(scope="module")
def model(analytic_bundle):
    with UniGeoModel.load(analytic_bundle, providers="cpu", threads=1) as m:
        yield m


def _chips(seed: int, n: int = 7) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, 4, 16, 16), dtype=np.float32)
    x[0, 2, :4, :4] = np.nan  # nodata pixels
    return x


def _unit(e: np.ndarray, n: int, d: int = 8) -> None:
    assert e.shape == (n, d) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)


def test_facade_attributes(model, analytic_bundle):
    assert model.dim == 8 and model.bundle.name == "analytic" and model.folder == analytic_bundle
    assert model.model_hash == load_bundle(analytic_bundle).model_hash
    assert all(model.has(m) for m in Modality) and model.modalities == tuple(Modality)
    assert model.spec(Modality.DSM).preprocess.dsm_scale_m == 10.0
    assert "analytic 1" in repr(model)


def test_aerial_matches_analytic(model):
    x = _chips(0)
    e = model.encode_tiles(Modality.AERIAL, x)
    _unit(e, 7)
    ref = analytic_embedding("aerial", normalize_image(x, (AERIAL_MEAN,) * 4, (AERIAL_STD,) * 4))
    assert np.abs(e - ref).max() < TOL


def test_batch_size_independence(model):
    x = _chips(1, 9)
    full = model.encode_tiles(Modality.AERIAL, x, batch_size=64)
    for bs in (1, 2, 4):
        assert np.abs(model.encode_tiles(Modality.AERIAL, x, batch_size=bs) - full).max() < 1e-6
    assert np.abs(model.encode_tiles(Modality.AERIAL, x[3:4]) - full[3:4]).max() < 1e-6


def test_dsm_matches_analytic(model):
    h = np.random.default_rng(2).normal(100, 8, (5, 1, 16, 16)).astype(np.float32)
    h[1, 0, 3:9, 3:9] += 25.0  # a building
    h[2, 0, 0, :] = np.nan
    e = model.encode_tiles(Modality.DSM, h, batch_size=2)
    _unit(e, 5)
    assert np.abs(e - analytic_embedding("dsm", normalize_dsm(h, "median", 10.0))).max() < TOL
    h[4] = np.nan
    with pytest.raises(InputError, match="chip 4 holds only nodata"):
        model.encode_tiles(Modality.DSM, h)


def test_text_matches_analytic_and_templates(model):
    texts = [
        "blue water",
        "Dense FOREST",
        "buildings, urban!",
        "zebra crossing water",
    ]  # mostly unknown: embeds, with a warning
    e = model.encode_text(texts)
    _unit(e, 4)
    assert np.abs(e - analytic_embedding("text", tokenize(texts))).max() < TOL
    tmpl = ["{}", "a satellite image of {}"]
    t = model.encode_text(texts, templates=tmpl)
    parts = [
        analytic_embedding("text", tokenize([x.replace("{}", s) for s in texts])) for x in tmpl
    ]
    mean = (parts[0] + parts[1]) / 2
    assert np.abs(t - mean / np.linalg.norm(mean, axis=1, keepdims=True)).max() < TOL
    assert np.abs(model.encode_text("blue water") - e[:1]).max() < 1e-6


def test_text_errors_and_long_text(model):
    with pytest.raises(InputError, match="text 1 is empty"):
        model.encode_text(["water", " "])
    with pytest.raises(InputError, match="exactly one"):
        model.encode_text(["water"], templates=["no placeholder"])
    long = "water " * 200
    assert np.abs(model.encode_text([long]) - model.encode_text(["water " * 16])).max() < 1e-6


def test_text_blue_lights_up_blue_tiles(model):
    tiles = np.full((3, 4, 16, 16), AERIAL_MEAN, dtype=np.float32)
    tiles[0, 2] = 0.8  # blue (water)
    tiles[1, 3] = 0.8  # nir (vegetation)
    tiles[2, :3] = 0.7  # bright visible (built)
    img = model.encode_tiles(Modality.AERIAL, tiles)
    q = model.encode_text(["water", "vegetation", "buildings"])
    assert (q @ img.T).argmax(axis=1).tolist() == [0, 1, 2]


def test_photos_match_analytic(model, shared_data):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    paths = [shared_data / "street_photos" / "lund" / f"0{i}.jpg" for i in (1, 2)]
    e = model.encode_photos([arr, *paths], batch_size=2)
    _unit(e, 3)
    x = np.stack([prepare_photo(p, 32) for p in [arr, *paths]])
    ref = analytic_embedding("streetview", normalize_image(x, (PHOTO_MEAN,) * 3, (PHOTO_STD,) * 3))
    assert np.abs(e - ref).max() < TOL


def test_gps_matches_analytic_and_wraps(model):
    e = model.encode_gps([55.698, 47.0, -33.9], [13.195, 190.0, 20.5])
    _unit(e, 3)
    ref = analytic_embedding("gps", np.array([[55.698, 13.195], [47.0, -170.0], [-33.9, 20.5]]))
    assert np.abs(e - ref).max() < TOL
    assert np.abs(model.encode_gps(47.0, -170.0) - e[1:2]).max() < 1e-6
    # The analytic GPS tower is a unit sphere: dot product = cos(great-circle angle).
    a, b = model.encode_gps([0.0, 0.0], [0.0, 90.0])
    assert abs(float(a @ b)) < 1e-6
    with pytest.raises(InputError, match="latitude 91.0"):
        model.encode_gps(91.0, 0.0)
    with pytest.raises(InputError, match="NaN"):
        model.encode_gps([np.nan], [0.0])


@pytest.mark.parametrize(
    "shape, dtype, pattern",
    [
        ((2, 3, 16, 16), np.float32, r"expects 4 band\(s\) \(red, green, blue, nir\).*got 3"),
        ((2, 4, 32, 32), np.float32, r"expects 16x16 px chips, got 32x32.*GSD \(10 m\)"),
        ((4, 16, 16), np.float32, r"must be \[N, 4, 16, 16\]"),
        ((2, 4, 16, 16), np.uint8, "floating point"),
    ],
)
def test_bad_chips_are_input_errors(model, shape, dtype, pattern):
    with pytest.raises(InputError, match=pattern):
        model.encode_tiles(Modality.AERIAL, np.zeros(shape, dtype=dtype))


def test_other_input_errors(model):
    with pytest.raises(InputError, match="encode_tiles takes"):
        model.encode_tiles(Modality.TEXT, np.zeros((1, 1, 16, 16), np.float32))
    with pytest.raises(InputError, match="batch_size"):
        model.encode_tiles(Modality.AERIAL, _chips(0, 2), batch_size=0)
    assert model.encode_tiles(Modality.AERIAL, np.zeros((0, 4, 16, 16), np.float32)).shape == (0, 8)


def test_lazy_sessions_report_and_close(analytic_bundle):
    m = UniGeoModel.load(analytic_bundle, threads=1)
    assert len(m._cache) == 0  # loading creates no session
    m.encode_tiles(Modality.AERIAL, _chips(0, 2))
    assert len(m._cache) == 1 and m._tokenizer is None  # the text tower was never loaded
    rep = m.provider_report()
    assert rep.active == CPU and rep.threads == 1
    with m:
        m.encode_text(["water"])
        assert len(m._cache) == 2
    assert len(m._cache) == 0 and m._tokenizer is None
    assert m.encode_gps(0.0, 0.0).shape == (1, 8)  # usable again after close


def test_provider_report_without_sessions_loads_smallest(analytic_bundle):
    m = UniGeoModel.load(analytic_bundle, providers="cpu", threads=1)
    rep = m.provider_report()
    assert rep.requested == "cpu" and rep.fallback_reason is None and len(m._cache) == 1
    m.close()


def test_partial_bundle_and_missing_modality(tmp_path):
    folder = make_analytic_bundle(tmp_path / "a", modalities=[Modality.AERIAL])
    m = UniGeoModel.load(folder)
    assert not m.has(Modality.TEXT) and m.modalities == (Modality.AERIAL,)
    with pytest.raises(InputError, match="has no text encoder"):
        m.encode_text(["water"])


def test_pinned_missing_provider_fails_at_load(analytic_bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProviderUnavailableError, match="onnxruntime-gpu"):
        UniGeoModel.load(analytic_bundle, providers="cuda")


def test_graph_that_breaks_its_spec(tmp_path):
    folder = make_analytic_bundle(tmp_path / "b", modalities=[Modality.AERIAL])
    break_bundle(folder, "wrong_input_name")
    m = UniGeoModel.load(folder)
    with pytest.raises(ModelContractError, match=r"inputs \['renamed', 'band_mask'\].*re-export"):
        m.encode_tiles(Modality.AERIAL, _chips(0, 1))


def test_onnxruntime_run_failure_becomes_engine_error():
    class Broken:
        def get_providers(self):
            return [CPU]

        def run(self, names, feeds):
            raise RuntimeError("kernel exploded")

    with pytest.raises(EngineError, match="running the dsm encoder: kernel exploded"):
        UniGeoModel._run(Broken(), Modality.DSM, {})
