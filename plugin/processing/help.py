"""Display names, groups and help texts of every UniGeo algorithm, in one place."""

from __future__ import annotations

GROUPS = {
    "embeddings": "Embeddings",
    "search": "Search",
    "classification": "Classification",
    "models": "Models",
}

_QUERY_HELP = (
    "<p><b>Query</b> (give at least one example; they are combined): a text (QUERY_TEXT), a "
    "map point in any CRS (QUERY_POINT: the tile under it), more example places as a point "
    "layer in any CRS (EXTRA_POINTS: one example per point, multipoints included), a polygon "
    "layer (QUERY_POLYGON: mean of the tiles inside), a street-level photo (QUERY_PHOTO), "
    "coordinates 'lat,lon' in WGS84 (QUERY_GPS). GPS_WEIGHT (0-1) mixes the GPS embedding of "
    "each example point into its point query.</p>"
    "<p><b>Negatives</b> move the result away from what you do not want, like Ctrl+click in "
    "the UniGeo panel: a description (NEGATIVE_TEXT), places to avoid as a point layer "
    "(NEGATIVE_POINTS: the tile under each point) and a region to avoid (NEGATIVE_POLYGON: "
    "mean of the tiles inside). The query vector is the normalised sum of every example minus "
    "every negative, each weighted 1, as in the panel and the CLI. Refine iteratively: add the "
    "wrong hits of one run to NEGATIVE_POINTS and run again. Negatives alone are not a query. "
    "With a selection, only the selected features of a layer are used; an empty layer is "
    "ignored; a point outside the embedded area is an error that names its feature. Every "
    "term (positive or negative) is recorded in the output's metadata "
    "(UNIGEO_QUERY, UNIGEO_QUERY_TERMS).</p>"
)
_SENSOR_HELP = (
    "<p><b>SENSOR</b> says how raw pixel values become the model's: 'auto' (default) divides "
    "8-bit rasters by 255 and stretches other types between their 2nd and 98th percentiles; a "
    "sensor name (e.g. sentinel2_l1c, landsat8_c2_l2) applies that product's training rule "
    "(reflectance scale, offset and no-data value, engine/sensors.json) per model band, so "
    "brightness is absolute rather than relative to the scene. It needs a raster file. On the "
    "held-out Sentinel-2 scene the sensor rule gave better land-use zero-shot but worse "
    "open-water hits than the stretch (docs/MODEL_CARD.md): try both on your data.</p>"
)
_BANDS_HELP = (
    "<p><b>BANDS</b> lists the layer's bands in the model's order (the shipped model: red, "
    "green, blue, then NIR, SWIR1, SWIR2 where the raster has them); default: by band "
    "description or colour interpretation, else in file order. In a script, 0 marks a band "
    "the raster lacks: BANDS=[1, 2, 3, 0, 4] reads red, green, blue and SWIR1 from bands 1 to "
    "4 and masks NIR. The dialog's band picker cannot list 0: for such a raster use a script "
    "or the UniGeo panel's band choice, since a band listed in NIR's place is read as NIR.</p>"
)
_SOURCE_HELP = (
    "<p><b>Source</b>: an embedding store folder (STORE, from 'Embed raster'), or a raster "
    "layer (INPUT) that is embedded on demand into the UniGeo cache (embedded once, reused "
    "next time). EXTENT limits the area: with INPUT only that part is embedded; with STORE "
    "only the store's tiles within EXTENT are used (same tiles, same embeddings), so the "
    "output covers EXTENT alone and percentiles are ranks within it. An EXTENT outside the "
    "store is an error.</p>" + _BANDS_HELP + _SENSOR_HELP
)
_LOAD_HELP = (
    "<p>Outputs opened after the run are styled as in the UniGeo panel, with the model, query "
    "and parameters in the layer metadata (Properties &gt; Metadata).</p>"
)
_MODEL_HELP = (
    "<p>MODEL is a model bundle folder (default: the one in UniGeo settings, else the active "
    "model of the Model manager, else the model shipped in the plugin); PROVIDER picks "
    "the inference device (auto: TensorRT, CUDA, then CPU).</p>"
)

ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "embedraster": (
        "Embed raster",
        "embeddings",
        "<p>Cuts a raster into tiles at the model's ground sample distance and embeds every "
        "tile with the aerial encoder into an embedding store (embed once, query many times)."
        "</p><p>MODALITY picks the encoder: 'aerial' (default) for images, 'dsm' for a "
        "one-band surface model of heights in metres (read unscaled, averaged when "
        "resampled; a GDAL raster file).</p>"
        + _BANDS_HELP
        + "<p>STRIDE is the step between tiles in pixels (0 = "
        "the tile size). EXTENT limits the area. OUTPUT_STORE is the store folder (default: "
        "the UniGeo cache). OUTPUT_TIFF optionally writes the embeddings as a multi-band "
        "float32 GeoTIFF (one band per dimension, one pixel per tile).</p><p>The run is "
        "resumable: cancel it and run it again with the same parameters to continue.</p>"
        + _SENSOR_HELP
        + _MODEL_HELP,
    ),
    "heatmap": (
        "Similarity heatmap",
        "search",
        "<p>Scores every tile of an embedded raster against a query and writes a heatmap "
        "GeoTIFF: band 1 is the cosine similarity, band 2 its percentile within the area.</p>"
        + _SOURCE_HELP
        + _LOAD_HELP
        + _QUERY_HELP
        + _MODEL_HELP,
    ),
    "tophits": (
        "Top similar places",
        "search",
        "<p>The K tiles most similar to a query, as points (tile centres) or polygons (tile "
        "footprints) with rank, score and percentile. MIN_DISTANCE (in tiles) keeps hits "
        "apart. OUTPUT is a GeoPackage (.gpkg, the store's CRS, with provenance metadata), "
        "a GeoJSON file (.geojson, always WGS84 longitude/latitude as RFC 7946 requires) or a "
        "Shapefile (.shp, the store's CRS; field names cut to 10 characters).</p>"
        + _SOURCE_HELP
        + _LOAD_HELP
        + _QUERY_HELP
        + _MODEL_HELP,
    ),
    "classify": (
        "Classify land use",
        "classification",
        "<p>Classifies every tile. Zero-shot: CLASSES holds one class per line as "
        "'name: prompt; prompt' (empty = the model's own classes). Few-shot: EXAMPLES is a "
        "polygon layer whose CLASS_FIELD gives the label; METHOD is 'prototype' (nearest class "
        "mean) or 'logreg' (logistic regression). Writes a paletted class raster and a "
        "confidence raster (softmax probability of the chosen class). A bare class name gets "
        "the model's prompt templates; prompts you write are used as written. Zero-shot with a "
        "model whose measured zero-shot accuracy is low (the default model's) gives a warning."
        "</p><p>MIN_CONFIDENCE: tiles whose confidence is below it get the extra class "
        "'uncertain' (the last class, grey). REPORT (few-shot only): k-fold cross-validation "
        "grouped by polygon (a polygon's tiles are never split between training and test), "
        "written as .json, .html and .md: accuracy, per-class precision/recall/F1, confusion "
        "matrix and two baselines on the same folds. Give each class at least two polygons.</p>"
        + _SOURCE_HELP
        + _LOAD_HELP
        + _MODEL_HELP,
    ),
    "embedfeatures": (
        "Embed features",
        "embeddings",
        "<p>Adds an embedding to every point or polygon feature: the embedding of the tile "
        "under a point, or the mean of the tiles whose centre lies in a polygon. The raster "
        "(RASTER) is embedded on demand over the features' extent (or give a STORE).</p>"
        "<p>The output keeps the input attributes and adds <b>unigeo_n_tiles</b> (tiles used; "
        "0 = outside the raster or no data, embedding NULL) and <b>unigeo_embedding</b>: a "
        "JSON array of D floats (unit length), readable with json.loads.</p>" + _MODEL_HELP,
    ),
    "encodetable": (
        "Encode texts or photos",
        "embeddings",
        "<p>Embeds the texts of a table field (INPUT + FIELD), or the photos (.jpg, .jpeg, "
        ".png) of a folder (PHOTO_FOLDER). TEMPLATES averages texts over the model's prompt "
        "templates.</p><p>Texts: one row per input feature, in order, with the input's "
        "geometry and attributes plus <b>unigeo_fid</b> (the input feature id), "
        "<b>unigeo_status</b> ('ok', or why there is no embedding, e.g. an empty or NULL "
        "text) and <b>unigeo_embedding</b> (a JSON array of D floats; NULL unless the status "
        "is 'ok').</p><p>Photos: one row per photo with source (file name), latitude and "
        "longitude from EXIF GPS and a WGS84 point where known, unigeo_status and "
        "unigeo_embedding; an unreadable photo gets its reason, the others are embedded."
        "</p>" + _MODEL_HELP,
    ),
    "gpsfield": (
        "GPS embedding field",
        "embeddings",
        "<p>Embeds the coordinates of every cell of EXTENT at RESOLUTION with the GPS encoder "
        "alone, no imagery. RESOLUTION is in the units of the extent's CRS: degrees for "
        "EPSG:4326 (0.01 is about 1 km), metres for a projected CRS such as UTM. Without a query the output has "
        "one band per embedding dimension; with QUERY_TEXT and/or QUERY_GPS ('lat,lon') it is "
        "a similarity heatmap (band 1 cosine, band 2 percentile).</p>" + _MODEL_HELP,
    ),
    "installmodel": (
        "Install model bundle",
        "models",
        "<p>Installs a UniGeo model bundle into the models folder of this QGIS profile "
        "(&lt;profile&gt;/unigeo/models, kept when the plugin is updated). SOURCE is a bundle "
        ".zip file, an unpacked bundle folder or an https URL of a zip; leave it empty to "
        "download the default model. SHA256 is the zip's published checksum: required for a "
        "URL (the default model's is built in); for a local zip the .sha256 file beside it is "
        "used when present.</p><p>The checksum is verified before anything is unpacked, the "
        "zip is unpacked safely (no absolute paths, '..' or links; size limits), and every "
        "tower is loaded and run once by onnxruntime before the bundle appears in the models "
        "folder. A failed, truncated or cancelled install leaves nothing behind; a dropped "
        "download resumes where it stopped.</p><p>ACTIVATE makes it the model UniGeo uses "
        "(default: only when none is active yet). MODELS_FOLDER overrides the models folder."
        "</p>",
    ),
    "models": (
        "Installed models",
        "models",
        "<p>Lists the installed model bundles with their model card summary (modalities, "
        "training domain, declared accuracy, size, licence) in the log and as JSON (output "
        "MODELS). ACTION 'use' makes the bundle NAME the active model; 'remove' deletes it. "
        "NAME is the folder name shown in the list (or the bundle name when only one version "
        "is installed). Output ACTIVE is the active bundle's folder.</p>",
    ),
}


def title(name: str) -> str:
    """The display name of algorithm ``name``."""
    return ALGORITHMS[name][0]


def group_id(name: str) -> str:
    """The group id of algorithm ``name``."""
    return ALGORITHMS[name][1]


def group(name: str) -> str:
    """The group display name of algorithm ``name``."""
    return GROUPS[ALGORITHMS[name][1]]


def text(name: str) -> str:
    """The help text (HTML) of algorithm ``name``."""
    return ALGORITHMS[name][2]
