"""Preprocessing shared by training and serving: image/DSM normalisation, text, photos, GPS.

Only numpy, Pillow and ``tokenizers`` are used, so ``training/`` imports these same functions
and train-time and serve-time inputs are computed identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelContractError

_GPS_IFD = 0x8825  # EXIF pointer to the GPS sub-directory
_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")


def normalize_image(x01: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalise image chips per band: ``(x - mean) / std``; NaN (nodata) pixels become 0.

    Args:
        x01: float array ``[N, C, H, W]`` or ``[C, H, W]`` scaled to [0, 1]; NaN marks nodata.
        mean: one mean per band (in [0, 1] units).
        std: one positive standard deviation per band.

    Returns:
        float32 array with the shape of ``x01``.

    Raises:
        InputError: wrong number of dimensions, or a band count that does not match mean/std.
    """
    x = np.asarray(x01, dtype=np.float32)
    if x.ndim not in (3, 4):
        raise InputError(f"image chips must be [N, C, H, W] or [C, H, W], got shape {x.shape}")
    c = x.shape[-3]
    if len(mean) != c or len(std) != c:
        raise InputError(
            f"image has {c} bands but the model expects {len(mean)}: select the bands "
            "the model was trained on"
        )
    shape = (c, 1, 1)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    out = np.subtract(x, m)
    out /= s
    # Nodata must not leak into the embedding as NaN; 0 is the band mean after normalisation.
    # One isfinite pass instead of nan_to_num's five (it showed in the embedding profile).
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = 0.0
    return out


def band_presence(x01: np.ndarray, band_mask: Any = None) -> np.ndarray:
    """Which bands each chip really has: float32 ``[N, C]``, 1 = present, 0 = absent.

    A reader that knows a band is missing (a raster without SWIR fed to a model that has SWIR
    bands) returns that band as an all-NaN plane; this turns such planes into the mask the
    aerial encoder takes (format version 2), so an absent band is masked inside the model
    instead of being read as a band of zeros. A chip with no data in any band keeps every
    band (it is nodata, not a different sensor).

    Args:
        x01: chips ``[N, C, H, W]`` (NaN = nodata).
        band_mask: optional explicit presence, ``[C]`` or ``[N, C]`` of 0/1 (or bools); it
            wins over what the NaN planes say.

    Raises:
        InputError: ``band_mask`` has the wrong shape or values other than 0 and 1.
    """
    n, c = x01.shape[0], x01.shape[1]
    if band_mask is not None:
        bm = np.asarray(band_mask, dtype=np.float32)
        if bm.shape not in ((c,), (n, c)) or not np.isin(bm, (0.0, 1.0)).all():
            raise InputError(
                f"band_mask must be {c} (or {n} x {c}) values of 0/1, one per model band, "
                f"got shape {bm.shape}"
            )
        return np.ascontiguousarray(np.broadcast_to(bm, (n, c)), dtype=np.float32)
    has = np.isfinite(x01).any(axis=(2, 3))  # [N, C]
    has |= ~has.any(axis=1, keepdims=True)
    return has.astype(np.float32)


def normalize_dsm(heights: np.ndarray, center: str, scale_m: float) -> np.ndarray:
    """Make surface heights relative to each chip: ``(h - centre(chip)) / scale_m``.

    Args:
        heights: float array ``[N, 1, H, W]`` in metres; NaN (or inf) marks nodata.
        center: ``"median"`` or ``"min"``: the chip statistic (ignoring nodata) to subtract.
        scale_m: metres per unit after normalisation (> 0).

    Returns:
        float32 ``[N, 1, H, W]`` with nodata set to 0.

    Raises:
        InputError: bad shape, unknown centre, or a chip that is entirely nodata.
    """
    h = np.array(heights, dtype=np.float32, copy=True)
    if h.ndim != 4 or h.shape[1] != 1:
        raise InputError(f"DSM chips must be [N, 1, H, W] heights in metres, got {h.shape}")
    if center not in ("median", "min"):
        raise InputError(f"unknown DSM centring '{center}' (use 'median' or 'min')")
    if not scale_m > 0:
        raise InputError(f"DSM scale must be positive, got {scale_m}")
    h[~np.isfinite(h)] = np.nan
    flat = h.reshape(h.shape[0], -1)
    empty = np.flatnonzero(np.isnan(flat).all(axis=1))
    if empty.size:
        raise InputError(
            f"DSM chip {int(empty[0])} holds only nodata ({empty.size} such chips): "
            "skip nodata tiles before encoding"
        )
    ref = np.nanmedian(flat, axis=1) if center == "median" else np.nanmin(flat, axis=1)
    out = (h - ref.astype(np.float32).reshape(-1, 1, 1, 1)) / np.float32(scale_m)
    np.nan_to_num(out, copy=False, nan=0.0)
    return out


