"""GeoTIFF writing on a tile grid (heatmaps, classes, embeddings) with GDAL, checked before it lands.

Rasters are written on a :class:`~.grid.TileGrid` (one pixel per tile cell, the grid's CRS and
geotransform) through GDAL's own bindings (:mod:`.gdal_errors`), into a staging folder beside the
target. GDAL reports a failed write (a full disk, a file-size limit) through its error handler,
not by raising, so every call runs in a :func:`~.gdal_errors.gdal_errors` scope; then the file is
opened again and every pixel read back against a digest of what was written. Only a file that
passes replaces the target: a failure raises :class:`~.errors.OutputError` and leaves the
previous output as it was. Provenance (model hash, query, parameters) is stored as ``UNIGEO_*``
GDAL metadata tags, so a layer can always say where it came from. Vectors: :mod:`.vector`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import publish, staging_folder
from ..errors import InputError, OutputError
from ..grid import TileGrid
from . import crs as C
from .gdal_errors import GdalErrors, failure_message, gdal_errors, gdal_path, gdal_text, osgeo

if TYPE_CHECKING:
    from .render import Render

TAG_PREFIX = "UNIGEO_"
"""Prefix of every provenance tag, so they never collide with GDAL's own metadata items."""

WRITE_HINT = "nothing was replaced; free some disk space or choose another output folder"
_GDAL_TYPES = ("Byte", "UInt16", "Int16", "UInt32", "Int32", "Float32", "Float64")
_NUMPY_TYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
_READ_BACK_BYTES = 1 << 20  # rows read back per call (untiled files): about 1 MiB


def provenance_tags(provenance: Mapping[str, Any] | None) -> dict[str, str]:
    """Flatten provenance into GDAL-safe metadata items ``UNIGEO_<KEY> = <text or JSON>``.

    GDAL metadata keys may not hold spaces or ``=``, and values must be strings, so keys are
    sanitised and non-string values are JSON-encoded (readable back with ``json.loads``).
    """
    tags: dict[str, str] = {}
    for key, value in (provenance or {}).items():
        safe = re.sub(r"[^A-Za-z0-9_]", "_", str(key)).upper()
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        tags[TAG_PREFIX + safe] = gdal_text(text)  # a path that is not UTF-8 stays readable
    return tags


def _check_band(grid: TileGrid, band: np.ndarray, name: str) -> None:
    if band.ndim != 2 or band.shape != grid.shape:
        raise InputError(
            f"{name} has shape {band.shape} but the store's grid is {grid.shape}; "
            "pass the array computed on this store"
        )


def grid_profile(grid: TileGrid, count: int, dtype: str, nodata: float | int | None) -> dict:
    """The GeoTIFF layout of a raster on ``grid``: deflate, 256-px tiles when it is that large."""
    if str(np.dtype(dtype)) not in _NUMPY_TYPES:
        raise InputError(f"cannot write a {dtype} GeoTIFF; use one of {', '.join(_NUMPY_TYPES)}")
    tiled = grid.rows >= 256 and grid.cols >= 256
    options = ["COMPRESS=DEFLATE"]
    if tiled:
        options += ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
    return {
        "width": grid.cols,
        "height": grid.rows,
        "count": int(count),
        "dtype": str(np.dtype(dtype)),
        "nodata": nodata,
        "tiled": tiled,
        "options": options,
    }


def _row_digest(block: np.ndarray, row0: int) -> np.uint64:
    """An order-free checksum of rows ``row0..`` of one band: Σ (row + 1) x Σ bytes of the row."""
    b = np.ascontiguousarray(block)
    sums = b.view(np.uint8).reshape(b.shape[0], -1).sum(axis=1, dtype=np.uint64)
    weights = np.arange(row0 + 1, row0 + 1 + b.shape[0], dtype=np.uint64)
    return np.uint64((sums * weights).sum(dtype=np.uint64))


