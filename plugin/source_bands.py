"""Which bands of a source raster layer feed the model: read from the layer, chosen, remembered.

The band descriptions and colour interpretations come from the layer's data provider and go to
:func:`engine.raster.band_choice.choose_bands`. A choice the user makes in the dock is remembered per
layer source twice: as a custom property of the layer (saved in the project, so it travels
with it) and in QgsSettings under ``unigeo/bands/`` keyed by the source (so the same file
added to another project gets it too). A remembered choice that no longer fits the raster or
the model is ignored.

The pixel scaling (automatic, or a sensor's training rule for raw products) is remembered the
same way, under ``unigeo/scaling``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsRasterLayer, QgsSettings

from ..engine.errors import RasterInputError
from ..engine.raster import (
    SENSOR_PREFIX,
    BandChoice,
    choose_bands,
    optional_bands,
    sensor_names,
    user_choice,
)
from .qgis_reader import AUTO_SCALE

LAYER_PROPERTY = "unigeo/bands"
SETTINGS_PREFIX = "unigeo/bands/"
SCALING_PROPERTY = "unigeo/scaling"
SCALING_PREFIX = "unigeo/scaling/"
# QGIS names bands "Band 3" or, with a GDAL description, "Band 3: B3" ("Band" is translated)
_BAND_NAME = re.compile(r"^\S+ \d+\s*:\s*(.*)$")
_ARGB = (Qgis.ARGB32, Qgis.ARGB32_Premultiplied)


def provider_bands(layer: QgsRasterLayer) -> tuple[int, list[str], list[str]]:
    """(band count, descriptions, colour interpretation names) from the layer's data provider.

    A web layer (XYZ, WMS) delivers colour as ARGB, read as red, green, blue and alpha.
    """
    prov = layer.dataProvider()
    if prov.dataType(1) in _ARGB:
        return 4, ["", "", "", ""], ["Red", "Green", "Blue", "Alpha"]
    count = prov.bandCount()
    names, interps = [], []
    for b in range(1, count + 1):
        m = _BAND_NAME.match(prov.generateBandName(b) or "")
        names.append(m.group(1).strip() if m else "")
        interps.append(prov.colorInterpretationName(b) or "")
    return count, names, interps


def hints(layer: QgsRasterLayer) -> tuple[str, ...]:
    """Texts that may name the sensor: the file name and the layer name (``LC08_…``)."""
    path = layer.source().split("|")[0]
    return (Path(path).name, layer.name())


def wanted_bands(model: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The model's aerial band names and those it can do without (masked when absent).

    An aerial tower with a ``band_mask`` input (contract version 2) masks every band but red,
    green and blue when a raster lacks it; older ones need every band.
    """
    from ..engine.model import Modality

    spec = model.spec(Modality.AERIAL)
    bands = tuple(spec.preprocess.bands)
    return bands, optional_bands(spec.inputs, bands)


def auto_choice(
    layer: QgsRasterLayer, wanted: Sequence[str], optional: Sequence[str] = ()
) -> BandChoice:
    """UniGeo's own choice for ``layer`` (names, colour interpretation, sensor layouts)."""
    count, names, interps = provider_bands(layer)
    return choose_bands(count, names, interps, wanted, optional, hints(layer))


def _key(layer: QgsRasterLayer) -> str:
    return SETTINGS_PREFIX + hashlib.sha1(layer.source().encode()).hexdigest()[:16]  # noqa: S324


def remembered(
    layer: QgsRasterLayer, wanted: Sequence[str], optional: Sequence[str] = ()
) -> BandChoice | None:
    """The user's remembered choice for ``layer`` if it still fits the raster and the model."""
    text = layer.customProperty(LAYER_PROPERTY, "") or QgsSettings().value(_key(layer), "")
    if not text:
        return None
    try:
        mapping = [int(x) for x in str(text).split(",")]
        return user_choice(layer.bandCount(), wanted, mapping, optional)
    except (ValueError, RasterInputError):
        return None  # made for another model or an older version of the file


def remember(layer: QgsRasterLayer, choice: BandChoice) -> None:
    """Keep the user's ``choice`` for ``layer`` (in the project and in the settings)."""
    layer.setCustomProperty(LAYER_PROPERTY, choice.text())
    QgsSettings().setValue(_key(layer), choice.text())


def forget(layer: QgsRasterLayer) -> None:
    """Drop the remembered choice: UniGeo chooses again."""
    layer.removeCustomProperty(LAYER_PROPERTY)
    QgsSettings().remove(_key(layer))


def current_choice(
    layer: QgsRasterLayer, wanted: Sequence[str], optional: Sequence[str] = ()
) -> BandChoice:
    """The remembered choice, else UniGeo's own."""
    return remembered(layer, wanted, optional) or auto_choice(layer, wanted, optional)


# -- pixel scaling ------------------------------------------------------------------------------
def _scaling_key(layer: QgsRasterLayer) -> str:
    return SCALING_PREFIX + hashlib.sha1(layer.source().encode()).hexdigest()[:16]  # noqa: S324


def scaling(layer: QgsRasterLayer) -> str:
    """The reader's ``scale`` for ``layer``: ``"dtype"``, or ``"sensor:<name>"`` when the user
    chose a sensor that the table still has."""
    text = str(
        layer.customProperty(SCALING_PROPERTY, "") or QgsSettings().value(_scaling_key(layer), "")
    )
    if text.startswith(SENSOR_PREFIX) and text[len(SENSOR_PREFIX) :] in sensor_names():
        return text
    return AUTO_SCALE


def remember_scaling(layer: QgsRasterLayer, scale: str) -> None:
    """Keep ``scale`` (``"dtype"`` or ``"sensor:<name>"``) for ``layer``; ``"dtype"`` forgets."""
    if scale == AUTO_SCALE:
        layer.removeCustomProperty(SCALING_PROPERTY)
        QgsSettings().remove(_scaling_key(layer))
        return
    name = scale[len(SENSOR_PREFIX) :] if scale.startswith(SENSOR_PREFIX) else ""
    if name not in sensor_names():
        raise RasterInputError(f"unknown pixel scaling {scale!r}; known sensors: "
                               f"{', '.join(sensor_names())}")  # fmt: skip
    layer.setCustomProperty(SCALING_PROPERTY, scale)
    QgsSettings().setValue(_scaling_key(layer), scale)
