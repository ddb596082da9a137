"""Raster input: the reader protocol, the GDAL reader, bands and band choice, tiling, mosaics.

A front end reads a raster through a :class:`RasterReader`: :class:`GdalReader` for a file, or
its own over its data (the plugin's QGIS-layer reader), naming bands as :func:`canonical_band`
does and resolving them with :func:`resolve_bands`; ``scale="sensor:<name>"`` of a reader
applies a sensor's training rule (:func:`sensor_names`). :func:`choose_bands` says which of a
raster's bands feed the model's bands, and why. These are the names front ends use; the modules
beside them (scaling, the warped and native read paths, batches, tiling) are the engine's own.
"""

from __future__ import annotations

from .band_choice import ABSENT, BandChoice, choose_bands, user_choice
from .bands import canonical_band, explicit_selection, present_bands, resolve_bands
from .gdal_reader import GdalReader, close_all_readers
from .layout import BandLayout, band_layout, optional_bands
from .reader import RasterReader
from .scaling import SENSOR_PREFIX, sensor_of
from .sensors import Sensor, get_sensor, sensor_names
from .source import is_virtual

__all__ = [
    "ABSENT",
    "SENSOR_PREFIX",
    "BandChoice",
    "BandLayout",
    "GdalReader",
    "RasterReader",
    "Sensor",
    "band_layout",
    "canonical_band",
    "choose_bands",
    "close_all_readers",
    "explicit_selection",
    "get_sensor",
    "is_virtual",
    "optional_bands",
    "present_bands",
    "resolve_bands",
    "sensor_names",
    "sensor_of",
    "user_choice",
]
