"""Reading back what the engine wrote: an output's kind, its class palette and its provenance.

Every output carries what made it as ``UNIGEO_*`` tags (GeoTIFF metadata, GeoPackage layer
metadata), and the GeoTIFFs say what they hold in their first band's description. Front ends
read these to style a loaded output like a fresh one and to show its provenance.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .gdal_errors import gdal_errors, osgeo
from .tiff import TAG_PREFIX
from .vector import layer_metadata

KINDS = ("heatmap", "classes", "confidence", "hits")


@dataclass(frozen=True)
class OutputInfo:
    """What a file says about itself as a UniGeo output."""

    kind: str | None = None  # "heatmap", "classes" or "confidence" (rasters); None: unknown
    classes: list[str] = field(default_factory=list)  # a class raster's names, value i = [i]
    colors: dict[str, str] = field(default_factory=dict)  # class -> "#rrggbb"
    provenance: dict[str, Any] = field(default_factory=dict)  # UNIGEO_* tags, JSON decoded
    tagged: bool = False  # a raster with UNIGEO_* tags (any format): one of UniGeo's outputs


def read_output(path: str | Path) -> OutputInfo:
    """Read ``path`` as a UniGeo output; an unreadable or foreign file gives an empty info."""
    path = str(path)
    suffix = Path(path).suffix.lower()
    with _raster(path) as ds:
        first = ds.GetRasterBand(1) if ds is not None and ds.RasterCount else None
        kind = _kind(first.GetDescription() if first is not None else None)
        classes, colors = _palette(first) if kind == "classes" else ([], {})
        tags = dict(ds.GetMetadata() or {}) if ds is not None else {}
        first = None
    tagged = any(str(k).startswith(TAG_PREFIX) for k in tags)
    if suffix not in (".tif", ".tiff"):
        tags = layer_metadata(path) if suffix == ".gpkg" else {}
    prov = {
        k[len(TAG_PREFIX) :].lower(): _decode(v)
        for k, v in tags.items()
        if k.startswith(TAG_PREFIX)
    }
    return OutputInfo(kind, classes, colors, prov, tagged)


def _kind(description: str | None) -> str | None:
    """The kind of a UniGeo GeoTIFF from its first band's description (None: not one)."""
    text = (description or "").lower()
    if text == "cosine similarity":
        return "heatmap"
    if text == "land-use class":
        return "classes"
    if text.startswith("confidence"):
        return "confidence"
    return None


def _palette(band: Any) -> tuple[list[str], dict[str, str]]:
    """Class names (``CLASS_<i>`` band tags) and their ``#rrggbb`` colours (colour table)."""
    tags = dict(band.GetMetadata() or {})
    table = band.GetRasterColorTable()
    cmap = {i: table.GetColorEntry(i) for i in range(table.GetCount())} if table else {}
    classes: list[str] = []
    while f"CLASS_{len(classes)}" in tags:
        classes.append(tags[f"CLASS_{len(classes)}"])
    colors = {
        name: "#{:02x}{:02x}{:02x}".format(*cmap[i][:3])
        for i, name in enumerate(classes)
        if i in cmap
    }
    return classes, colors


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@contextlib.contextmanager
def _raster(path: str) -> Iterator[Any]:
    """The GDAL dataset of ``path`` (read-only), or None when it is not a raster GDAL reads."""
    gdal = osgeo()[0]
    with gdal_errors(f"reading {Path(path).name}", raise_on_failure=False):
        ds = gdal.OpenEx(str(path), gdal.OF_RASTER) if Path(path).is_file() else None
        try:
            yield ds
        finally:
            ds = None
