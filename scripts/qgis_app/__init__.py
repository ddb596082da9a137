"""The real-QGIS check of UniGeo: code that runs inside ``qgis --code`` (scripts/qgis_app_check.py)."""
