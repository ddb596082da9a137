"""Several rasters read as one: ``MosaicReader``, STAC-like collections and their tile grid.

A mosaic is a list of rasters, possibly in different CRSs (a national orthophoto delivered per
UTM zone, a STAC search result). Each member is a :class:`~.gdal_reader.GdalReader`, so every
tile is warped onto the grid by the same code as a single raster. A tile is filled from the
members in order: pixels that are no data (NaN) in one member are taken from the next one
(first valid wins). :class:`SourceSpec` is the small picklable description of the inputs that a
distributed worker turns back into a reader.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, RasterInputError
from ..geo import crs as crs_mod
from ..grid import DEFAULT_MAX_TILES, Bounds, TileGrid
from ..model.contract import Preprocess
from .gdal_reader import GdalReader
from .reader import RasterReader
from .source import gdal_name, is_virtual
from .tiling import choose_grid_crs, grid_for_raster, raster_gsd_m

ASSET_KEYS = ("image", "visual", "data")
_COLLECTION_SUFFIXES = (".json", ".geojson")


def _is_collection(path: Path) -> bool:
    return path.suffix.lower() in _COLLECTION_SUFFIXES


def collection_paths(path: str | Path, asset: str | None = None) -> list[Path]:
    """Raster paths of a STAC-like ItemCollection / FeatureCollection JSON file, in order.

    Args:
        path: the JSON file; relative ``href`` values are resolved against its folder.
        asset: the asset key to read; default the first of ``image``, ``visual``, ``data``
            present in each feature.

    Raises:
        RasterInputError: the file is not such a collection or an item lacks the asset.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise RasterInputError(f"cannot read the collection {p} ({e})") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list) or not feats:
        raise RasterInputError(
            f"{p.name} is not a STAC-like collection: expected a FeatureCollection with "
            "'features' whose 'assets' hold raster hrefs"
        )
    out = []
    for i, feat in enumerate(feats):
        assets = feat.get("assets") if isinstance(feat, dict) else None
        if not isinstance(assets, dict):
            raise RasterInputError(f"{p.name}: feature {i} has no 'assets'")
        keys = [asset] if asset else [k for k in ASSET_KEYS if k in assets]
        if not keys or keys[0] not in assets or "href" not in (assets[keys[0]] or {}):
            want = asset or " / ".join(ASSET_KEYS)
            raise RasterInputError(
                f"{p.name}: feature {i} ({feat.get('id', '?')}) has no asset '{want}' with an "
                f"href (it has: {', '.join(assets) or 'none'}); pick one with --asset"
            )
        href = str(assets[keys[0]]["href"])
        if href.startswith("file://"):
            href = href[len("file://") :]
        if "://" in href:
            raise RasterInputError(
                f"{p.name}: feature {i} points at {href}; only local files are read, "
                "download the assets first"
            )
        out.append((p.parent / href).resolve() if not Path(href).is_absolute() else Path(href))
    return out


@dataclass(frozen=True)
class SourceSpec:
    """Picklable description of the input rasters, reopened by each distributed worker.

    Attributes:
        paths: the raster files, in priority order (first valid pixel wins).
        bands: explicit 1-based band numbers in the model's order (None: match by name).
        scale: ``"dtype"``, ``"percentile"`` or a number (see GdalReader).
        nodata: value that marks no data, overriding the files' own.
        resampling: GDAL resampling name.
    """

    paths: tuple[str, ...]
    bands: tuple[int, ...] | None = None
    scale: str | float = "dtype"
    nodata: float | None = None
    resampling: str = "bilinear"

    def open(self) -> RasterReader:
        """A GdalReader for one file (a ``.vrt`` included), else a MosaicReader."""
        kw = dict(bands=self.bands, scale=self.scale, nodata=self.nodata)
        if len(self.paths) == 1:
            return GdalReader(self.paths[0], resampling=self.resampling, **kw)
        return MosaicReader(self.paths, resampling=self.resampling, **kw)