class TextTokenizer:
    """A ``tokenizers`` tokenizer that pads and truncates every text to ``max_length`` tokens."""

    def __init__(self, path: str | Path, max_length: int, lowercase: bool = False) -> None:
        """Load ``tokenizer.json``.

        Args:
            path: the tokenizer file (Hugging Face ``tokenizers`` JSON format).
            max_length: tokens per text, special tokens included.
            lowercase: lowercase texts before tokenising (when the model was trained so).

        Raises:
            ModelContractError: the file is missing or is not a tokenizer.
        """
        from tokenizers import Tokenizer

        self.path = Path(path)
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)
        try:
            tok = Tokenizer.from_file(str(self.path))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise ModelContractError(
                f"cannot read tokenizer {self.path}: {e}; re-export or reinstall the model bundle"
            ) from None
        tok.enable_truncation(max_length=self.max_length)
        pad_id, pad_token = _pad_of(tok)
        tok.enable_padding(length=self.max_length, pad_id=pad_id, pad_token=pad_token)
        self._tok = tok

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise texts.

        Args:
            texts: non-empty strings; long texts are truncated to ``max_length`` tokens.

        Returns:
            ``(input_ids, attention_mask)``, both int64 ``[N, max_length]``.

        Raises:
            InputError: a text is not a string or is empty / whitespace only.
        """
        if isinstance(texts, str):
            texts = [texts]
        clean = []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InputError(f"text {i} is empty: type a description of the place")
            check_unicode(t)
            clean.append(t.lower() if self.lowercase else t)
        if not clean:
            empty = np.zeros((0, self.max_length), dtype=np.int64)
            return empty, empty.copy()
        enc = self._tok.encode_batch(clean)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask

    def known_fraction(self, text: str) -> tuple[int, int]:
        """``(words, unknown)``: the text's tokens (no special ones) and how many are unknown.

        A zero-width space or control characters give ``(0, 0)``; emoji and scripts the
        vocabulary lacks come out as the unknown token.
        """
        unk = self._unknown_id()
        check_unicode(text)
        enc = self._tok.encode(text.lower() if self.lowercase else text, add_special_tokens=False)
        ids = [i for i, m in zip(enc.ids, enc.attention_mask, strict=False) if m]
        return len(ids), sum(1 for i in ids if unk is not None and i == unk)

    def _unknown_id(self) -> int | None:
        name = getattr(self._tok.model, "unk_token", None)
        return self._tok.token_to_id(name) if name else None


def check_unicode(text: str) -> None:
    """Refuse text holding lone surrogates: bytes that were not valid UTF-8 where it came from (a
    terminal in another encoding, a Latin-1 file), which the tokenizer cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise InputError(
            f"the text '{shown[:60]}' holds characters that are not valid Unicode (position "
            f"{e.start}; bytes in another encoding than UTF-8?): retype it, or save the file "
            "it came from as UTF-8"
        ) from None


def check_text_meaning(tok: TextTokenizer, text: str) -> str | None:
    """Refuse a text the model cannot read at all; a warning when it knows few of its words.

    Raises:
        InputError: the text tokenises to nothing, or to unknown tokens only (every such text
            would get the same embedding, whatever it says).
    """
    n, unknown = tok.known_fraction(text)
    visible = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text.strip())
    shown = visible[:40] + ("…" if len(visible) > 40 else "")
    if n == 0:
        raise InputError(
            f"the text '{shown}' holds no word (only spaces, control or zero-width characters): "
            "type a description of the place"
        )
    if unknown == n:
        raise InputError(
            f"the model knows none of the words in '{shown}' (emoji, another script or one very "
            "long word?): describe the place in English words"
        )
    if unknown * 2 > n:
        return (
            f"the model knows only {n - unknown} of the {n} tokens of '{shown}'; "
            "results will be unreliable: describe the place in English words"
        )
    return None


def _pad_of(tok: Any) -> tuple[int, str]:
    """The tokenizer's own padding token if configured, else a conventional one, else id 0."""
    if tok.padding is not None:
        return int(tok.padding["pad_id"]), str(tok.padding["pad_token"])
    for cand in _PAD_CANDIDATES:
        idx = tok.token_to_id(cand)
        if idx is not None:
            return int(idx), cand
    return 0, tok.id_to_token(0) or "[PAD]"


