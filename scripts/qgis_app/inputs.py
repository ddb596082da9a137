"""Inputs of the real-QGIS check, cut from the shared real data with QGIS's own GDAL (osgeo).

A 512 x 512 px window (2.56 km, 8 x 8 tiles of the default model) of the NAIP scene of Stutsman
County, ND (R, G, B, NIR at 5 m, EPSG:26914): lakes, bare fields and grassland. The vector
layers are placed in that window by pixel: the bare fields and the lakes were picked by eye on
the 2020-08-31 image, each polygon at least one tile (320 m) wide and high, so each holds at
least one tile centre.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal, ogr, osr

SCENE = "naip_north_dakota/m_4709963_se_14_1_20200831.tif"
WINDOW = (420, 200, 512, 512)  # x offset, y offset, width, height in scene pixels
PHOTOS = "street_photos/lund"
N_PHOTOS = 3
# window pixel boxes (x0, y0, x1, y1)
BARE = ((390, 290, 510, 420), (200, 250, 350, 320))
WATER = ((235, 10, 370, 170), (0, 195, 120, 310))
REGION = (385, 295, 505, 415)  # a bare field: "similar to region"
AVOID = WATER[0]  # a lake: NEGATIVE_POLYGON
AREA = (100, 100, 400, 400)  # "Area = polygon layer" of the dock
POINT = (450, 350)  # QUERY_POINT, inside a bare field
EXTRA = ((460, 340), (270, 280))  # EXTRA_POINTS, bare fields (written in EPSG:4326)
NEGATIVE = ((300, 90),)  # NEGATIVE_POINTS, a lake
TEXTS = ("a lake with reeds", "bare soil field", None, "prairie pothole wetland")


@dataclass
class Inputs:
    """Paths and geometry of the inputs; ``map_xy`` turns window pixels into map metres."""

    raster: Path
    vectors: Path
    photos: Path
    photo: Path
    srs_wkt: str
    transform: tuple[float, ...]  # GDAL geotransform of the window

    def map_xy(self, px: float, py: float) -> tuple[float, float]:
        t = self.transform
        return t[0] + px * t[1], t[3] + py * t[5]

    def extent(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax of the window."""
        x0, y1 = self.map_xy(0, 0)
        x1, y0 = self.map_xy(WINDOW[2], WINDOW[3])
        return x0, y0, x1, y1

    def layer(self, name: str) -> str:
        """The OGR/QGIS source of a layer of the inputs GeoPackage."""
        return f"{self.vectors}|layername={name}"


def build(data: Path, out: Path) -> Inputs:
    """Write the window raster, the vector layers and the photo folder into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    raster = out / "naip_window.tif"
    if not raster.is_file():
        src = data / SCENE
        opts = gdal.TranslateOptions(srcWin=list(WINDOW), creationOptions=["TILED=YES"])
        if gdal.Translate(str(raster), str(src), options=opts) is None:
            raise RuntimeError(f"cannot cut {WINDOW} out of {src}: {gdal.GetLastErrorMsg()}")
    ds = gdal.Open(str(raster))
    inputs = Inputs(raster, out / "vectors.gpkg", out / "photos", Path(), "", ds.GetGeoTransform())
    inputs.srs_wkt = ds.GetProjection()
    ds = None
    photos = sorted((data / PHOTOS).glob("*.jpg"))[:N_PHOTOS]
    inputs.photos.mkdir(exist_ok=True)
    for p in photos:
        shutil.copy2(p, inputs.photos / p.name)
    inputs.photo = inputs.photos / photos[0].name
    if not inputs.vectors.is_file():
        write_vectors(inputs)
    return inputs


def _srs(wkt_or_epsg: str | int) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    if isinstance(wkt_or_epsg, int):
        srs.ImportFromEPSG(wkt_or_epsg)
    else:
        srs.ImportFromWkt(wkt_or_epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # x = lon, y = lat
    return srs


def box_wkt(inputs: Inputs, box: tuple[int, int, int, int]) -> str:
    """A window pixel box as a polygon WKT in map coordinates."""
    (x0, y0), (x1, y1) = inputs.map_xy(box[0], box[1]), inputs.map_xy(box[2], box[3])
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def lonlat(inputs: Inputs, px: float, py: float) -> tuple[float, float]:
    """Window pixel -> (lon, lat) in WGS84."""
    tr = osr.CoordinateTransformation(_srs(inputs.srs_wkt), _srs(4326))
    lon, lat, _ = tr.TransformPoint(*inputs.map_xy(px, py))
    return lon, lat


def write_vectors(inputs: Inputs) -> None:
    """region, avoid, area (polygons), labels (polygons + class), extra, negative, texts."""
    drv = ogr.GetDriverByName("GPKG")
    ds = drv.CreateDataSource(str(inputs.vectors))
    utm = _srs(inputs.srs_wkt)
    for name, boxes in (("region", [REGION]), ("avoid", [AVOID]), ("area", [AREA])):
        _layer(ds, name, utm, ogr.wkbPolygon, [(box_wkt(inputs, b), {}) for b in boxes])
    labelled = [(box_wkt(inputs, b), {"class": "bare"}) for b in BARE]
    labelled += [(box_wkt(inputs, b), {"class": "water"}) for b in WATER]
    _layer(ds, "labels", utm, ogr.wkbPolygon, labelled, fields=("class",))
    extra = [(f"POINT({lon} {lat})", {}) for lon, lat in (lonlat(inputs, *p) for p in EXTRA)]
    _layer(ds, "extra", _srs(4326), ogr.wkbPoint, extra)
    neg = [("POINT({} {})".format(*inputs.map_xy(*p)), {}) for p in NEGATIVE]
    _layer(ds, "negative", utm, ogr.wkbPoint, neg)
    texts = [(None, {"description": t}) for t in TEXTS]
    _layer(ds, "texts", None, ogr.wkbNone, texts, fields=("description",))
    ds = None


def _layer(ds, name, srs, gtype, rows, fields=()) -> None:
    lyr = ds.CreateLayer(name, srs, gtype)
    for f in fields:
        lyr.CreateField(ogr.FieldDefn(f, ogr.OFTString))
    for wkt, attrs in rows:
        feat = ogr.Feature(lyr.GetLayerDefn())
        if wkt is not None:
            feat.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        for k, v in attrs.items():
            if v is None:
                feat.SetFieldNull(k)
            else:
                feat.SetField(k, v)
        lyr.CreateFeature(feat)
