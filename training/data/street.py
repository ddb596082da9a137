"""Street-level samples from real geotagged photos (position from EXIF GPS)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.model.preprocess import prepare_photo, read_exif_latlon

from .text import TextContext, describe
from .writer import SampleRecord

log = logging.getLogger(__name__)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def build_street_photos(
    folder: str | Path,
    area_id: str,
    *,
    size: int = 224,
    describe_place: Callable[[float, float], dict] | None = None,
    split_of: Callable[[float, float, float, int], str | None] = lambda *a: "train",
) -> Iterator[SampleRecord]:
    """Yield one sample (street view + GPS + text) per photo with an EXIF position.

    The photo is prepared exactly as the engine prepares a query photo
    (:func:`engine.model.preprocess.prepare_photo`: EXIF orientation, short side resize, centre
    crop), so training and serving see the same pixels. Photos without a GPS tag are skipped
    with a warning.

    Raises:
        InputError: the folder does not exist or holds no photos.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"street photo folder {folder} does not exist")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise InputError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {folder}")
    for p in photos:
        pos = read_exif_latlon(p)
        if pos is None:
            log.warning("skipping %s: no EXIF GPS position", p.name)
            continue
        lat, lon = pos
        img = prepare_photo(p, size)
        ctx = TextContext(kind="street", **(describe_place(lat, lon) if describe_place else {}))
        yield SampleRecord(
            sample_id=f"{area_id}-{p.stem}",
            lat=lat,
            lon=lon,
            area_id=area_id,
            split=split_of(lat, lon, 0.0, 0),
            streetview=[(img * 255 + 0.5).astype(np.uint8)],
            text=describe(ctx),
            provenance={"streetview": "real", "gps": "real", "text": "derived"},
        )
