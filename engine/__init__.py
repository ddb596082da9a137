"""UniGeo engine: runs the five ONNX encoders, tiles rasters, stores embeddings, answers queries.

It depends on numpy, onnxruntime, tokenizers and GDAL's own Python bindings (``osgeo``, the ones
QGIS ships) for everything geographic; never on torch or qgis (a test enforces this). Imports
inside the package are relative, so the same code works as the top-level ``engine`` package and
as ``<plugin>.engine`` inside QGIS.

Front ends (the plugin's GUI and Processing, ``python -m engine``) call :mod:`.pipeline`, one
function per use case; the packages below it hold one concept each: ``raster`` (reading),
``geo`` (GDAL/OGR/OSR), ``store``, ``embed`` (and ``scale`` on Dask), ``search``, ``classify``,
``library`` (the model manager), ``cli`` and ``model`` (the contract, bundles, preprocessing,
sessions and ``UniGeoModel``).
"""

from __future__ import annotations

__version__ = "0.1.0"