class GridTiff:
    """A GeoTIFF on a tile grid being written (see :func:`grid_tiff`): write rows of bands."""

    def __init__(self, grid: TileGrid, profile: dict, errors: GdalErrors, name: str) -> None:
        self.grid, self.profile, self.errors, self.name = grid, profile, errors, name
        self.digest = np.zeros(profile["count"], dtype=np.uint64)
        self.written = np.zeros(profile["count"], dtype=np.int64)  # rows written per band
        self._ds: Any = None

    def create(self, path: Path) -> None:
        """Create the file with its georeferencing and nodata (nothing else is written yet)."""
        gdal = osgeo()[0]
        p = self.profile
        gdal_type = getattr(gdal, "GDT_" + _GDAL_TYPES[_NUMPY_TYPES.index(p["dtype"])])
        drv = gdal.GetDriverByName("GTiff")
        ds = drv.Create(
            gdal_path(path), p["width"], p["height"], p["count"], gdal_type, p["options"]
        )
        if ds is None:
            self._fail("creating")
        ds.SetGeoTransform(self.grid.geotransform)
        ds.SetProjection(C.to_wkt(self.grid.crs))
        if p["nodata"] is not None:
            for i in range(p["count"]):
                ds.GetRasterBand(i + 1).SetNoDataValue(float(p["nodata"]))
        self._ds = ds

    def describe(
        self,
        descriptions: Sequence[str] = (),
        band_tags: Sequence[Mapping[str, Any]] = (),
        provenance: Mapping[str, Any] | None = None,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    ) -> None:
        """Band names, band and dataset metadata, and a colour table for band 1."""
        gdal = osgeo()[0]
        for i, text in enumerate(descriptions, start=1):
            self._ds.GetRasterBand(i).SetDescription(gdal_text(text))
        for i, tags in enumerate(band_tags, start=1):
            if tags:
                meta = {gdal_text(k): gdal_text(v) for k, v in tags.items()}
                self._ds.GetRasterBand(i).SetMetadata(meta)
        if provenance:
            self._ds.SetMetadata(provenance_tags(provenance))
        if colormap is not None:
            table = gdal.ColorTable()
            for k, rgba in colormap.items():
                table.SetColorEntry(int(k), tuple(int(c) for c in rgba))
            band = self._ds.GetRasterBand(1)
            band.SetRasterColorTable(table)
            band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)

    def write(self, band: int, rows: np.ndarray, row0: int = 0) -> None:
        """Write ``rows`` (``[h, cols]``) into band ``band`` (1-based) from row ``row0``."""
        data = np.ascontiguousarray(rows, dtype=self.profile["dtype"])
        err = self._ds.GetRasterBand(band).WriteArray(data, 0, int(row0))
        if err:
            self._fail(f"writing rows {row0}-{row0 + data.shape[0]} of band {band} of")
        self.digest[band - 1] += _row_digest(data, row0)
        self.written[band - 1] += data.shape[0]

    def close(self) -> None:
        """Flush and close the file (GDAL writes the remaining blocks now)."""
        if self._ds is not None:
            self._ds.FlushCache()
            self._ds = None

    def _fail(self, doing: str) -> None:
        failed = self.errors.failures()
        msg = failed[0] if failed else "GDAL gave no reason"
        raise OutputError(failure_message(f"{doing} {self.name}", msg, WRITE_HINT))

    def verify(self, path: Path) -> None:
        """Open the written file again and compare every pixel with the digest of what was sent."""
        if (self.written != self.grid.rows).any():
            raise OutputError(f"{self.name}: not every row was written; {WRITE_HINT}")
        gdal = osgeo()[0]
        p, what = self.profile, f"checking the written {self.name}"
        with gdal_errors(what, error=OutputError, hint=WRITE_HINT):
            ds = gdal.Open(gdal_path(path))
            shape = None if ds is None else (ds.RasterCount, ds.RasterYSize, ds.RasterXSize)
            if shape != (p["count"], p["height"], p["width"]):
                raise OutputError(
                    f"{self.name} reads back as {shape}, not as written; {WRITE_HINT}"
                )
            # whole rows of tiles at once: each block is decoded once and memory stays bounded
            row_bytes = max(1, p["width"] * np.dtype(p["dtype"]).itemsize)
            step = 256 if p["tiled"] else max(1, _READ_BACK_BYTES // row_bytes)
            for i in range(p["count"]):
                band, got = ds.GetRasterBand(i + 1), np.uint64(0)
                for r0 in range(0, p["height"], step):
                    block = band.ReadAsArray(0, r0, p["width"], min(step, p["height"] - r0))
                    if block is None:
                        break
                    got += _row_digest(block.astype(p["dtype"], copy=False), r0)
                if got != self.digest[i]:
                    raise OutputError(
                        f"band {i + 1} of {self.name} reads back different from what was "
                        f"written; {WRITE_HINT}"
                    )
            band = ds = None


@contextlib.contextmanager
def grid_tiff(
    path: str | Path, grid: TileGrid, count: int, dtype: str, nodata: float | int | None
) -> Iterator[GridTiff]:
    """Write a GeoTIFF on ``grid``, replacing ``path`` only once it is whole and verified.

    The body calls :meth:`GridTiff.describe` and :meth:`GridTiff.write` until every row of
    every band is written. On leaving, the file is closed, GDAL's errors checked, the file read
    back and only then moved over ``path`` (a stale ``path.aux.xml`` describing the old file is
    removed). Any failure raises (GDAL's as :class:`~.errors.OutputError`) and leaves ``path``
    untouched and no temporary file behind.
    """
    path = Path(path)
    if grid.rows == 0 or grid.cols == 0:
        raise InputError("the store's grid is empty; there is nothing to write")
    profile = grid_profile(grid, count, dtype, nodata)
    with staging_folder(path) as folder:
        tmp = folder / path.name
        with gdal_errors(f"writing {path.name}", error=OutputError, hint=WRITE_HINT) as errs:
            tiff = GridTiff(grid, profile, errs, path.name)
            try:
                tiff.create(tmp)
                yield tiff
                tiff.close()
            finally:
                tiff._ds = None  # on failure: close before the folder is removed
        tiff.verify(tmp)
        publish_tiff(tmp, path)


def publish_tiff(staged: Path, target: Path) -> None:
    """Move a verified GeoTIFF (and the ``.aux.xml`` GDAL may have put beside it) over ``target``.

    A ``target.aux.xml`` left from the old file is removed: it would describe the old pixels
    (QGIS stores statistics there) and override the new file's metadata.
    """
    aux = staged.parent / f"{staged.name}.aux.xml"
    parts = [aux, staged] if aux.exists() else [staged]
    publish(parts, target.parent, stale=[target.parent / f"{target.name}.aux.xml"])


def write_grid_raster(
    path: str | Path,
    grid: TileGrid,
    bands: Sequence[np.ndarray],
    *,
    dtype: str,
    nodata: float | int | None,
    descriptions: Sequence[str] = (),
    band_tags: Sequence[Mapping[str, str]] = (),
    provenance: Mapping[str, Any] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    render: Render | None = None,
) -> Path:
    """Write ``bands`` (each ``grid.shape``) as a tiled, compressed GeoTIFF, atomically.

    Args:
        path: Target ``.tif`` path; replaced only when the whole file was written and read back.
        grid: The tile grid that gives the CRS and geotransform.
        bands: 2-D arrays, one per band, all of ``grid.shape``.
        dtype: Output data type name (e.g. ``"float32"``, ``"uint8"``).
        nodata: The nodata value (``math.nan`` for float rasters), or None.
        descriptions: One description per band (shown as the band name in QGIS).
        band_tags: Extra metadata items per band.
        provenance: Dataset-level provenance, written as ``UNIGEO_*`` tags.
        colormap: A GDAL colour table for band 1 (index -> RGBA); byte/uint16 rasters only.
        render: Draw the cells on this finer grid, inside the source raster's outline
            (:func:`engine.geo.render.render_for`); needs a ``nodata`` value.

    Returns:
        The written path.

    Raises:
        InputError: No bands, or a band of another shape than the grid.
        OutputError: GDAL could not write the file whole (``path`` is left as it was).
    """
    if not bands:
        raise InputError("nothing to write: no raster bands were given")
    if grid.rows == 0 or grid.cols == 0:
        raise InputError("the store's grid is empty; there is nothing to write")
    for i, band in enumerate(bands):
        _check_band(grid, band, f"band {i + 1}")
    path = Path(path)
    if render is not None and nodata is not None:
        bands = [render.expand(render.fill(np.asarray(b)), 0, nodata)[0] for b in bands]
        grid = render.out
    with grid_tiff(path, grid, len(bands), dtype, nodata) as tiff:
        tiff.describe(descriptions, band_tags, provenance, colormap)
        for i, band in enumerate(bands, start=1):
            tiff.write(i, np.asarray(band))
    return path


def write_embeddings_tiff(path: str | Path, store: Any) -> Path:
    """A store's embeddings as a float32 GeoTIFF, one band per dimension, NaN = no data."""
    valid = np.asarray(store.valid, dtype=bool)
    bands = []
    for d in range(store.dim):
        band = np.asarray(store.embeddings[:, :, d], dtype=np.float32)
        bands.append(np.where(valid, band, np.nan))
    return write_grid_raster(
        path,
        store.grid,
        bands,
        dtype="float32",
        nodata=float("nan"),
        descriptions=[f"dim {d}" for d in range(store.dim)],
        provenance={"model_hash": store.model_hash, "store": str(store.folder)},
    )


def hex_to_rgba(color: str) -> tuple[int, int, int, int]:
    """``"#rrggbb"`` (or ``"#rrggbbaa"``) to an RGBA tuple; a clear error on anything else."""
    text = color.strip().lstrip("#")
    if len(text) not in (6, 8) or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise InputError(f"colour '{color}' is not of the form #rrggbb")
    vals = [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    return (vals[0], vals[1], vals[2], vals[3] if len(vals) == 4 else 255)