def source_spec(
    inputs: str | Path | Sequence[str | Path],
    asset: str | None = None,
    bands: Sequence[int] | None = None,
    scale: str | float = "dtype",
    nodata: float | None = None,
    resampling: str = "bilinear",
) -> SourceSpec:
    """The :class:`SourceSpec` of a raster, a list of rasters or one STAC-like JSON file."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise RasterInputError("no input raster given")
    paths: list[str] = []
    for item in items:
        p = Path(item)
        if is_virtual(item):  # kept as given: Path would collapse /vsizip//abs/...
            paths.append(str(item))
        else:
            paths.extend(str(c) for c in (collection_paths(p, asset) if _is_collection(p) else [p]))
    # a missing file, a name GDAL cannot take: one clear error before anything runs
    names = [gdal_name(p) for p in paths]
    return SourceSpec(
        tuple(n if is_virtual(n) else str(Path(n).resolve()) for n in names),
        tuple(int(b) for b in bands) if bands else None,
        scale,
        nodata,
        resampling,
    )


class MosaicReader:
    """A :class:`~.reader.RasterReader` over several rasters, possibly in different CRSs.

    Args:
        paths_or_collection: raster paths, or one STAC-like JSON collection file.
        bands, scale, nodata, resampling: passed to every member's GdalReader.
        asset: asset key for a collection (default: image, visual or data).

    ``crs``, ``res`` and the band layout are the first member's; ``bounds`` is the union of the
    members' bounds in that CRS. Members must have the same band layout.
    """

    def __init__(
        self,
        paths_or_collection: str | Path | Sequence[str | Path],
        bands: Sequence[int] | None = None,
        scale: str | float = "dtype",
        nodata: float | None = None,
        resampling: str = "bilinear",
        asset: str | None = None,
    ) -> None:
        spec = source_spec(paths_or_collection, asset, bands, scale, nodata, resampling)
        self.members: list[GdalReader] = []
        try:
            for p in spec.paths:
                self.members.append(
                    GdalReader(p, bands=bands, scale=scale, nodata=nodata, resampling=resampling)
                )
            self._check_layout()
        except RasterInputError:
            self.close()
            raise
        first = self.members[0]
        self.crs: str = first.crs
        self.res: tuple[float, float] = first.res
        self.band_count: int = first.band_count
        self.band_names: tuple[str, ...] = first.band_names
        scalings = list(dict.fromkeys(m.scaling for m in self.members))
        self.scaling: str = scalings[0] if len(scalings) == 1 else ";".join(scalings)
        self.bounds: Bounds = _union([self._in_crs(m, self.crs) for m in self.members])
        self._boxes: dict[str, list[Bounds]] = {}

    def _check_layout(self) -> None:
        first = self.members[0]
        for m in self.members[1:]:
            if (m.band_count, m.band_names) != (first.band_count, first.band_names):
                raise RasterInputError(
                    f"mosaic members differ in bands: {first.path.name} has "
                    f"{list(first.band_names)}, {m.path.name} has {list(m.band_names)}; "
                    "give rasters with the same band layout (or pick bands explicitly)"
                )

    @staticmethod
    def _in_crs(member: Any, crs: str) -> Bounds:
        return _box_in(member, crs)

    def member_boxes(self, grid_crs: str) -> list[Bounds]:
        """Each member's bounds in ``grid_crs`` (cached: the cheap test before any read)."""
        if grid_crs not in self._boxes:
            self._boxes[grid_crs] = [self._in_crs(m, grid_crs) for m in self.members]
        return self._boxes[grid_crs]

    @property
    def explicit_bands(self) -> tuple[int, ...] | None:
        """The members' explicit selection (0 = absent), None when matched by name."""
        return self.members[0].explicit_bands

    def check_bands(self, wanted: Sequence[str]) -> list[int]:
        """The band numbers used for ``wanted`` (checked on every member)."""
        return [m.check_bands(wanted) for m in self.members][0]

    def read_tile(
        self, bounds: Bounds, grid_crs: str, gsd: float, size: int, bands: Sequence[str]
    ) -> np.ndarray:
        """Float32 ``[len(bands), size, size]``; NaN pixels are filled from later members."""
        out: np.ndarray | None = None
        for member, box in zip(self.members, self.member_boxes(grid_crs), strict=True):
            if not _overlaps(box, bounds):
                continue
            tile = member.read_tile(bounds, grid_crs, gsd, size, bands)
            if out is None:
                out = tile
            else:
                hole = np.isnan(out)
                out[hole] = tile[hole]
            if not np.isnan(out).any():
                break
        if out is None:
            out = np.full((len(bands), size, size), np.nan, dtype=np.float32)
        return out

    def fingerprint(self) -> str:
        """sha256 of the members' fingerprints, in order (the order decides overlaps)."""
        text = json.dumps(["mosaic", *(m.fingerprint() for m in self.members)])
        return hashlib.sha256(text.encode()).hexdigest()

    def close(self) -> None:
        """Close every member's datasets."""
        for m in self.members:
            m.close()

    def __enter__(self) -> MosaicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _box_in(member: Any, crs: str) -> Bounds:
    """``member``'s bounds in ``crs``; NaNs when they have no position there (never overlaps)."""
    try:
        return crs_mod.transform_bounds(member.crs, crs, member.bounds, 21)
    except InputError:
        return (math.nan,) * 4


