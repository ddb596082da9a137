"""Band naming and resolution: which bands of a raster feed which of the model's bands.

Shared by every raster reader (the GDAL one in :mod:`.gdal_reader` and the plugin's QGIS-layer
reader), so a raster's bands are matched the same way whichever reader opens it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import RasterInputError
from ..geo.gdal_errors import osgeo

_ALIASES = {
    "red": ("red", "r"),
    "green": ("green", "g"),
    "blue": ("blue", "b"),
    "nir": ("nir", "near-infrared", "near infrared", "nearinfrared", "infrared", "nir1"),
    "swir1": ("swir1", "swir-1", "swir 1", "swir_1", "swir16", "shortwave infrared 1"),
    "swir2": ("swir2", "swir-2", "swir 2", "swir_2", "swir22", "shortwave infrared 2"),
    "alpha": ("alpha", "a"),
}
_CANON = {alias: key for key, aliases in _ALIASES.items() for alias in aliases}


def canonical_band(name: str) -> str:
    """Lower-case band name with common aliases folded (``"NIR"``, ``"near-infrared"`` → nir)."""
    n = name.strip().lower()
    return _CANON.get(n, n)


def explicit_selection(
    bands: Sequence[int] | None, count: int, names: Sequence[str], where: str
) -> tuple[int, ...] | None:
    """A user's explicit band numbers in the model's order, checked: each one of the raster's
    bands ``1..count``, or 0 for a model band the raster lacks (masked by a ``band_mask``
    encoder, see :func:`engine.raster.band_layout`).

    Raises:
        RasterInputError: empty, all 0, or a number the raster does not have.
    """
    if bands is None:
        return None
    out = tuple(int(b) for b in bands)
    if not out or any(not (b == 0 or 1 <= b <= count) for b in out) or not any(out):
        raise RasterInputError(
            f"{where}: bands={list(bands)} is invalid; the raster has bands 1..{count} "
            f"({', '.join(names)}); 0 marks a model band the raster does not have"
        )
    return out


def present_bands(explicit: Sequence[int] | None) -> tuple[int, ...] | None:
    """The bands an explicit selection reads: its non-zero numbers, in order."""
    return None if explicit is None else tuple(b for b in explicit if b)


def resolve_bands(
    wanted: Sequence[str],
    names: Sequence[str],
    alpha: Sequence[int] = (),
    explicit: Sequence[int] | None = None,
    where: str = "raster",
) -> list[int]:
    """1-based band numbers that feed the model's ``wanted`` bands, in the model's order.

    Explicit numbers win; otherwise bands are matched by name (description or colour
    interpretation); otherwise the non-alpha bands are taken in file order when their count fits.

    Raises:
        RasterInputError: The bands do not fit; the message names the data bands, suggests a
            selection (of data bands; an alpha band only as a question) and how to give it in
            Processing (BANDS), on the command line (``--bands``) and in Python (``bands=``);
            a one-band raster is pointed to the DSM encoder.
    """
    n = len(wanted)
    if explicit is not None:
        if len(explicit) != n:
            raise RasterInputError(
                f"{where}: the band selection {list(explicit)} selects {len(explicit)} band(s) "
                f"but the model needs {n} ({', '.join(wanted)})"
            )
        return [int(b) for b in explicit]
    data = [i + 1 for i in range(len(names)) if i + 1 not in alpha]
    by_name = {canonical_band(names[i - 1]): i for i in data}
    want = [canonical_band(w) for w in wanted]
    if all(w in by_name for w in want):
        return [by_name[w] for w in want]
    if len(data) == n:
        return data
    raise RasterInputError(band_mismatch_message(wanted, names, data, alpha, where))


def band_mismatch_message(
    wanted: Sequence[str],
    names: Sequence[str],
    data: Sequence[int],
    alpha: Sequence[int],
    where: str,
) -> str:
    """Why the raster's bands do not fit the model, and what to pick instead."""
    n = len(wanted)
    have = ", ".join(f"{i}: {names[i - 1]}" for i in data) or "none"
    extra = f" plus alpha (mask) band(s) {list(alpha)}, never used automatically" if alpha else ""
    head = (
        f"{where}: the model needs {n} band(s) ({', '.join(wanted)}) but the raster has "
        f"{len(data)} data band(s) ({have}){extra}."
    )
    if len(data) == 1 and n > 1:
        return (
            f"{head} A one-band raster is usually a surface model (DSM, heights): embed it with "
            "the DSM encoder (Processing 'Embed raster': MODALITY=dsm; command line: --modality "
            "dsm), if the model has one."
        )
    if len(data) < n:
        return head + _too_few_bands(n, data, alpha)
    return f"{head} Pick {n} band(s) in the model's order by their 1-based numbers, " + _how(
        data[:n]
    )


def _too_few_bands(n: int, data: Sequence[int], alpha: Sequence[int]) -> str:
    """The advice when the raster has fewer data bands than the model needs."""
    if len(data) + len(alpha) >= n:
        pick = sorted([*data, *alpha[: n - len(data)]])
        return (
            " If a band marked alpha really holds data (e.g. near-infrared), select the bands "
            "in the model's order, " + _how(pick) + " Otherwise this raster lacks a band the "
            f"model needs; use one with all {n}."
        )
    return f" Use a raster with the model's {n} bands; this one cannot provide them."


def _how(bands: Sequence[int]) -> str:
    """``e.g. 1,2,3 (Processing: BANDS; command line: --bands 1,2,3; Python: bands=[1, 2, 3])``."""
    csv = ",".join(str(b) for b in bands)
    return (
        f"e.g. {csv} (Processing: BANDS; command line: --bands {csv}; "
        f"Python: bands={[int(b) for b in bands]})."
    )


def _bands(ds: Any) -> list[Any]:
    return [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]


def alpha_bands(ds: Any) -> tuple[int, ...]:
    """1-based numbers of the bands of an open ``gdal.Dataset`` ``ds`` that are masks."""
    gdal = osgeo()[0]
    # an alpha colour interpretation on a band described as e.g. "nir" is a writer's
    # default (GDAL tags the 4th band of any RGB-like uint8 file alpha), not a mask
    return tuple(
        i + 1
        for i, b in enumerate(_bands(ds))
        if b.GetColorInterpretation() == gdal.GCI_AlphaBand
        and canonical_band(b.GetDescription() or "alpha") == "alpha"
    )


def band_names(ds: Any) -> tuple[str, ...]:
    """One name per band of an open ``gdal.Dataset``: description, else colour, else ``bandN``."""
    gdal = osgeo()[0]
    colours = {
        gdal.GCI_RedBand: "red",
        gdal.GCI_GreenBand: "green",
        gdal.GCI_BlueBand: "blue",
        gdal.GCI_AlphaBand: "alpha",
    }
    return tuple(
        b.GetDescription() or colours.get(b.GetColorInterpretation(), f"band{i + 1}")
        for i, b in enumerate(_bands(ds))
    )
