"""Band naming and resolution: which bands of a raster feed which of the model's bands.

Shared by every raster reader (the rasterio one in :mod:`.raster_io` and the plugin's QGIS-layer
reader), so a raster's bands are matched the same way whichever reader opens it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import RasterInputError

_ALIASES = {
    "red": ("red", "r"),
    "green": ("green", "g"),
    "blue": ("blue", "b"),
    "nir": ("nir", "near-infrared", "near infrared", "nearinfrared", "infrared", "nir1"),
    "alpha": ("alpha", "a"),
}
_CANON = {alias: key for key, aliases in _ALIASES.items() for alias in aliases}


def canonical_band(name: str) -> str:
    """Lower-case band name with common aliases folded (``"NIR"``, ``"near-infrared"`` → nir)."""
    n = name.strip().lower()
    return _CANON.get(n, n)


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
    """
    n = len(wanted)
    if explicit is not None:
        if len(explicit) != n:
            raise RasterInputError(
                f"{where}: bands={list(explicit)} selects {len(explicit)} band(s) but the model "
                f"needs {n} ({', '.join(wanted)})"
            )
        return [int(b) for b in explicit]
    data = [i + 1 for i in range(len(names)) if i + 1 not in alpha]
    by_name = {canonical_band(names[i - 1]): i for i in data}
    want = [canonical_band(w) for w in wanted]
    if all(w in by_name for w in want):
        return [by_name[w] for w in want]
    if len(data) == n:
        return data
    have = ", ".join(f"{i}: {names[i - 1]}" for i in data)
    extra = f" plus alpha band(s) {list(alpha)}" if alpha else ""
    raise RasterInputError(
        f"{where}: the model needs {n} band(s) ({', '.join(wanted)}) but the raster has "
        f"{len(data)} data band(s) ({have}){extra}. Pick {n} band(s) in the model's order with "
        f"bands=[...] (1-based band numbers, e.g. bands={list(range(1, n + 1))})"
    )


def alpha_bands(src: Any) -> tuple[int, ...]:
    """1-based numbers of the bands of an open rasterio dataset ``src`` that are masks."""
    from rasterio.enums import ColorInterp

    # an alpha colour interpretation on a band described as e.g. "nir" is a writer's
    # default (GDAL tags the 4th band of any RGB-like uint8 file alpha), not a mask
    return tuple(
        i + 1
        for i, (c, d) in enumerate(zip(src.colorinterp, src.descriptions, strict=True))
        if c == ColorInterp.alpha and canonical_band(d or "alpha") == "alpha"
    )


def band_names(src: Any) -> tuple[str, ...]:
    """One name per band of an open rasterio dataset: description, else colour, else ``bandN``."""
    return tuple(
        _band_name(i, d, c)
        for i, (d, c) in enumerate(zip(src.descriptions, src.colorinterp, strict=False))
    )


def _band_name(i: int, description: str | None, colorinterp: Any) -> str:
    if description:
        return description
    if colorinterp.name in ("red", "green", "blue", "alpha"):
        return colorinterp.name
    return f"band{i + 1}"
