"""Vector files through GDAL's OGR: hits and features out (GeoPackage, GeoJSON, Shapefile), polygons in.

Vectors go to a GeoPackage (1.3, provenance as dataset and layer metadata), a GeoJSON file
(always WGS84 longitude/latitude as RFC 7946 requires, provenance in its ``description``) or an
ESRI Shapefile (UTF-8, 10-character field names), chosen by the file extension. Every file is
written into a staging folder beside the target, GDAL's errors are checked, the file is opened
again and every feature read back, and only then is it moved over the target (a Shapefile's
parts together, ``.shp`` last): a failure raises :class:`~.errors.OutputError` and leaves the
previous output as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import publish, staging_folder
from ..errors import InputError, OutputError
from . import crs as C
from . import geometry as G
from .gdal_errors import failure_message, gdal_errors, gdal_path, gdal_text, osgeo
from .tiff import WRITE_HINT, provenance_tags

VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".shp": "ESRI Shapefile",
}
SHP_FIELD_CHARS = 10
"""dBase limits field names to 10 characters; longer names are cut (and made unique)."""
_SHP_INDEX_SIDECARS = (".qix", ".sbn", ".sbx")  # spatial indexes of an old file go stale


def vector_driver(path: str | Path) -> str:
    """The OGR driver for ``path`` from its extension (GeoPackage, GeoJSON or Shapefile)."""
    ext = Path(path).suffix.lower()
    if ext not in VECTOR_DRIVERS:
        raise InputError(
            f"cannot write vectors to '{Path(path).name}': use a .gpkg, .geojson or .shp file name"
        )
    return VECTOR_DRIVERS[ext]


def shapefile_field_names(names: Sequence[str]) -> list[str]:
    """``names`` cut to dBase's 10 characters, kept unique (``unigeo_emb``, ``unigeo_e_1``)."""
    out: list[str] = []
    for name in names:
        short = name[:SHP_FIELD_CHARS]
        n = 1
        while short.lower() in (o.lower() for o in out):  # dBase names are case-insensitive
            tail = f"_{n}"
            short = name[: SHP_FIELD_CHARS - len(tail)] + tail
            n += 1
        out.append(short)
    return out


def to_wgs84(geometry_wkb: Sequence[bytes | None], crs: str) -> list[bytes | None]:
    """WKB geometries in ``crs`` reprojected to EPSG:4326 longitude/latitude (x = longitude)."""
    out: list[bytes | None] = []
    for g in geometry_wkb:
        if g is None:
            out.append(None)
            continue
        try:
            wkb = G.transform(g, crs, C.WGS84)
        except InputError:
            wkb = None
        if wkb is None or not np.isfinite(G.coordinates(wkb)).all():
            raise InputError(
                "some geometries have no WGS84 position, and GeoJSON is always WGS84; "
                "write a .gpkg or .shp file instead"
            )
        out.append(wkb)
    return out


