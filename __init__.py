"""QGIS entry point of the UniGeo plugin: only ``classFactory``, importing lazily."""


def classFactory(iface):  # noqa: N802 (name required by QGIS)
    """Create the plugin instance; QGIS calls this once when the plugin is loaded."""
    from .plugin.unigeo_plugin import UniGeoPlugin

    return UniGeoPlugin(iface)
