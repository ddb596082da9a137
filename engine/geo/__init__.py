"""Geodata through GDAL's own bindings: CRSs, geometry, GeoTIFF and vector writing, rendering.

Everything goes through ``osgeo`` (:mod:`.gdal_errors` imports it once and turns its errors
into the engine's), so inside QGIS the engine uses the very GDAL, PROJ and GEOS the application
loaded; no wheel that bundles its own copies is imported (docs/QGIS_LIBRARIES.md).
"""
