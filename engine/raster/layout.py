"""Which of the model's bands a raster really has, and chips with the missing ones as NaN planes.

An aerial encoder of contract version 2 takes a ``band_mask`` beside its pixels: it can do
without the bands a sensor lacks (NAIP and orthophotos have no SWIR; a plain RGB photo no NIR).
:func:`band_layout` finds the bands a reader can supply (by name, or by the user's explicit
numbers in the model's order), and :meth:`BandLayout.scatter` puts what was read back into the
model's band order with absent bands as all-NaN planes, which the model turns into its mask
(:func:`engine.model.preprocess.band_presence`). Red, green and blue are never optional.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RasterInputError
from .bands import canonical_band

ALWAYS_NEEDED = ("red", "green", "blue")


def optional_bands(inputs: Iterable[str], bands: Sequence[str]) -> tuple[str, ...]:
    """The bands an encoder can do without: with a ``band_mask`` input, all but R, G and B."""
    if "band_mask" not in set(inputs):
        return ()
    return tuple(b for b in bands if canonical_band(b) not in ALWAYS_NEEDED)


@dataclass(frozen=True)
class BandLayout:
    """The model's bands and the subset read from the raster (in the model's order)."""

    wanted: tuple[str, ...]  # the encoder's bands
    read: tuple[str, ...]  # the ones the raster supplies

    @property
    def complete(self) -> bool:
        return self.read == self.wanted

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(b for b in self.wanted if b not in self.read)

    def scatter(self, chips: np.ndarray) -> np.ndarray:
        """Chips ``[N, len(read), H, W]`` as ``[N, len(wanted), H, W]``, absent bands NaN."""
        if self.complete:
            return chips
        n, _, h, w = chips.shape
        out = np.full((n, len(self.wanted), h, w), np.nan, dtype=chips.dtype)
        out[:, [self.wanted.index(b) for b in self.read]] = chips
        return out


def band_layout(reader: Any, wanted: Sequence[str], optional: Sequence[str] = ()) -> BandLayout:
    """The :class:`BandLayout` of ``reader`` for an encoder with ``wanted`` bands.

    An explicit selection with 0 for the bands the raster lacks reads the others; else every
    wanted band when the reader has them all; else the required bands plus the optional ones it
    has by name, else plus the first optional ones in the model's order (an explicit selection
    of fewer bands than the model takes).

    Raises:
        RasterInputError: the raster lacks a required band (the reader's own message).
    """
    wanted = tuple(wanted)
    if not hasattr(reader, "check_bands"):  # a reader that cannot tell: it is asked for all
        return BandLayout(wanted, wanted)
    explicit = getattr(reader, "explicit_bands", None)
    if explicit is not None and 0 in explicit:  # the user marked the bands the raster lacks
        return _marked_absent(reader, wanted, tuple(explicit), set(optional))
    opt = [b for b in wanted if b in set(optional)]
    named = {canonical_band(n) for n in getattr(reader, "band_names", ()) if n}
    candidates = [list(wanted), [b for b in wanted if b not in opt or canonical_band(b) in named]]
    candidates += [[b for b in wanted if b not in opt or b in opt[:k]] for k in range(len(opt))]
    for cand in candidates if opt else candidates[:1]:
        try:
            reader.check_bands(cand)
        except RasterInputError:
            continue
        return BandLayout(wanted, tuple(cand))
    reader.check_bands(wanted)  # raises the reader's own message for the full band list
    return BandLayout(wanted, wanted)


def _marked_absent(
    reader: Any, wanted: tuple[str, ...], explicit: tuple[int, ...], optional: set[str]
) -> BandLayout:
    """The layout of an explicit selection that marks absent bands with 0."""
    if len(explicit) != len(wanted):
        raise RasterInputError(
            f"the band selection {list(explicit)} has {len(explicit)} entries but the model "
            f"has {len(wanted)} bands ({', '.join(wanted)}): give one number per model band, "
            "0 for a band the raster does not have"
        )
    needed = [w for w, b in zip(wanted, explicit, strict=True) if b == 0 and w not in optional]
    if needed:
        can = f" (it can do without {', '.join(sorted(optional, key=wanted.index))})"
        raise RasterInputError(
            f"the band selection {list(explicit)} marks {', '.join(needed)} absent (0), but "
            "the model needs " + ("it" if len(needed) == 1 else "them")
            + (can if optional else "; this encoder masks no band")
        )  # fmt: skip
    read = tuple(w for w, b in zip(wanted, explicit, strict=True) if b != 0)
    reader.check_bands(read)
    return BandLayout(wanted, read)
