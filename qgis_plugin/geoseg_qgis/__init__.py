"""geoseg for QGIS: segment raster layers with geoseg model bundles (geoseg runs as a subprocess)."""


def classFactory(iface):
    from .plugin import GeoSegPlugin

    return GeoSegPlugin(iface)
