"""Which raster bands feed the model's bands: from band names, colour interpretation or a sensor layout.

Pure Python. The caller reads each band's description and colour interpretation (rasterio, GDAL
or a QGIS data provider) and :func:`choose_bands` returns one 1-based band number per band the
model wants, with a reason a user can read, or a clear "cannot tell" that asks the user to pick
(listing the layouts that would fit). The evidence is weighed in this order:

1. spectral words in the band descriptions ("Red", "Band 4 - NIR", "swir1", ...) and the colour
   interpretation (red/green/blue/alpha);
2. sensor band codes ("B1".."B7", "SR_B5", "B04", "B8A", "B6_VCID_2") read through the known
   layouts of Landsat 4/5 TM, Landsat 7 ETM+, Landsat 8/9 OLI/TIRS and Sentinel-2 MSI; the sensor
   comes from the codes themselves or from hints such as the file name (``LC08_…``, ``S2A_…``);
3. the band count of unnamed rasters: 3 = RGB, 4 = NAIP's red, green, blue, NIR, 6 = Landsat
   surface reflectance, 10/12/13 = Sentinel-2 stacks, 11 = Landsat 8/9 OLI/TIRS.

Bands the model marks optional (a sensor may lack them, e.g. SWIR on NAIP) are reported as
absent (:data:`ABSENT`) instead of making the choice fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..errors import RasterInputError
from .spectral import (
    BY_COUNT,
    SENSORS,
    STACKS,
    Band,
    band_span,
    distinct_sensors,
    read_bands,
    sensor_of,
    wanted_name,
)

ABSENT = 0  # in a mapping: the model's optional band is not in the raster


@dataclass(frozen=True)
class BandChoice:
    """The raster bands that feed the model's ``wanted`` bands, and why.

    ``mapping`` holds one 1-based band number per wanted band, :data:`ABSENT` for an optional
    band the raster lacks; it is empty when UniGeo cannot tell, and ``reason`` then says what to
    pick and ``candidates`` holds the layouts that would fit.
    """

    wanted: tuple[str, ...]
    mapping: tuple[int, ...] = ()
    reason: str = ""
    source: str = "unknown"  # "names", "sensor", "layout", "user" or "unknown"
    candidates: tuple[BandChoice, ...] = ()

    @property
    def decided(self) -> bool:
        """True when every wanted band has a raster band (or is an absent optional one)."""
        return bool(self.mapping)

    @property
    def bands(self) -> tuple[int, ...]:
        """The present bands' numbers in the model's order (what a reader's ``bands=`` takes)."""
        return tuple(b for b in self.mapping if b != ABSENT)

    @property
    def absent(self) -> tuple[str, ...]:
        """The wanted (optional) bands the raster does not have."""
        return tuple(w for w, b in zip(self.wanted, self.mapping, strict=False) if b == ABSENT)

    def text(self) -> str:
        """The mapping as ``"3,2,1,4"`` (0 for an absent band); "" when undecided."""
        return ",".join(str(b) for b in self.mapping)

    def require(self, where: str = "raster") -> tuple[int, ...]:
        """The mapping; RasterInputError with the reason when UniGeo cannot tell."""
        if not self.decided:
            raise RasterInputError(f"{where}: {self.reason}")
        return self.mapping


def choose_bands(
    count: int,
    descriptions: Sequence[str | None] = (),
    colour_interps: Sequence[str | None] = (),
    wanted: Sequence[str] = ("red", "green", "blue", "nir"),
    optional: Sequence[str] = (),
    hints: Sequence[str] = (),
) -> BandChoice:
    """The raster bands for the model's ``wanted`` bands (see the module docstring).

    Args:
        count: Number of bands in the raster.
        descriptions: One description per band (None or "" when unnamed).
        colour_interps: One colour interpretation name per band ("Red", "Gray", "Alpha", ...).
        wanted: The model's aerial band names, in the model's order.
        optional: Those of ``wanted`` the model can do without (masked when absent).
        hints: Free texts that may name the sensor: the file name, metadata values.

    Returns:
        A :class:`BandChoice`; undecided (empty mapping) when the evidence does not settle it.
    """
    want = tuple(wanted_name(w) for w in wanted)
    opt = {wanted_name(o) for o in optional}
    bands = read_bands(count, descriptions, colour_interps)
    data = [b for b in bands if not b.alpha]
    ctx = _Ctx(tuple(wanted), want, opt, bands)
    if any(b.name for b in data):
        return ctx.by_names(data)
    sensor, why = sensor_of(data, hints)
    if sensor is not None and all(b.code for b in data) and len(data) >= 3:
        return ctx.by_codes(data, sensor, why)
    return ctx.by_count(data, sensor, why)


@dataclass(frozen=True)
class _Ctx:
    wanted: tuple[str, ...]  # as the model spells them
    want: tuple[str, ...]  # folded
    optional: set[str]
    bands: list[Band]

    def assign(self, names: Sequence[tuple[Band, str | None]], how: str, source: str):
        """Map wanted names onto ``(band, spectral name)`` pairs; undecided if one is missing."""
        first: dict[str, Band] = {}
        for band, name in names:
            if name and name not in first:
                first[name] = band
        missing = [w for w in self.want if w not in first and w not in self.optional]
        if missing:
            have = ", ".join(f"{b.number} {n}" for b, n in names if n) or "none"
            return self.unknown(
                f"{how}, which gives bands {have}: no {', '.join(missing)}. The model needs "
                f"{', '.join(self.wanted)}; pick its bands by number if the names are wrong, "
                "or use a raster that has them" + self._alpha_note()
            )
        mapping = tuple(first[w].number if w in first else ABSENT for w in self.want)
        parts = [
            f"{w} = band {first[f].number}" + (f" ({first[f].label})" if first[f].label else "")
            if f in first
            else f"{w} absent"
            for w, f in zip(self.wanted, self.want, strict=True)
        ]
        return BandChoice(self.wanted, mapping, f"{how}: {', '.join(parts)}", source)

    def unknown(self, reason: str, candidates: tuple[BandChoice, ...] = ()) -> BandChoice:
        return BandChoice(self.wanted, (), reason, "unknown", candidates)

    def _alpha_note(self) -> str:
        alpha = [b.number for b in self.bands if b.alpha]
        if not alpha:
            return ""
        return (
            f" (band(s) {', '.join(map(str, alpha))} are marked alpha, a mask; pick one if it "
            "really holds data such as near-infrared)"
        )

    def by_names(self, data: list[Band]) -> BandChoice:
        how = "by the band names" if any(b.label for b in data) else "by colour interpretation"
        return self.assign([(b, b.name) for b in data], how, "names")

    def by_codes(self, data: list[Band], sensor: str | tuple[str, ...], why: str):
        if isinstance(sensor, tuple):
            return self.ambiguous(sensor, why, [[b.code for b in data]] * len(sensor), data)
        label, table = SENSORS[sensor]
        pairs = [(b, table.get((b.code or "").lstrip("0"))) for b in data]
        return self.assign(pairs, f"{label} band layout ({why})", "sensor")

    def by_count(self, data: list[Band], sensor, why: str) -> BandChoice:
        n = len(data)
        keys = sensor if isinstance(sensor, tuple) else (sensor,) if sensor else tuple(SENSORS)
        fits = distinct_sensors([k for k in keys if n in STACKS[k]], n)
        if (sensor is None or not fits) and n in BY_COUNT:
            label, names = BY_COUNT[n]
            return self.assign(list(zip(data, names, strict=True)), label, "layout")
        if len(fits) == 1:
            label, table = SENSORS[fits[0]]
            pairs = [(b, table[c]) for b, c in zip(data, STACKS[fits[0]][n], strict=True)]
            how = f"{n} unnamed bands, taken as the {label} stack ({why or 'by the band count'})"
            return self.assign(pairs, how, "sensor" if sensor else "layout")
        if len(fits) > 1:
            return self.ambiguous(tuple(fits), why, [STACKS[k][n] for k in fits], data)
        if n == 1:
            return self.unknown(
                f"the raster has one data band but the model needs {len(self.wanted)} "
                f"({', '.join(self.wanted)}); a one-band raster is usually a surface model "
                "(heights): embed it with the DSM encoder" + self._alpha_note()
            )
        return self.unknown(
            f"{n} data bands without names that say which is which, and no known layout has "
            f"{n}: pick the bands for {', '.join(self.wanted)} by number" + self._alpha_note()
        )

    def ambiguous(self, keys: tuple[str, ...], why: str, codes: list, data: list[Band]):
        options = []
        for key, cs in zip(keys, codes, strict=True):
            label, table = SENSORS[key]
            pairs = [(b, table.get((c or "").lstrip("0"))) for b, c in zip(data, cs, strict=True)]
            choice = self.assign(pairs, f"{label} band layout", "sensor")
            if choice.decided:
                options.append(choice)
        if len(options) == 1:  # the other layouts lack a band the model needs
            only = options[0]
            return replace(only, reason=f"{only.reason} (the only layout that fits the model)")
        fits = "; ".join(o.reason for o in options) or "none gives every band the model needs"
        what = "bands named " + band_span(data) if data and data[0].label else "unnamed bands"
        return self.unknown(
            f"{len(data)} {what} fit more than one sensor ({why or 'nothing names the sensor'}): "
            f"{fits}. Pick the bands for {', '.join(self.wanted)} by number",
            tuple(options),
        )


def user_choice(
    count: int, wanted: Sequence[str], mapping: Sequence[int], optional: Sequence[str] = ()
) -> BandChoice:
    """A selection typed or picked by the user, checked against the raster and the model.

    Raises:
        RasterInputError: Wrong length, a number outside 1..count, or a required band absent.
    """
    wanted = tuple(wanted)
    opt = {wanted_name(o) for o in optional}
    picked = tuple(int(b) for b in mapping)
    if len(picked) != len(wanted):
        raise RasterInputError(
            f"the band selection {list(picked)} has {len(picked)} number(s) but the model needs "
            f"{len(wanted)} ({', '.join(wanted)})"
        )
    for w, b in zip(wanted, picked, strict=True):
        if b == ABSENT and wanted_name(w) not in opt:
            raise RasterInputError(f"the model needs a band for {w}; pick one of 1..{count}")
        if b != ABSENT and not 1 <= b <= count:
            raise RasterInputError(f"band {b} for {w} does not exist: the raster has 1..{count}")
    parts = ", ".join(
        f"{w} = band {b}" if b else f"{w} absent" for w, b in zip(wanted, picked, strict=True)
    )
    return BandChoice(wanted, picked, f"picked by hand: {parts}", "user")