def validate_latlon(lat: Any, lon: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check WGS84 coordinates and wrap longitudes into [-180, 180).

    Args:
        lat: latitude(s) in degrees, scalar or array.
        lon: longitude(s) in degrees, same length as ``lat``.

    Returns:
        ``(lat, lon)`` as float32 arrays ``[N]``.

    Raises:
        InputError: non-numeric, NaN/inf, mismatched lengths, or |lat| > 90.
    """
    try:
        la = np.atleast_1d(np.asarray(lat, dtype=np.float64)).ravel()
        lo = np.atleast_1d(np.asarray(lon, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise InputError("coordinates must be numbers (decimal degrees)") from None
    if la.shape != lo.shape:
        raise InputError(f"got {la.size} latitudes but {lo.size} longitudes")
    bad = ~(np.isfinite(la) & np.isfinite(lo))
    if bad.any():
        raise InputError(f"coordinate {int(np.flatnonzero(bad)[0])} is NaN or infinite")
    out = np.abs(la) > 90
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise InputError(
            f"latitude {la[i]} is outside [-90, 90]: are latitude and longitude swapped, "
            "or are the coordinates not in WGS84 degrees?"
        )
    lo = (lo + 180.0) % 360.0 - 180.0
    return la.astype(np.float32), lo.astype(np.float32)


def prepare_photo(img: np.ndarray | str | Path, size: int) -> np.ndarray:
    """Turn a street-level photo into a ``[3, size, size]`` float32 array in [0, 1].

    The EXIF orientation is applied, the shorter side is resized to ``size`` (bicubic) and the
    centre is cropped.

    Args:
        img: an ``H x W x 3`` uint8 RGB array, or the path of an image file.
        size: output side in pixels.

    Raises:
        InputError: the file is missing, not an image, truncated, or the array is not RGB uint8.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(img, (str, Path)):
        try:
            with Image.open(img) as f:
                f.load()
                im = _to_rgb8(ImageOps.exif_transpose(f), img)
        except FileNotFoundError:
            raise InputError(f"photo not found: {img}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(f"cannot read photo {img}: {e} (is it a complete image?)") from None
        except Image.DecompressionBombError as e:
            raise InputError(f"photo {img} is too large to decode safely: {e}") from None
    else:
        a = np.asarray(img)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise InputError(f"photo arrays must be H x W x 3 uint8 RGB, got {a.dtype} {a.shape}")
        im = Image.fromarray(a, mode="RGB")
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def _to_rgb8(im: Any, name: Any) -> Any:
    """An 8-bit RGB copy of a PIL image of any mode, its value range rescaled, not clipped.

    ``convert("RGB")`` clips 16-bit and 32-bit values to 255 (a 16-bit photo became solid
    white) and floats to 0 (solid black). Single-channel 16-bit, 32-bit integer and float
    images are rescaled instead: floats in [0, 1] times 255; values up to 255 kept as 8-bit;
    values up to 65535 divided by 257 (the exact inverse of 8 -> 16-bit expansion). Negative,
    larger or non-finite values are refused.
    """
    from PIL import Image

    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im.convert("RGB")
    a = np.asarray(im, dtype=np.float64)
    if a.size == 0 or not np.isfinite(a).all():
        raise InputError(f"photo {name} holds no values or non-finite ones (NaN/Inf)")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 65535.0:
        raise InputError(
            f"photo {name} has values {lo:g}..{hi:g} ({im.mode}); UniGeo reads 8-bit or 16-bit "
            "photos, or floats in 0..1: export it as an 8-bit JPEG or PNG"
        )
    if im.mode == "F" and hi <= 1.0:
        a = a * 255.0
    elif hi > 255.0 or im.mode.startswith("I;16"):
        a = a / 257.0
    gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), mode="RGB")


def read_exif_latlon(path: str | Path) -> tuple[float, float] | None:
    """Return the photo's EXIF GPS position as ``(lat, lon)`` in degrees, or None if absent.

    Raises:
        InputError: the file cannot be opened as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            gps = im.getexif().get_ifd(_GPS_IFD)
    except FileNotFoundError:
        raise InputError(f"photo not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"cannot read photo {path}: {e}") from None
    try:
        lat = _dms(gps[2]) * (-1.0 if str(gps.get(1, "N")).upper().startswith("S") else 1.0)
        lon = _dms(gps[4]) * (-1.0 if str(gps.get(3, "E")).upper().startswith("W") else 1.0)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        return None
    return lat, lon


def _dms(v: Any) -> float:
    """Degrees/minutes/seconds rationals (or one decimal value) to decimal degrees."""
    parts = [float(x) for x in v] if isinstance(v, (tuple, list)) else [float(v)]
    return sum(p / 60.0**i for i, p in enumerate(parts[:3]))
