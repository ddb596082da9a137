"""Turn engine outputs into styled QGIS layers, save them in a project and render them to PNG."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsCoordinateReferenceSystem,
    QgsLayerMetadata,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRasterShader,
    QgsRectangle,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

# A perceptual ramp (viridis-like), low -> high similarity.
HEAT_RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")


class LayerError(RuntimeError):
    """A file could not be opened as a QGIS layer."""


def _check(layer: QgsMapLayer, path: str | Path) -> QgsMapLayer:
    if not layer.isValid():
        raise LayerError(f"QGIS cannot open {path} as a layer")
    return layer


def set_provenance(layer: QgsMapLayer, provenance: dict) -> None:
    """Write model, query and parameters into the layer metadata (Properties > Metadata)."""
    md = QgsLayerMetadata(layer.metadata())
    md.setTitle(layer.name())
    md.setAbstract("\n".join(f"{k}: {v}" for k, v in provenance.items()))
    md.setKeywords({"UniGeo": [f"{k}={v}" for k, v in provenance.items()]})
    layer.setMetadata(md)


def rgb_layer(
    path: str | Path, name: str, bands: tuple[int, int, int] = (1, 2, 3)
) -> QgsRasterLayer:
    """The source raster as an RGB composite with a min/max stretch."""
    layer = _check(QgsRasterLayer(str(path), name), path)
    r = QgsMultiBandColorRenderer(layer.dataProvider(), *bands)
    layer.setRenderer(r)
    layer.setContrastEnhancement(
        QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut
    )
    return layer


def heatmap_layer(
    path: str | Path, name: str, band: int = 2, opacity: float = 0.75
) -> QgsRasterLayer:
    """A similarity heatmap: band 2 (percentile 0–100) by default, band 1 is the raw cosine."""
    layer = _check(QgsRasterLayer(str(path), name), path)
    style_heatmap(layer, band, opacity)
    return layer


def style_heatmap(layer: QgsRasterLayer, band: int = 2, opacity: float = 0.75) -> None:
    """Style a heatmap layer in place: the viridis-like ramp over the percentile (band 2).

    A one-band heatmap (no percentile band) is styled over its cosine range instead.
    """
    band = min(band, layer.bandCount())
    stats = layer.dataProvider().bandStatistics(band)
    lo, hi = (0.0, 100.0) if band == 2 else (stats.minimumValue, stats.maximumValue)
    label = "percentile of similarity within the area" if band == 2 else "cosine similarity"
    ramp = QgsColorRampShader(lo, hi)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    n = len(HEAT_RAMP) - 1
    items = []
    for i, c in enumerate(HEAT_RAMP):
        v = lo + (hi - lo) * i / n
        text = f"{v:.0f} ({label})" if i in (0, n) else f"{v:.0f}"
        items.append(QgsColorRampShader.ColorRampItem(v, QColor(c), text))
    ramp.setColorRampItemList(items)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(lo)
    renderer.setClassificationMax(hi)
    layer.setRenderer(renderer)
    layer.setOpacity(opacity)


def style_confidence(layer: QgsRasterLayer) -> None:
    """Style a classification confidence layer in place: grey ramp over the fixed range 0–1.

    A fixed range keeps layers comparable (a min/max stretch would make 0.3 look certain).
    """
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(
        [
            QgsColorRampShader.ColorRampItem(0.0, QColor("#000000"), "0 (uncertain)"),
            QgsColorRampShader.ColorRampItem(1.0, QColor("#ffffff"), "1 (confident)"),
        ]
    )
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)


def class_layer(
    path: str | Path, name: str, classes: list[str], colors: dict[str, str]
) -> QgsRasterLayer:
    """A paletted land-use map: pixel value i is ``classes[i]``."""
    layer = _check(QgsRasterLayer(str(path), name), path)
    style_classes(layer, classes, colors)
    return layer


def style_classes(layer: QgsRasterLayer, classes: list[str], colors: dict[str, str]) -> None:
    """Style a land-use layer in place: a palette with one named entry per class."""
    default = (
        "#1f77b4",
        "#2ca02c",
        "#d62728",
        "#ff7f0e",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
    )
    entries = [
        QgsPalettedRasterRenderer.Class(i, QColor(colors.get(c, default[i % len(default)])), c)
        for i, c in enumerate(classes)
    ]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))


def hits_layer(path: str | Path, name: str) -> QgsVectorLayer:
    """Ranked hits with their rank as label."""
    layer = _check(QgsVectorLayer(str(path), name, "ogr"), path)
    style_hits(layer)
    return layer


def style_hits(layer: QgsVectorLayer) -> None:
    """Style a hits layer in place: red points (or translucent tiles) labelled by rank."""
    from qgis.core import QgsPalLayerSettings, QgsTextFormat, QgsVectorLayerSimpleLabeling

    sym = layer.renderer().symbol()
    sym.setColor(QColor("#ff2d55"))
    if layer.geometryType() == 0:  # points
        sym.setSize(3.0)
    else:
        sym.setOpacity(0.6)
    pal = QgsPalLayerSettings()
    pal.fieldName = "rank"
    fmt = QgsTextFormat()
    fmt.setColor(QColor("white"))
    fmt.setSize(8)
    pal.setFormat(fmt)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(pal))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def add_group(project: QgsProject, group_name: str, layers: list[QgsMapLayer]) -> QgsLayerTreeGroup:
    """Add ``layers`` (top first) under a group named after their source layer."""
    root = project.layerTreeRoot()
    group = root.findGroup(group_name) or root.insertGroup(0, group_name)
    for layer in layers:
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    return group


def render_png(
    layers: list[QgsMapLayer],
    path: str | Path,
    extent: QgsRectangle | None = None,
    crs: QgsCoordinateReferenceSystem | None = None,
    width: int = 900,
) -> Path:
    """Render ``layers`` (top first) with the QGIS map renderer into a PNG file."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    crs = crs or layers[-1].crs()
    settings.setDestinationCrs(crs)
    ext = extent or layers[-1].extent()
    aspect = ext.height() / max(ext.width(), 1e-12)
    settings.setOutputSize(QSize(width, max(1, int(width * aspect))))
    settings.setExtent(ext)
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not job.renderedImage().save(str(path), "PNG"):
        raise LayerError(f"could not write {path}")
    return path