def write_vector(
    path: str | Path,
    geometry_wkb: Sequence[bytes],
    fields: Mapping[str, np.ndarray],
    crs: str,
    *,
    geometry_type: str,
    layer: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write features (WKB geometries + attribute columns) to a vector file, atomically.

    GeoJSON is written in EPSG:4326 (RFC 7946: longitude, latitude) whatever ``crs`` is; a
    GeoPackage or Shapefile keeps ``crs``. A Shapefile is several files (.shp, .shx, .dbf,
    .prj, .cpg): all are written and checked first and moved next to each other only then, and
    field names are cut to 10 characters.

    Args:
        path: Target file; ``.gpkg``, ``.geojson``/``.json`` or ``.shp`` picks the format.
        geometry_wkb: One WKB geometry per feature.
        fields: Column name -> 1-D array with one value per feature.
        crs: CRS of the geometries (WKT or ``"EPSG:n"``).
        geometry_type: OGR layer geometry type, e.g. ``"Point"`` or ``"Polygon"``.
        layer: Layer name (GeoPackage); defaults to the file stem.
        provenance: Stored as GeoPackage metadata, or as the GeoJSON ``description`` member.

    Returns:
        The written path.

    Raises:
        InputError: Unknown extension, columns of the wrong length, a CRS GDAL does not know.
        OutputError: GDAL could not write the file whole (``path`` is left as it was).
    """
    path = Path(path)
    driver = vector_driver(path)
    n = len(geometry_wkb)
    names = list(fields)
    arrays = [np.asarray(fields[k]) for k in names]
    if any(len(a) != n for a in arrays):
        raise InputError("every attribute column needs one value per feature")
    C.check_crs(crs)
    if driver == "GeoJSON":
        geometry_wkb, crs = to_wgs84(geometry_wkb, crs), C.WGS84
    if driver == "ESRI Shapefile":
        names = shapefile_field_names(names)
    name = gdal_text(layer or path.stem)  # a file name that is not UTF-8 still names a layer
    spec = _LayerSpec(driver, name, geometry_type, crs, provenance_tags(provenance))
    with staging_folder(path) as folder:
        tmp = folder / path.name
        _write_ogr(tmp, spec, list(geometry_wkb), arrays, names)
        _verify(tmp, spec, n, names)
        _publish(tmp, path, driver)
    return path


def _publish(staged: Path, path: Path, driver: str) -> None:
    """Move the checked file (all parts of a Shapefile, ``.shp`` last) next to ``path``."""
    if driver != "ESRI Shapefile":
        publish([staged], path.parent)
        return
    parts = sorted(staged.parent.iterdir(), key=lambda p: p.suffix.lower() == ".shp")
    publish(parts, path.parent, stale=[path.with_suffix(e) for e in _SHP_INDEX_SIDECARS])


class _LayerSpec:
    """What one output layer looks like: driver, name, geometry type, CRS and metadata tags."""

    def __init__(self, driver: str, name: str, geometry_type: str, crs: str, tags: dict) -> None:
        ogr = osgeo()[1]
        self.driver, self.name, self.crs, self.tags = driver, name, crs, tags
        self.geometry_type = getattr(ogr, f"wkb{geometry_type}", None)
        if self.geometry_type is None:
            raise InputError(f"'{geometry_type}' is not an OGR geometry type (Point, Polygon, …)")

    def options(self) -> tuple[list[str], list[str]]:
        """Dataset and layer creation options."""
        if self.driver == "GPKG":
            # GeoPackage 1.3: the GDAL inside QGIS 3.22 (3.6) warns on 1.4.
            return ["VERSION=1.3"], []
        if self.driver == "GeoJSON":
            # RFC7946=YES: no "crs" member, 7 decimals, right-hand polygon winding
            lco = ["RFC7946=YES"]
            if self.tags:
                lco.append("DESCRIPTION=" + json.dumps(self.tags, sort_keys=True))
            return [], lco
        return [], ["ENCODING=UTF-8"]


def _field_type(a: np.ndarray) -> tuple[int, int]:
    """OGR field type and subtype of a numpy column."""
    ogr = osgeo()[1]
    kind = a.dtype.kind
    if kind == "b":
        return ogr.OFTInteger, ogr.OFSTBoolean
    if kind in "iu":
        big = a.dtype.itemsize > 4 or (kind == "u" and a.dtype.itemsize == 4)
        return (ogr.OFTInteger64 if big else ogr.OFTInteger), ogr.OFSTNone
    if kind == "f":
        return ogr.OFTReal, (ogr.OFSTFloat32 if a.dtype.itemsize == 4 else ogr.OFSTNone)
    return ogr.OFTString, ogr.OFSTNone


def _value(v: Any) -> Any:
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, str):
        return gdal_text(v)
    return int(v) if isinstance(v, bool) else v


def _write_ogr(
    target: Path, spec: _LayerSpec, geoms: list, arrays: list[np.ndarray], names: list[str]
) -> None:
    """Create ``target`` with one layer of the features; OutputError on any GDAL failure."""
    ogr = osgeo()[1]
    with gdal_errors(f"writing {target.name}", error=OutputError, hint=WRITE_HINT) as errs:

        def check(ok: Any, doing: str) -> None:
            if not ok:
                failed = errs.failures()
                why = failed[0] if failed else "GDAL gave no reason"
                raise OutputError(failure_message(f"{doing} {target.name}", why, WRITE_HINT))

        dsco, lco = spec.options()
        ds = ogr.GetDriverByName(spec.driver).CreateDataSource(gdal_path(target), dsco)
        try:
            check(ds is not None, "creating")
            lyr = ds.CreateLayer(spec.name, C.srs(spec.crs), spec.geometry_type, lco)
            check(lyr is not None, "creating the layer of")
            for name, a in zip(names, arrays, strict=True):
                fd = ogr.FieldDefn(name, _field_type(a)[0])
                fd.SetSubType(_field_type(a)[1])
                check(lyr.CreateField(fd) == 0, f"adding field '{name}' to")
            txn = spec.driver == "GPKG"  # one transaction: a GeoPackage commits per feature else
            check(not txn or lyr.StartTransaction() == 0, "starting to write")
            for i, wkb in enumerate(geoms):
                check(
                    lyr.CreateFeature(_feature(lyr, wkb, arrays, i)) == 0,
                    f"writing feature {i + 1} of",
                )
            check(not txn or lyr.CommitTransaction() == 0, "committing the features of")
            if spec.driver == "GPKG" and spec.tags:
                check(ds.SetMetadata(spec.tags) == 0, "writing the metadata of")
                check(lyr.SetMetadata(spec.tags) == 0, "writing the layer metadata of")
            lyr = None
            ds.FlushCache()
        finally:
            ds = None  # closing writes the rest, and reports failures to the scope's handler


def _feature(lyr: Any, wkb: bytes | None, arrays: list[np.ndarray], i: int) -> Any:
    ogr = osgeo()[1]
    f = ogr.Feature(lyr.GetLayerDefn())
    for j, a in enumerate(arrays):
        v = _value(a[i])
        if v is None:
            f.SetFieldNull(j)
        else:
            f.SetField(j, v)
    if wkb is not None:
        f.SetGeometryDirectly(ogr.CreateGeometryFromWkb(bytes(wkb)))
    return f


def _verify(target: Path, spec: _LayerSpec, n: int, names: list[str]) -> None:
    """Open ``target`` again and read every feature: a truncated or partial file fails here."""
    ogr = osgeo()[1]
    what = f"checking the written {target.name}"
    with gdal_errors(what, error=OutputError, hint=WRITE_HINT):
        ds = ogr.Open(gdal_path(target))
        lyr = None if ds is None else ds.GetLayer(0)
        if lyr is None:
            raise OutputError(f"{target.name} cannot be read back; {WRITE_HINT}")
        defn = lyr.GetLayerDefn()
        got_names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        count = sum(1 for _ in lyr)
        if got_names != names or count != n:
            raise OutputError(
                f"{target.name} reads back with {count} of {n} features and fields "
                f"{got_names}; {WRITE_HINT}"
            )
        if spec.driver == "GPKG" and spec.tags and not (lyr.GetMetadata() or {}):
            raise OutputError(f"{target.name} lost its metadata; {WRITE_HINT}")
        lyr = ds = None


# -- reading ----------------------------------------------------------------------------------
def read_features(
    path: str | Path, field: str | None = None
) -> tuple[list[tuple[bytes, Any]], str | None]:
    """``([(WKB, value of field or None), ...], CRS WKT or None)`` of the first layer of ``path``.

    Features without a geometry (or with an empty one) are skipped.

    Raises:
        InputError: The file cannot be read, or has no field ``field``.
    """
    ogr = osgeo()[1]
    with gdal_errors(f"reading {Path(path).name}", raise_on_failure=False) as errs:
        ds = ogr.Open(gdal_path(path)) if Path(path).exists() else None
        lyr = None if ds is None else ds.GetLayer(0)
        if lyr is None:
            why = errs[-1][2].strip() if errs else "no such file or not a vector file"
            raise InputError(f"cannot read polygons from {path}: {why}")
        defn = lyr.GetLayerDefn()
        fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        if field is not None and field not in fields:
            raise InputError(
                f"{path} has no field '{field}' (fields: {', '.join(fields)}); "
                "pick the label field with --class-field"
            )
        ref = lyr.GetSpatialRef()
        crs = ref.ExportToWkt() if ref is not None else None
        out = []
        for f in lyr:
            g = f.GetGeometryRef()
            if g is None or g.IsEmpty():
                continue
            idx = -1 if field is None else f.GetFieldIndex(field)
            value = f.GetField(idx) if idx >= 0 and f.IsFieldSetAndNotNull(idx) else None
            out.append((G.to_wkb(g), value))
        lyr = ds = None
    return out, crs


def layer_metadata(path: str | Path) -> dict[str, str]:
    """The metadata items of the first layer of a vector file ({} when it has none)."""
    ogr = osgeo()[1]
    with gdal_errors(f"reading {Path(path).name}", raise_on_failure=False):
        ds = ogr.Open(gdal_path(path)) if Path(path).exists() else None
        lyr = None if ds is None else ds.GetLayer(0)
        meta = dict(lyr.GetMetadata() or {}) if lyr is not None else {}
        lyr = ds = None
    return meta