def _overlaps(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(boxes: Sequence[Bounds]) -> Bounds:
    good = [b for b in boxes if all(map(math.isfinite, b))]
    if not good:
        raise RasterInputError("no mosaic member can be placed in the grid CRS")
    return (
        min(b[0] for b in good),
        min(b[1] for b in good),
        max(b[2] for b in good),
        max(b[3] for b in good),
    )


def grid_for_sources(
    reader: RasterReader,
    preprocess: Preprocess,
    grid_crs: str | None = None,
    stride_px: int | None = None,
    extent: Bounds | None = None,
    extent_crs: str | None = None,
    max_tiles: int = DEFAULT_MAX_TILES,
) -> TileGrid:
    """The tile grid for a raster or mosaic: the union of member bounds in the grid CRS.

    A single raster with no ``grid_crs`` gets exactly :func:`~.tiling.grid_for_raster`'s
    grid. Otherwise the grid CRS is ``grid_crs`` or :func:`~.tiling.choose_grid_crs` of the
    first member, and the GSD the encoder's (or the first member's own). ``extent`` is in
    ``extent_crs`` (default: the grid CRS) and is clipped to the union.
    """
    members: list[Any] = list(getattr(reader, "members", [reader]))
    if grid_crs is None and len(members) == 1:
        return grid_for_raster(reader, preprocess, stride_px, extent, extent_crs, max_tiles)
    if grid_crs is not None:
        _check_grid_crs(grid_crs)
    crs = grid_crs or choose_grid_crs(members[0])
    gsd = preprocess.gsd_m if preprocess.gsd_m > 0 else raster_gsd_m(members[0], crs)
    box = _union([_box_in(m, crs) for m in members])
    if extent is not None:
        e = crs_mod.transform_bounds(extent_crs or crs, crs, extent, 21)
        box = (max(e[0], box[0]), max(e[1], box[1]), min(e[2], box[2]), min(e[3], box[3]))
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RasterInputError(f"the extent {tuple(extent)} does not overlap the rasters")
    return TileGrid.for_extent(crs, gsd, preprocess.size, stride_px, box, max_tiles=max_tiles)


def _check_grid_crs(text: str) -> None:
    """A grid CRS must be known and in metres: tiles are sized in metres (the encoder's GSD)."""
    crs_mod.check_crs(text)  # InputError naming the text when GDAL/PROJ does not know it
    if not crs_mod.is_projected(text) or crs_mod.linear_unit_m(text) != 1.0:
        raise InputError(
            f"the grid CRS '{text[:60]}' is not a projected CRS in metres; tiles are sized in "
            "metres, so give one that is (e.g. the UTM zone of the area, EPSG:326xx)"
        )
