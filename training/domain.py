"""What a bundle says about its training data: the domain (area boxes, GSD range) and labels.

The engine warns when a store lies outside the bundle's
:class:`~engine.model.bundle_spec.TrainingDomain` (``engine/domain.py``), so the domain must describe
the *training* imagery, not the held-out set and not one union box around everything:

- one padded WGS84 box per training area whose samples carry imagery (aerial or DSM) at a
  finite GSD finer than :data:`COARSE_GSD_M`. Coarse worldwide chips (Blue Marble, ~7.4 km)
  only teach the GPS tower the globe, and street-photo-only areas have no raster at all, so
  neither counts as imagery domain;
- the GSD range (min, max) of those training chips.

:func:`training_domain` is what ``python -m training.export`` and ``scripts/ship_bundle.py``
use. For a dataset folder it always reads the ``train`` split of the whole manifest, whichever
split the dataset object passed in holds; the toy world gets one padded box around its samples.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from engine.model.bundle_spec import PROVENANCES, TrainingDomain

log = logging.getLogger(__name__)

COARSE_GSD_M = 1000.0  # areas coarser than this are global context, not the imagery domain
PAD_DEG = 0.05  # ~5 km: a store just beside a training chip is still "seen" ground
_COLUMNS = ["sample_id", "area_id", "lat", "lon", "split", "gsd_m", "aerial", "dsm"]


def _lon_span(lon: np.ndarray) -> tuple[float, float]:
    """(west, east) of longitudes; west > east when the tighter span crosses the antimeridian."""
    w, e = float(lon.min()), float(lon.max())
    wrapped = np.where(lon < 0, lon + 360.0, lon)
    w2, e2 = float(wrapped.min()), float(wrapped.max())
    if e2 - w2 < e - w:  # e.g. Fiji at 179.9 and -179.9: 0.2 deg wide, not 359.8
        return (w2 - 360.0 if w2 > 180.0 else w2), (e2 - 360.0 if e2 > 180.0 else e2)
    return w, e


def padded_box(
    lon: np.ndarray, lat: np.ndarray, pad: float = PAD_DEG
) -> tuple[float, float, float, float]:
    """The (west, south, east, north) WGS84 box around points, padded by ``pad`` degrees."""
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    w, e = _lon_span(lon)
    s, n = max(float(lat.min()) - pad, -90.0), min(float(lat.max()) + pad, 90.0)
    if w <= e:
        return max(w - pad, -180.0), s, min(e + pad, 180.0), n
    # Crossing the antimeridian: pad outwards, wrapping back into [-180, 180].
    return (w - pad if w - pad >= -180 else w - pad + 360.0), s, (
        e + pad if e + pad <= 180 else e + pad - 360.0
    ), n  # fmt: skip


def domain_from_samples(
    area: np.ndarray, lat: np.ndarray, lon: np.ndarray, gsd: np.ndarray, imagery: np.ndarray
) -> TrainingDomain:
    """Per-area boxes and the GSD range of the samples that carry fine imagery.

    Args:
        area: area id per sample.
        lat, lon: WGS84 degrees per sample.
        gsd: aerial/DSM ground sample distance in metres per sample (0: no raster).
        imagery: True where the sample has an aerial or DSM chip.

    Returns:
        The domain; without any fine-imagery sample, an empty one (no boxes, any GSD), which the
        engine reads as "says nothing" rather than flagging everything.
    """
    area = np.asarray(area, dtype=object)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    gsd = np.asarray(gsd, np.float64)
    ok = np.asarray(imagery, bool) & np.isfinite(gsd) & (gsd > 0) & (gsd < COARSE_GSD_M)
    ok &= np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        log.warning("no training sample has aerial/DSM imagery finer than %g m", COARSE_GSD_M)
        return TrainingDomain()
    boxes = tuple(
        padded_box(lon[ok & (area == a)], lat[ok & (area == a)])
        for a in sorted({str(x) for x in area[ok]})
    )
    return TrainingDomain(bboxes=boxes, gsd_range_m=(float(gsd[ok].min()), float(gsd[ok].max())))


def dataset_domain(
    root: str | Path, split: str = "train", exclude_areas: tuple[str, ...] = ()
) -> TrainingDomain:
    """The domain of the ``split`` samples of a dataset folder built by ``training.data``.

    ``exclude_areas``: areas held out of training (``data.holdout_areas``) are not domain.
    """
    import pyarrow.parquet as pq

    from .data.format import MANIFEST

    # Only these columns are read (any dataset format version); split names are not checked.
    t = pq.read_table(Path(root) / MANIFEST, columns=_COLUMNS)
    area = np.asarray(t.column("area_id").to_pylist(), dtype=object)
    sel = np.asarray(t.column("split").to_pylist(), dtype=object) == split
    sel &= ~np.isin(area, list(exclude_areas))
    has = [
        np.array([bool(v) for v in t.column(c).to_pylist()], dtype=bool) for c in ("aerial", "dsm")
    ]
    return domain_from_samples(
        area[sel],
        t.column("lat").to_numpy()[sel],
        t.column("lon").to_numpy()[sel],
        t.column("gsd_m").to_numpy(zero_copy_only=False)[sel],
        (has[0] | has[1])[sel],
    )


def training_domain(dataset: Any, gsd_m: float | None = None) -> TrainingDomain:
    """The training domain for ``bundle.json`` from a dataset object.

    Args:
        dataset: a ``training.data.ChipDataset`` (of any split: its folder's ``train`` split is
            read), the toy world or anything with ``coords()`` (one padded box around its
            samples), or None (no geographic claim).
        gsd_m: the GSD of datasets that do not record one per sample (the toy world renders
            at the config's aerial GSD); None or 0 leaves the GSD range open.
    """
    from .data.format import MANIFEST

    open_gsd = (gsd_m, gsd_m) if gsd_m and math.isfinite(gsd_m) else (0.0, math.inf)
    root = getattr(dataset, "root", None)
    if root is not None and (Path(root) / MANIFEST).is_file():
        return dataset_domain(root)
    if hasattr(dataset, "coords"):
        lat, lon = dataset.coords()
        if len(lat):
            return TrainingDomain(bboxes=(padded_box(lon, lat),), gsd_range_m=open_gsd)
    return TrainingDomain(gsd_range_m=open_gsd)


def class_prompts(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Zero-shot prompts per class: the nouns the training captions use for it
    (``training.data.landuse.CLASS_PHRASES``) as an aerial view; final (not templated again)."""
    from .data.landuse import CLASS_PHRASES

    return {c: tuple(f"an aerial view of {p}" for p in CLASS_PHRASES.get(c, (c,))) for c in names}


def dataset_labels(dataset: Any) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Class prompts and per-modality provenance from a toy world or a training.data folder."""
    if hasattr(dataset, "class_prompts"):
        return dataset.class_prompts(), dataset.provenance()
    info = getattr(dataset, "info", None)
    if info is None:
        return {}, {}
    prompts = class_prompts(info.class_names)
    # A modality is labelled by its commonest provenance among the dataset's samples.
    prov = {}
    for m, counts in info.provenance.items():
        known = {k: v for k, v in counts.items() if k in PROVENANCES}
        if known:
            prov[m] = max(known, key=known.get)
    return prompts, prov
