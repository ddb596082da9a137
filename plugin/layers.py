"""Turn engine outputs into styled QGIS layers, save them in a project and render them to PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsLayerMetadata,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsPointXY,
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
# What a UniGeo output layer is: set on every layer made here, saved with the project. Earlier
# results of the same kind in a group are hidden when a new one arrives, and outputs are never
# offered as source rasters.
KIND_PROPERTY = "unigeo/kind"
HEATMAP, CLASSES, CONFIDENCE, HITS = "heatmap", "classes", "confidence", "hits"
_TAGGED: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime) -> has UNIGEO_* tags


class LayerError(RuntimeError):
    """A file could not be opened as a QGIS layer."""


def _check(layer: QgsMapLayer, path: str | Path) -> QgsMapLayer:
    if not layer.isValid():
        raise LayerError(f"QGIS cannot open {path} as a layer")
    return layer


def mark_output(layer: QgsMapLayer, kind: str) -> QgsMapLayer:
    """Record that ``layer`` is a UniGeo output of ``kind`` (a custom layer property)."""
    layer.setCustomProperty(KIND_PROPERTY, kind)
    return layer


def output_kind(layer: QgsMapLayer | None) -> str | None:
    """The kind :func:`mark_output` recorded, or None for any other layer."""
    kind = layer.customProperty(KIND_PROPERTY, "") if layer is not None else ""
    return str(kind) or None


def is_unigeo_output(layer: QgsMapLayer) -> bool:
    """True for UniGeo's own heatmaps, class and confidence maps: marked, or with UNIGEO_* tags.

    The tags catch outputs opened by hand or by Processing, which carry no layer property.
    """
    if output_kind(layer):
        return True
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return False
    path = Path(layer.source().split("|")[0])
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _TAGGED:
        _TAGGED[key] = _has_unigeo_tags(path)
    return _TAGGED[key]


def _has_unigeo_tags(path: Path) -> bool:
    from ..engine.pipeline import read_output

    return read_output(path).tagged


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
    return mark_output(layer, HEATMAP)


def style_heatmap(layer: QgsRasterLayer, band: int = 2, opacity: float = 0.75) -> None:
    """Style a heatmap layer in place: the viridis-like ramp over the percentile (band 2).

    The percentile ramp is fixed, 0 to 100, so every heatmap reads the same. The raw cosine
    (band 1, or a one-band heatmap) is stretched over its own minimum and maximum instead: its
    scale depends on the model and the query, so no fixed range fits.
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


def confidence_layer(path: str | Path, name: str) -> QgsRasterLayer:
    """A classification confidence map on the fixed 0–1 ramp."""
    layer = _check(QgsRasterLayer(str(path), name), path)
    style_confidence(layer)
    return mark_output(layer, CONFIDENCE)


def class_layer(
    path: str | Path, name: str, classes: list[str], colors: dict[str, str]
) -> QgsRasterLayer:
    """A paletted land-use map: pixel value i is ``classes[i]``."""
    layer = _check(QgsRasterLayer(str(path), name), path)
    style_classes(layer, classes, colors)
    return mark_output(layer, CLASSES)


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
    return mark_output(layer, HITS)


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
    """Put ``layers`` (top first) at the top of the group named after their source layer.

    The new layers and the group (with every group above it) are made visible, so a result is
    seen even in a group the user had hidden. Earlier layers of the group with the same output
    kind as a new one are hidden (unchecked), never removed.
    """
    root = project.layerTreeRoot()
    group = root.findGroup(group_name) or root.insertGroup(0, group_name)
    kinds = {output_kind(layer) for layer in layers} - {None}
    for node in group.findLayers():
        if output_kind(node.layer()) in kinds:
            node.setItemVisibilityChecked(False)
            node.setExpanded(False)  # its legend no longer describes the map
    for i, layer in enumerate(layers):
        project.addMapLayer(layer, False)
        node = group.insertLayer(i, layer)
        node.setItemVisibilityChecked(True)
        _expand(node)
    group.setItemVisibilityCheckedParentRecursive(True)
    _expand(group)
    return group


def _expand(node) -> None:
    """Expand ``node`` in the layer tree view too (the view follows changes, not the state)."""
    node.setExpanded(False)
    node.setExpanded(True)


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


def mark_location(canvas: Any, lat: float, lon: float, name: str) -> QgsVectorLayer:
    """Add a point layer at ``(lat, lon)`` (a photo's EXIF position); centre ``canvas`` on it."""
    layer = QgsVectorLayer(
        "Point?crs=EPSG:4326&field=name:string(120)", f"photo location: {name}", "memory"
    )
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(lon, lat)))
    feature["name"] = name
    layer.dataProvider().addFeatures([feature])
    layer.updateExtents()
    QgsProject.instance().addMapLayer(layer)
    dest = canvas.mapSettings().destinationCrs()
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    tr = QgsCoordinateTransform(wgs84, dest, QgsProject.instance())
    canvas.setCenter(tr.transform(QgsPointXY(lon, lat)))
    canvas.refresh()
    return layer
